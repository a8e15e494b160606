// The control server's HTTP client: what the guest agent (standby, activation), the correspondent agent
// (watch) and the host plugin (sites, relays) use, over http:// or https:// (verified against a given CA, else
// the system's). Every call has a deadline; errors carry the server's reason and say which server and call
// failed. Each call is one HTTP/1.1 exchange on a connection of its own, over node:net or node:tls only: the
// DomU's agent runs the same code under Bun, where node:http would cost it 4-8 MB more (issue 11).

import { connect, isIP, type Socket } from "node:net";
import type { connect as connectTls } from "node:tls";
import type { SitesDocument } from "@xenroam/protocol";
import type { SignedBinding } from "./bindings.js";
import type { BindingRecord, Change, VmRecord } from "./store.js";

export class ControlClientError extends Error {
  override readonly name = "ControlClientError";
  constructor(
    message: string,
    /** The HTTP status, when the server answered. */
    readonly status?: number,
    /** The server's machine-readable reason, when it gave one ("already-active": a copy of the active binding). */
    readonly code?: string,
  ) {
    super(message);
  }
}

export interface ClientOptions {
  readonly token?: string;
  /** Per call, unless the call says otherwise. Default 5 s. */
  readonly timeoutMs?: number;
  /**
   * An https:// server's CA certificate(s), PEM text: the server's certificate must chain to it (instead of to
   * the system's CAs) and name the URL's host. An http:// URL with a CA is a mistake, refused.
   */
  readonly ca?: string;
}

/** Where a call goes: the URL's host (IPv6 literals without brackets) and port. */
interface Endpoint {
  readonly host: string;
  readonly port: number;
}

/** OpenSSL's codes for a certificate that does not verify (Node and Bun alike). */
const UNTRUSTED = new Set([
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "CERT_SIGNATURE_FAILURE",
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "CERT_UNTRUSTED",
  "CERT_REJECTED",
]);

/** Checks a control server URL: http(s), no path beyond "/", IPv6 literals in brackets. */
export function parseControlUrl(text: string): string {
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    throw new ControlClientError(`"${text}" is not a URL; expected e.g. https://[2001:db8:c::1]:7360`);
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") {
    throw new ControlClientError(`"${text}": the control server is reached over http:// or https://`);
  }
  if (u.pathname !== "/" || u.search || u.hash) {
    throw new ControlClientError(`"${text}": give only scheme, host and port (no path)`);
  }
  return u.origin;
}

export class ControlClient {
  readonly base: string;
  private readonly timeoutMs: number;
  private readonly endpoint: Endpoint;
  /** The Host header: the URL's host and port. */
  private readonly host: string;
  /** node:tls's connect, loaded for an https:// server only: an http:// client (a DomU agent) never pays for it. */
  private readonly tls: Promise<typeof connectTls> | undefined;

  constructor(
    url: string,
    private readonly options: ClientOptions = {},
  ) {
    this.base = parseControlUrl(url);
    this.timeoutMs = options.timeoutMs ?? 5000;
    const u = new URL(this.base);
    const tls = u.protocol === "https:";
    if (options.ca !== undefined && !tls) {
      throw new ControlClientError(
        `${this.base}: a CA certificate was given, but the server is reached over plain http://; use https://`,
      );
    }
    if (options.ca !== undefined && !options.ca.includes("-----BEGIN CERTIFICATE-----")) {
      throw new ControlClientError(
        `the CA for ${this.base} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`,
      );
    }
    this.endpoint = {
      host: u.hostname.replace(/^\[(.*)\]$/, "$1"),
      port: Number(u.port || (tls ? 443 : 80)),
    };
    this.host = u.host;
    this.tls = tls ? import("node:tls").then((m) => m.connect) : undefined;
  }

  async health(): Promise<{ ok: boolean; revision: number }> {
    return this.call("GET", "/v1/health");
  }

  async publicKey(): Promise<string> {
    return this.call<string>("GET", "/v1/public-key", undefined, { text: true });
  }

  async sites(): Promise<SitesDocument> {
    return this.call("GET", "/v1/sites");
  }

  async putSites(doc: unknown): Promise<SitesDocument> {
    return this.call("PUT", "/v1/sites", doc);
  }

  async registerVm(
    name: string,
    hoa: string,
    macs: readonly string[] = [],
  ): Promise<VmRecord & { token: string }> {
    return this.call("POST", "/v1/vms", { name, hoa, macs });
  }

  async vm(name: string): Promise<VmRecord> {
    return this.call("GET", `/v1/vms/${encodeURIComponent(name)}`);
  }

  async registerPeer(name: string): Promise<{ name: string; token: string }> {
    return this.call("POST", "/v1/peers", { name });
  }

  async registerStandby(vm: string, locator: string): Promise<SignedBinding> {
    return this.call("POST", `/v1/vms/${encodeURIComponent(vm)}/standby`, { locator });
  }

  /**
   * A host (or an admin) vouches for a VM's standby that its MAC does not prove: the source Dom0 saw the
   * guest answer with it. Idempotent.
   */
  async attest(
    vm: string,
    locator: string,
  ): Promise<{ locator: string; seq: number; attested: boolean; activated: boolean; revision?: number }> {
    return this.call("POST", `/v1/vms/${encodeURIComponent(vm)}/attest`, { locator });
  }

  /** An admin's reset of a VM's binding: standbys gone, every earlier activation stale, bound to `to` if given. */
  async reset(vm: string, to?: string): Promise<{ binding: BindingRecord; activation?: SignedBinding }> {
    return this.call("POST", `/v1/vms/${encodeURIComponent(vm)}/reset`, to === undefined ? {} : { to });
  }

  /** An aborted prepare's standby locator leaves the binding (idempotent). */
  async withdrawStandby(vm: string, locator: string): Promise<{ withdrawn: boolean }> {
    return this.call("DELETE", `/v1/vms/${encodeURIComponent(vm)}/standby/${encodeURIComponent(locator)}`);
  }

  async activate(b: SignedBinding): Promise<{ revision: number }> {
    return this.call("POST", "/v1/bindings", b);
  }

  /**
   * `activate`, made ready ahead of the moment it must go: the relay at a guest's suspend, when the source
   * Dom0's CPU belongs to the last memory round. The whole HTTP/1.1 request is rendered now, and sending it
   * later is a connection (over TLS for https://) and one write.
   */
  prepareActivate(b: SignedBinding): () => Promise<{ revision: number }> {
    return this.prepared("POST", "/v1/bindings", b);
  }

  private prepared<T>(method: string, path: string, payload: unknown): () => Promise<T> {
    const request = this.render(method, path, payload);
    return async () => {
      const { status, text } = await this.exchange(request, method, path, this.timeoutMs);
      return this.answer<T>(status, text, method, path);
    };
  }

  /**
   * Undoes an activation a host relayed for a move that failed (a host sends the signed binding itself; an
   * admin may send its locator and seq): the server's binding of the previous locator comes back.
   */
  async rollback(vm: string, undo: SignedBinding | { locator: string; seq: number }): Promise<SignedBinding> {
    return this.call("POST", `/v1/vms/${encodeURIComponent(vm)}/rollback`, undo);
  }

  async binding(hoa: string): Promise<BindingRecord> {
    return this.call("GET", `/v1/bindings/${encodeURIComponent(hoa)}`);
  }

  /** One long poll of the watch stream: the changes after `since`, waiting up to `waitMs` for one. */
  async changes(
    since: number,
    waitMs: number,
    signal?: AbortSignal,
  ): Promise<{ revision: number; changes: Change[] }> {
    return this.call("GET", `/v1/bindings?since=${since}&wait=${waitMs}`, undefined, {
      timeoutMs: waitMs + this.timeoutMs,
      ...(signal ? { signal } : {}),
    });
  }

  private async call<T>(
    method: string,
    path: string,
    payload?: unknown,
    opts: { text?: boolean; timeoutMs?: number; signal?: AbortSignal } = {},
  ): Promise<T> {
    const request = this.render(method, path, payload);
    const timeoutMs = opts.timeoutMs ?? this.timeoutMs;
    const { status, text } = await this.exchange(request, method, path, timeoutMs, opts.signal);
    return this.answer<T>(status, text, method, path, opts.text);
  }

  /** A whole HTTP/1.1 request, to be written at once on a connection of its own. */
  private render(method: string, path: string, payload: unknown): Buffer {
    const body = payload === undefined ? undefined : Buffer.from(JSON.stringify(payload));
    const head = [
      `${method} ${path} HTTP/1.1`,
      `Host: ${this.host}`,
      ...(this.options.token ? [`Authorization: Bearer ${this.options.token}`] : []),
      ...(body ? ["Content-Type: application/json", `Content-Length: ${body.length}`] : []),
      "Connection: close",
      "",
      "",
    ].join("\r\n");
    return body ? Buffer.concat([Buffer.from(head), body]) : Buffer.from(head);
  }

  /**
   * Connects (over TLS for https://, the server's certificate verified before anything is sent), writes the
   * request whole and reads the answer. One deadline for the whole exchange, however the server trickles its
   * answer; `signal` cuts it short.
   */
  private async exchange(
    request: Buffer,
    method: string,
    path: string,
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<{ status: number; text: string }> {
    const { host, port } = this.endpoint;
    const { ca } = this.options;
    const what = `control server ${this.base}: ${method} ${path}`;
    const tls = await this.tls;
    return new Promise((resolve, reject) => {
      if (signal?.aborted) {
        reject(new ControlClientError(`${what}: aborted`));
        return;
      }
      let chunks = Buffer.alloc(0);
      let settled = false;
      const settle = (fn: () => void) => {
        if (settled) return;
        settled = true;
        clearTimeout(deadline);
        signal?.removeEventListener("abort", aborted);
        socket.destroy();
        fn();
      };
      const fail = (why: string) => settle(() => reject(new ControlClientError(`${what}: ${why}`)));
      const deadline = setTimeout(() => fail("no answer in time"), timeoutMs);
      const aborted = () => fail("aborted");
      signal?.addEventListener("abort", aborted, { once: true });
      // Not half-closed after the request: the server closes after its answer (Connection: close). SNI only
      // for a DNS name.
      const send = () => socket.write(request);
      const socket: Socket = tls
        ? tls({ host, port, ...(isIP(host) ? {} : { servername: host }), ...(ca ? { ca } : {}) }, send)
        : connect({ host, port }, send);
      const done = (final: boolean) => {
        let answer: { status: number; text: string };
        try {
          answer = parseHttpResponse(chunks, final);
        } catch (err) {
          // Not whole yet: wait for more, unless the connection is over.
          if (!final) return;
          // A TLS server drops a plain HTTP request without a word.
          const hint = !tls && chunks.length === 0 ? " (if it serves https://, use an https:// URL)" : "";
          fail(`${(err as Error).message}${hint}`);
          return;
        }
        settle(() => resolve(answer));
      };
      socket.on("data", (c: Buffer) => {
        chunks = Buffer.concat([chunks, c]);
        done(false);
      });
      socket.on("error", (err) => (chunks.length > 0 ? done(true) : fail(this.why(err))));
      socket.on("close", () => done(true));
    });
  }

  /** A connection or TLS failure, said so that it can be acted on. */
  private why(err: Error & { code?: string }): string {
    if (err.code === "ERR_TLS_CERT_ALTNAME_INVALID")
      return `its certificate is for another name: ${err.message}`;
    if (err.code === "ERR_SSL_WRONG_VERSION_NUMBER")
      return "it does not answer in TLS; if it serves plain HTTP, use an http:// URL";
    if (!err.code || !UNTRUSTED.has(err.code)) return err.message;
    const against = this.options.ca ? "the CA given" : "the system's CAs (give the server's CA)";
    return `its certificate is not trusted: ${err.message} (checked against ${against})`;
  }

  /** The server's answer: its JSON, or a ControlClientError with its status and reason. */
  private answer<T>(status: number, text: string, method: string, path: string, asText = false): T {
    if (status < 200 || status > 299) {
      let reason = text;
      let code: string | undefined;
      try {
        const e = JSON.parse(text) as { error?: unknown; code?: unknown };
        if (typeof e.error === "string") reason = e.error;
        if (typeof e.code === "string") code = e.code;
      } catch {
        /* not JSON: keep the text */
      }
      throw new ControlClientError(
        `control server ${this.base}: ${method} ${path}: ${status} ${reason}`,
        status,
        code,
      );
    }
    if (asText) return text as T;
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new ControlClientError(`control server ${this.base}: ${method} ${path}: answer is not JSON`);
    }
  }
}

/**
 * One HTTP/1.1 response, whole: status and body, with a chunked body decoded. Throws on anything that is
 * not one, or not one yet (`closed` false: the connection is still open, more may come).
 */
export function parseHttpResponse(raw: Buffer, closed = true): { status: number; text: string } {
  const end = raw.indexOf("\r\n\r\n");
  if (end < 0)
    throw new Error(
      raw.length === 0 ? "the server closed the connection without answering" : "no complete HTTP answer",
    );
  const lines = raw.subarray(0, end).toString("latin1").split("\r\n");
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? "");
  if (!m) throw new Error(`not an HTTP answer: ${JSON.stringify((lines[0] ?? "").slice(0, 40))}`);
  const headers = new Map(
    lines.slice(1).map((l) => {
      const i = l.indexOf(":");
      return [l.slice(0, i).trim().toLowerCase(), l.slice(i + 1).trim()] as const;
    }),
  );
  let body = raw.subarray(end + 4);
  if (/chunked/i.test(headers.get("transfer-encoding") ?? "")) {
    const parts: Buffer[] = [];
    for (let at = 0; ;) {
      const eol = body.indexOf("\r\n", at);
      if (eol < 0) throw new Error("a chunked answer cut short");
      const size = Number.parseInt(body.subarray(at, eol).toString("latin1"), 16);
      if (!Number.isFinite(size)) throw new Error("a bad chunk size");
      if (size === 0) break;
      if (eol + 2 + size + 2 > body.length) throw new Error("a chunked answer cut short");
      parts.push(body.subarray(eol + 2, eol + 2 + size));
      at = eol + 2 + size + 2;
    }
    body = Buffer.concat(parts);
  } else if (headers.has("content-length")) {
    const length = Number(headers.get("content-length"));
    if (body.length < length) throw new Error("an answer cut short");
    body = body.subarray(0, length);
  } else if (!closed) {
    throw new Error("an answer that ends with the connection, not ended yet");
  }
  return { status: Number(m[1]), text: body.toString("utf8") };
}

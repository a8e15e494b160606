// The control server's HTTP client: what the guest agent (standby, activation), the correspondent agent
// (public key, watch) and the host plugin (sites) use. Every call has a deadline; errors carry the server's
// reason and say which server and call failed.

import { connect } from "node:net";
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
}

/** Checks a control server URL: http(s), no path beyond "/", IPv6 literals in brackets. */
export function parseControlUrl(text: string): string {
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    throw new ControlClientError(`"${text}" is not a URL; expected e.g. http://[2001:db8:c::1]:7360`);
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

  constructor(
    url: string,
    private readonly options: ClientOptions = {},
  ) {
    this.base = parseControlUrl(url);
    this.timeoutMs = options.timeoutMs ?? 5000;
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

  /** An aborted prepare's standby locator leaves the binding (idempotent). */
  async withdrawStandby(vm: string, locator: string): Promise<{ withdrawn: boolean }> {
    return this.call("DELETE", `/v1/vms/${encodeURIComponent(vm)}/standby/${encodeURIComponent(locator)}`);
  }

  async activate(b: SignedBinding): Promise<{ revision: number }> {
    return this.call("POST", "/v1/bindings", b);
  }

  /**
   * `activate`, made ready ahead of the moment it must go: the relay at a guest's suspend, when the source
   * Dom0's CPU belongs to the last memory round. For an http:// server the whole HTTP/1.1 request is
   * rendered now, and sending it later is a connection and one write, with none of fetch's per-request work
   * (tens to hundreds of milliseconds on an emulated CPU); an https:// server gets an ordinary call.
   */
  prepareActivate(b: SignedBinding): () => Promise<{ revision: number }> {
    return this.prepared("POST", "/v1/bindings", b);
  }

  private prepared<T>(method: string, path: string, payload: unknown): () => Promise<T> {
    const url = new URL(`${this.base}${path}`);
    if (url.protocol !== "http:") return () => this.call<T>(method, path, payload);
    const body = Buffer.from(JSON.stringify(payload));
    const head = [
      `${method} ${url.pathname}${url.search} HTTP/1.1`,
      `Host: ${url.host}`,
      ...(this.options.token ? [`Authorization: Bearer ${this.options.token}`] : []),
      "Content-Type: application/json",
      `Content-Length: ${body.length}`,
      "Connection: close",
      "",
      "",
    ].join("\r\n");
    const bytes = Buffer.concat([Buffer.from(head), body]);
    const host = url.hostname.replace(/^\[(.*)\]$/, "$1");
    const port = Number(url.port || 80);
    const what = `control server ${this.base}: ${method} ${path}`;
    return () =>
      new Promise<T>((resolve, reject) => {
        let chunks = Buffer.alloc(0);
        let settled = false;
        const settle = (fn: () => void) => {
          if (settled) return;
          settled = true;
          clearTimeout(deadline);
          socket.destroy();
          fn();
        };
        const fail = (why: string) => settle(() => reject(new ControlClientError(`${what}: ${why}`)));
        // One deadline for the whole exchange, however the server trickles its answer.
        const deadline = setTimeout(() => fail("no answer in time"), this.timeoutMs);
        // Written whole, not half-closed: the server closes after its answer (Connection: close).
        const socket = connect({ host, port }, () => socket.write(bytes));
        const done = (final: boolean) => {
          let parsed: { status: number; text: string } | undefined;
          try {
            parsed = parseHttpResponse(chunks, final);
          } catch (err) {
            // Not whole yet: wait for more, unless the connection is over.
            if (final) fail((err as Error).message);
            return;
          }
          const { status, text } = parsed;
          settle(() => {
            try {
              resolve(this.answer<T>(status, text, method, path));
            } catch (err) {
              reject(err instanceof Error ? err : new Error(String(err)));
            }
          });
        };
        socket.on("data", (c: Buffer) => {
          chunks = Buffer.concat([chunks, c]);
          done(false);
        });
        socket.on("error", (err) => (chunks.length > 0 ? done(true) : fail(err.message)));
        socket.on("close", () => done(true));
      });
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
    const deadline = AbortSignal.timeout(opts.timeoutMs ?? this.timeoutMs);
    const signal = opts.signal ? AbortSignal.any([deadline, opts.signal]) : deadline;
    let res: Response;
    try {
      res = await fetch(`${this.base}${path}`, {
        method,
        signal,
        headers: {
          ...(this.options.token ? { authorization: `Bearer ${this.options.token}` } : {}),
          ...(payload === undefined ? {} : { "content-type": "application/json" }),
        },
        ...(payload === undefined ? {} : { body: JSON.stringify(payload) }),
      });
    } catch (err) {
      const e = err as Error & { cause?: { message?: string } };
      const why = deadline.aborted ? "no answer in time" : (e.cause?.message ?? e.message);
      throw new ControlClientError(`control server ${this.base}: ${method} ${path}: ${why}`);
    }
    return this.answer<T>(res.status, await res.text(), method, path, opts.text);
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

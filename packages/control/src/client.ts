// The control server's HTTP client: what the guest agent (standby, activation), the correspondent agent
// (watch) and the host plugin (sites, relays) use, over http:// or https:// (verified against a given CA, else
// the system's). Every call has a deadline; errors carry the server's reason and say which server and call
// failed. Given several servers (replicas on one etcd), a call the current one cannot answer goes to the next
// (failover). Each call is one HTTP/1.1 exchange on a connection of its own, but for the watch's long polls,
// which keep theirs from one poll to the next; over node:net or node:tls only: the DomU's agent runs the same
// code under Bun, where node:http would cost it 4-8 MB more (issue 11).

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
  /** Per call (per server tried), unless the call says otherwise. Default 5 s. */
  readonly timeoutMs?: number;
  /**
   * An https:// server's CA certificate(s), PEM text: the server's certificate must chain to it (instead of to
   * the system's CAs) and name the URL's host. An http:// URL with a CA is a mistake, refused.
   */
  readonly ca?: string;
  /** Where `control_failover` {from, to, error} is logged when a call moves on to the next server. */
  readonly log?: (event: string, fields: Record<string, unknown>) => void;
  /** With several servers: the pause before each server tried after the second in one call. Default 50 ms. */
  readonly failoverPauseMs?: number;
}

/** One control server of the several a client may be given: its URL, where a call goes, its Host header. */
interface Server {
  readonly base: string;
  /** The URL's host (IPv6 literals without brackets) and port. */
  readonly host: string;
  readonly port: number;
  /** The Host header: the URL's host and port. */
  readonly hostHeader: string;
  readonly tls: boolean;
}

/**
 * Whether a call may go to the next server when the outcome at one is unknown (the request was written, then
 * the connection broke, the answer did not come in time, or a 5xx came). "any": it is safe to send again
 * (a read; or a write the server takes twice to the same effect). "unsent": only when the request surely
 * reached no server (it could not connect, or the TLS handshake failed).
 */
type Resend = "any" | "unsent";

/**
 * Answers that say "this server cannot, another may": a replica that lost its store answers 500, a proxy
 * before a dead one 502-504. A 4xx is the same answer on every replica, and a 429 is this replica's limit.
 */
const FAILOVER_STATUS = new Set([500, 502, 503, 504]);

/** A failed exchange, and whether the request was written (the server may have acted on it). */
class ExchangeError extends ControlClientError {
  constructor(
    message: string,
    readonly sent: boolean,
    readonly aborted = false,
  ) {
    super(message);
  }
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

/**
 * Several control servers (replicas sharing one store), each checked: a list, or URLs separated by commas
 * ("https://[2001:db8:c::1]:7360,https://[2001:db8:c::2]:7360"). One given twice counts once.
 */
export function parseControlUrls(urls: string | readonly string[]): string[] {
  const texts = (typeof urls === "string" ? [urls] : urls).flatMap((u) => u.split(","));
  const parsed = [
    ...new Set(
      texts
        .map((u) => u.trim())
        .filter(Boolean)
        .map(parseControlUrl),
    ),
  ];
  if (parsed.length === 0) {
    throw new ControlClientError("no control server URL given; expected e.g. https://[2001:db8:c::1]:7360");
  }
  return parsed;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * How long the connection a long poll kept may wait for the next poll: less than the server's keep-alive
 * timeout (5 s, http.ts), so that a poll is seldom written just as the server closes it (when one is, the
 * poll goes again on a new connection).
 */
const KEEP_IDLE_MS = 4000;

/** A connection a long poll kept for the next one to its server, and what undoes its keeping. */
interface Kept {
  readonly socket: Socket;
  readonly since: number;
  readonly release: () => void;
}

export class ControlClient {
  /** Every server, in the order given. */
  readonly servers: readonly string[];
  private readonly timeoutMs: number;
  private readonly list: readonly Server[];
  /** Where calls go first: the server that answered last. */
  private current = 0;
  /** Servers that failed their last call (a failover away from one is logged once, not at every retry). */
  private readonly failing = new Set<number>();
  /** Servers that have answered in plain HTTP: one that closes without a word later has died, not TLS. */
  private readonly spoke = new Set<Server>();
  /** node:tls's connect, loaded for an https:// server only: an http:// client (a DomU agent) never pays for it. */
  private readonly tls: Promise<typeof connectTls> | undefined;
  /** Per server, the connection the last long poll left open, taken by the next. */
  private readonly kept = new Map<Server, Kept>();

  /**
   * `url`: one control server, or several (a list, or URLs separated by commas) that share one store. With
   * one, every call goes there and its failure is the call's. With several, calls go to the server that
   * answered last; on a failure that says nothing of the request (no connection, a TLS failure, no answer in
   * time, a 5xx) a call goes on to the next server, each tried once a call.
   */
  constructor(
    url: string | readonly string[],
    private readonly options: ClientOptions = {},
  ) {
    this.servers = parseControlUrls(url);
    this.timeoutMs = options.timeoutMs ?? 5000;
    this.list = this.servers.map((base) => {
      const u = new URL(base);
      const tls = u.protocol === "https:";
      if (options.ca !== undefined && !tls) {
        throw new ControlClientError(
          `${base}: a CA certificate was given, but the server is reached over plain http://; use https://`,
        );
      }
      return {
        base,
        host: u.hostname.replace(/^\[(.*)\]$/, "$1"),
        port: Number(u.port || (tls ? 443 : 80)),
        hostHeader: u.host,
        tls,
      };
    });
    if (options.ca !== undefined && !options.ca.includes("-----BEGIN CERTIFICATE-----")) {
      throw new ControlClientError(
        `the CA for ${this.servers.join(", ")} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`,
      );
    }
    this.tls = this.list.some((s) => s.tls) ? import("node:tls").then((m) => m.connect) : undefined;
  }

  /** The server calls go to now (the one that answered last). */
  get base(): string {
    return this.servers[this.current] as string;
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

  /** The same document again is the same state. */
  async putSites(doc: unknown): Promise<SitesDocument> {
    return this.call("PUT", "/v1/sites", doc);
  }

  /**
   * Not sent again once it may have reached a server: the VM's token would be issued twice, the first
   * revoked by the second unseen. An admin sees the error and runs it again.
   */
  async registerVm(
    name: string,
    hoa: string,
    macs: readonly string[] = [],
  ): Promise<VmRecord & { token: string }> {
    return this.call("POST", "/v1/vms", { name, hoa, macs }, { resend: "unsent" });
  }

  async vm(name: string): Promise<VmRecord> {
    return this.call("GET", `/v1/vms/${encodeURIComponent(name)}`);
  }

  /** As registerVm: not sent again once it may have reached a server. */
  async registerPeer(name: string): Promise<{ name: string; token: string }> {
    return this.call("POST", "/v1/peers", { name }, { resend: "unsent" });
  }

  /**
   * Sent again to the next server when the first may have taken it: a standby registered twice is listed
   * once, at the second registration's sequence number, and the activation the first issued (stale from then
   * on) never reached anyone. The mobile node retries it the same way.
   */
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

  /**
   * An admin's reset of a VM's binding: standbys gone, every earlier activation stale, bound to `to` if given.
   * Not sent again once it may have reached a server: a second reset would stale what was activated after
   * the first.
   */
  async reset(vm: string, to?: string): Promise<{ binding: BindingRecord; activation?: SignedBinding }> {
    return this.call("POST", `/v1/vms/${encodeURIComponent(vm)}/reset`, to === undefined ? {} : { to }, {
      resend: "unsent",
    });
  }

  /** An aborted prepare's standby locator leaves the binding (idempotent). */
  async withdrawStandby(vm: string, locator: string): Promise<{ withdrawn: boolean }> {
    return this.call("DELETE", `/v1/vms/${encodeURIComponent(vm)}/standby/${encodeURIComponent(locator)}`);
  }

  /**
   * Sent again to the next server when the first may have taken it: the binding's sequence number makes a
   * second copy harmless, answered 409 with the code "already-active" when the first took.
   */
  async activate(b: SignedBinding): Promise<{ revision: number }> {
    return this.call("POST", "/v1/bindings", b);
  }

  /**
   * `activate`, made ready ahead of the moment it must go: the relay at a guest's suspend, when the source
   * Dom0's CPU belongs to the last memory round. The whole HTTP/1.1 request is rendered now (for each server),
   * and sending it later is a connection (over TLS for https://) and one write.
   */
  prepareActivate(b: SignedBinding): () => Promise<{ revision: number }> {
    const body = JSON.stringify(b);
    const requests = this.list.map((s) => this.render(s, "POST", "/v1/bindings", body));
    return () =>
      this.failover("POST", "/v1/bindings", "any", undefined, (s, i) =>
        this.exchange(s, requests[i] as Buffer, "POST", "/v1/bindings", this.timeoutMs),
      );
  }

  /**
   * Undoes an activation a host relayed for a move that failed (a host sends the signed binding itself; an
   * admin may send its locator and seq): the server's binding of the previous locator comes back. Not sent
   * again once it may have reached a server: a second copy would be refused (409, nothing to roll back), and
   * read as "it was never relayed".
   */
  async rollback(vm: string, undo: SignedBinding | { locator: string; seq: number }): Promise<SignedBinding> {
    return this.call("POST", `/v1/vms/${encodeURIComponent(vm)}/rollback`, undo, { resend: "unsent" });
  }

  async binding(hoa: string): Promise<BindingRecord> {
    return this.call("GET", `/v1/bindings/${encodeURIComponent(hoa)}`);
  }

  /**
   * One long poll of the watch stream: the changes after `since`, waiting up to `waitMs` for one. With
   * several servers, a poll whose server dies goes on at the next one from the same `since`: revisions are
   * the shared store's, the same on every server. Polls to one server reuse one connection (keep-alive): at a
   * change, a thousand watchers would otherwise reconnect to it at once, a TLS handshake each.
   */
  async changes(
    since: number,
    waitMs: number,
    signal?: AbortSignal,
  ): Promise<{ revision: number; changes: Change[] }> {
    return this.call("GET", `/v1/bindings?since=${since}&wait=${waitMs}`, undefined, {
      timeoutMs: waitMs + this.timeoutMs,
      keep: true,
      ...(signal ? { signal } : {}),
    });
  }

  private async call<T>(
    method: string,
    path: string,
    payload?: unknown,
    opts: { text?: boolean; timeoutMs?: number; signal?: AbortSignal; resend?: Resend; keep?: boolean } = {},
  ): Promise<T> {
    const body = payload === undefined ? undefined : JSON.stringify(payload);
    const timeoutMs = opts.timeoutMs ?? this.timeoutMs;
    const keep = opts.keep ?? false;
    return this.failover(
      method,
      path,
      opts.resend ?? "any",
      opts.signal,
      (s) =>
        this.exchange(
          s,
          this.render(s, method, path, body, keep),
          method,
          path,
          timeoutMs,
          opts.signal,
          keep,
        ),
      opts.text,
    );
  }

  /**
   * One call: to the current server, then — with several, on a failure another server may not have — to the
   * next, each once, with a short pause after the second. Each move is logged as `control_failover`; the
   * server that answers becomes the current one. A call whose outcome is unknown goes on only when `resend`
   * says it may. When none answers, the error names each server's failure.
   */
  private async failover<T>(
    method: string,
    path: string,
    resend: Resend,
    signal: AbortSignal | undefined,
    exchange: (server: Server, index: number) => Promise<{ status: number; text: string }>,
    asText = false,
  ): Promise<T> {
    const n = this.list.length;
    const start = this.current;
    const failures: string[] = [];
    for (let k = 0; k < n; k++) {
      const i = (start + k) % n;
      const server = this.list[i] as Server;
      if (k >= 2) {
        await sleep(this.options.failoverPauseMs ?? 50);
        if (signal?.aborted)
          throw new ControlClientError(`control server ${server.base}: ${method} ${path}: aborted`);
      }
      let error: ExchangeError | ControlClientError;
      try {
        const { status, text } = await exchange(server, i);
        if (n === 1 || !FAILOVER_STATUS.has(status)) {
          this.answered(i);
          return this.answer<T>(server, status, text, method, path, asText);
        }
        error = this.refusal(server, status, text, method, path);
      } catch (err) {
        if (n === 1 || !(err instanceof ExchangeError) || err.aborted) throw err;
        error = err;
      }
      const sent = !(error instanceof ExchangeError) || error.sent;
      // Its outcome unknown (the server may have acted on it): only a call that is safe twice goes on.
      if (sent && resend === "unsent") throw error;
      failures.push(error.message);
      const next = (i + 1) % n;
      if (this.current === i) this.current = next;
      if (!this.failing.has(i)) {
        this.failing.add(i);
        if (k < n - 1) {
          this.options.log?.("control_failover", {
            from: server.base,
            to: this.servers[next],
            method,
            path: path.split("?")[0],
            error: error.message,
          });
        }
      }
    }
    throw new ControlClientError(
      `no control server answered ${method} ${path.split("?")[0]} (${failures.join("; ")})`,
    );
  }

  /** Server `i` answered: calls go there first from now on. */
  private answered(i: number): void {
    this.current = i;
    this.failing.delete(i);
  }

  /** A whole HTTP/1.1 request, to be written at once; its connection closed after the answer unless `keep`. */
  private render(
    server: Server,
    method: string,
    path: string,
    json: string | undefined,
    keep = false,
  ): Buffer {
    const body = json === undefined ? undefined : Buffer.from(json);
    const head = [
      `${method} ${path} HTTP/1.1`,
      `Host: ${server.hostHeader}`,
      ...(this.options.token ? [`Authorization: Bearer ${this.options.token}`] : []),
      ...(body ? ["Content-Type: application/json", `Content-Length: ${body.length}`] : []),
      `Connection: ${keep ? "keep-alive" : "close"}`,
      "",
      "",
    ].join("\r\n");
    return body ? Buffer.concat([Buffer.from(head), body]) : Buffer.from(head);
  }

  /**
   * Connects (over TLS for https://, the server's certificate verified before anything is sent), writes the
   * request whole and reads the answer. One deadline for the whole exchange, however the server trickles its
   * answer, and a call's for the connection when that is shorter (a long poll); `signal` cuts it short. A
   * failure says whether the request was written. With `keep` (the watch's GETs), the connection the last
   * poll to this server kept is used when there is one, and this one is kept when the server allows.
   */
  private async exchange(
    server: Server,
    request: Buffer,
    method: string,
    path: string,
    timeoutMs: number,
    signal?: AbortSignal,
    keep = false,
  ): Promise<{ status: number; text: string }> {
    const { host, port } = server;
    const { ca } = this.options;
    const what = `control server ${server.base}: ${method} ${path}`;
    const tls = server.tls ? await this.tls : undefined;
    return new Promise((resolve, reject) => {
      if (signal?.aborted) {
        reject(new ExchangeError(`${what}: aborted`, false, true));
        return;
      }
      let chunks = Buffer.alloc(0);
      let settled = false;
      let sent = false;
      let socket: Socket;
      let connecting: NodeJS.Timeout | undefined;
      let detach = () => {};
      const settle = (fn: () => void, keepSocket = false) => {
        if (settled) return;
        settled = true;
        clearTimeout(deadline);
        clearTimeout(connecting);
        signal?.removeEventListener("abort", aborted);
        if (keepSocket) {
          detach();
          this.park(server, socket);
        } else socket.destroy();
        fn();
      };
      const fail = (why: string, abort = false) =>
        settle(() => reject(new ExchangeError(`${what}: ${why}`, sent, abort)));
      const deadline = setTimeout(() => fail("no answer in time"), timeoutMs);
      const aborted = () => fail("aborted", true);
      signal?.addEventListener("abort", aborted, { once: true });
      const send = () => {
        clearTimeout(connecting);
        sent = true;
        socket.write(request);
      };
      const done = (final: boolean) => {
        let answer: ReturnType<typeof parseHttpResponse>;
        try {
          answer = parseHttpResponse(chunks, final);
        } catch (err) {
          // Not whole yet: wait for more, unless the connection is over.
          if (!final) return;
          // A TLS server drops a plain HTTP request without a word.
          const hint =
            !tls && chunks.length === 0 && !this.spoke.has(server)
              ? " (if it serves https://, use an https:// URL)"
              : "";
          fail(`${(err as Error).message}${hint}`);
          return;
        }
        if (!tls) this.spoke.add(server);
        settle(
          () => resolve({ status: answer.status, text: answer.text }),
          keep && answer.keepAlive && !final,
        );
      };
      const use = (s: Socket, kept: boolean) => {
        socket = s;
        const data = (c: Buffer) => {
          chunks = Buffer.concat([chunks, c]);
          done(false);
        };
        const ended = (err?: Error) => {
          // Settled (answered, timed out, aborted): the close that follows its destroy is no news.
          if (settled || s !== socket) return;
          // A kept connection the server closed as the poll went out (its keep-alive timeout, a restart):
          // nothing was answered, and a GET may go once more, on a new connection.
          if (kept && chunks.length === 0 && method === "GET") {
            s.destroy();
            open();
          } else if (err && chunks.length === 0) fail(this.why(err));
          else done(true);
        };
        const closed = () => ended();
        s.on("data", data);
        s.on("error", ended);
        s.on("close", closed);
        detach = () => {
          s.off("data", data);
          s.off("error", ended);
          s.off("close", closed);
        };
      };
      const open = () => {
        // A long poll's deadline is its wait and more; a server that does not even take the connection (its
        // host gone) is given a call's, so that a watch goes on at another replica within seconds.
        if (timeoutMs > this.timeoutMs)
          connecting = setTimeout(() => fail("no connection in time"), this.timeoutMs);
        // Not half-closed after the request: the server closes after its answer (Connection: close), or keeps
        // the connection for the next. SNI only for a DNS name.
        use(
          tls
            ? tls({ host, port, ...(isIP(host) ? {} : { servername: host }), ...(ca ? { ca } : {}) }, send)
            : connect({ host, port }, send),
          false,
        );
      };
      const kept = keep ? this.take(server) : undefined;
      if (kept) {
        use(kept, true);
        send();
      } else open();
    });
  }

  /** Keeps a long poll's connection for the next poll to `server` (one a server) until the server closes it. */
  private park(server: Server, socket: Socket): void {
    if (this.kept.has(server)) {
      socket.destroy();
      return;
    }
    const drop = () => {
      if (this.kept.get(server)?.socket === socket) this.kept.delete(server);
      socket.destroy();
    };
    // Anything the server sends unasked (its close, an error) ends it. It holds no process open.
    const events = ["data", "end", "error", "close"] as const;
    for (const e of events) socket.on(e, drop);
    socket.unref();
    const release = () => {
      for (const e of events) socket.off(e, drop);
      socket.ref();
    };
    this.kept.set(server, { socket, since: performance.now(), release });
  }

  /** The connection kept for `server`, unless it is gone or may be closing by now. */
  private take(server: Server): Socket | undefined {
    const kept = this.kept.get(server);
    if (!kept) return undefined;
    this.kept.delete(server);
    // Destroyed, it may still have an error to emit: `drop` stays on to take it.
    if (kept.socket.destroyed) return undefined;
    kept.release();
    if (performance.now() - kept.since < KEEP_IDLE_MS) return kept.socket;
    kept.socket.destroy();
    return undefined;
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

  /** A non-2xx answer as the error it is: the server's reason and code, when it gave them. */
  private refusal(server: Server, status: number, text: string, method: string, path: string) {
    let reason = text;
    let code: string | undefined;
    try {
      const e = JSON.parse(text) as { error?: unknown; code?: unknown };
      if (typeof e.error === "string") reason = e.error;
      if (typeof e.code === "string") code = e.code;
    } catch {
      /* not JSON: keep the text */
    }
    return new ControlClientError(
      `control server ${server.base}: ${method} ${path}: ${status} ${reason}`,
      status,
      code,
    );
  }

  /** The server's answer: its JSON, or a ControlClientError with its status and reason. */
  private answer<T>(
    server: Server,
    status: number,
    text: string,
    method: string,
    path: string,
    asText = false,
  ): T {
    if (status < 200 || status > 299) throw this.refusal(server, status, text, method, path);
    if (asText) return text as T;
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new ControlClientError(`control server ${server.base}: ${method} ${path}: answer is not JSON`);
    }
  }
}

/**
 * One HTTP/1.1 response, whole: status and body, with a chunked body decoded, and whether its connection may
 * carry the next request (`keepAlive`: HTTP/1.1, framed by its length or chunks, not "Connection: close", and
 * nothing after it). Throws on anything that is not one, or not one yet (`closed` false: the connection is
 * still open, more may come).
 */
export function parseHttpResponse(
  raw: Buffer,
  closed = true,
): { status: number; text: string; keepAlive: boolean } {
  const end = raw.indexOf("\r\n\r\n");
  if (end < 0)
    throw new Error(
      raw.length === 0 ? "the server closed the connection without answering" : "no complete HTTP answer",
    );
  const lines = raw.subarray(0, end).toString("latin1").split("\r\n");
  const m = /^HTTP\/1\.([01]) (\d{3})/.exec(lines[0] ?? "");
  if (!m) throw new Error(`not an HTTP answer: ${JSON.stringify((lines[0] ?? "").slice(0, 40))}`);
  const headers = new Map(
    lines.slice(1).map((l) => {
      const i = l.indexOf(":");
      return [l.slice(0, i).trim().toLowerCase(), l.slice(i + 1).trim()] as const;
    }),
  );
  let body = raw.subarray(end + 4);
  // Where the answer ends in `body`; undefined when the connection's end is its end.
  let size: number | undefined;
  if (/chunked/i.test(headers.get("transfer-encoding") ?? "")) {
    const parts: Buffer[] = [];
    for (let at = 0; ;) {
      const eol = body.indexOf("\r\n", at);
      if (eol < 0) throw new Error("a chunked answer cut short");
      const chunk = Number.parseInt(body.subarray(at, eol).toString("latin1"), 16);
      if (!Number.isFinite(chunk)) throw new Error("a bad chunk size");
      if (chunk === 0) {
        // The last chunk, then trailers (none here) and an empty line: the answer ends there.
        const last = body.indexOf("\r\n\r\n", eol);
        if (last < 0 && !closed) throw new Error("a chunked answer cut short");
        size = last < 0 ? undefined : last + 4;
        break;
      }
      if (eol + 2 + chunk + 2 > body.length) throw new Error("a chunked answer cut short");
      parts.push(body.subarray(eol + 2, eol + 2 + chunk));
      at = eol + 2 + chunk + 2;
    }
    body = Buffer.concat(parts);
  } else if (headers.has("content-length")) {
    size = Number(headers.get("content-length"));
    if (body.length < size) throw new Error("an answer cut short");
    body = body.subarray(0, size);
  } else if (!closed) {
    throw new Error("an answer that ends with the connection, not ended yet");
  }
  const keepAlive =
    m[1] === "1" &&
    size !== undefined &&
    end + 4 + size === raw.length &&
    !/\bclose\b/i.test(headers.get("connection") ?? "");
  return { status: Number(m[2]), text: body.toString("utf8"), keepAlive };
}

// The control server's HTTP client: what the guest agent (standby, activation), the correspondent agent
// (public key, watch) and the host plugin (sites) use. Every call has a deadline; errors carry the server's
// reason and say which server and call failed.

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
    const text = await res.text();
    if (!res.ok) {
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
        `control server ${this.base}: ${method} ${path}: ${res.status} ${reason}`,
        res.status,
        code,
      );
    }
    if (opts.text) return text as T;
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new ControlClientError(`control server ${this.base}: ${method} ${path}: answer is not JSON`);
    }
  }
}

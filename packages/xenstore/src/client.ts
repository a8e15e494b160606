// A xenstore client speaking the wire protocol over the xenstored unix socket (Dom0) or /dev/xen/xenbus
// (a guest): read, write, mkdir, rm, directory, permissions, watches as async iterators, transactions.

import { closeSync, createReadStream, write as fsWrite, openSync, statSync } from "node:fs";
import { connect } from "node:net";
import type { Duplex, Readable } from "node:stream";
import { formatPerms, type Perm, parsePerms } from "./store.js";
import {
  encodeFrame,
  type Frame,
  FrameDecoder,
  isXenstoreError,
  nulTerminated,
  splitNul,
  TYPE_NAMES,
  XenstoreError,
  XS,
} from "./wire.js";

/** Where xenstored listens in Dom0, in the order tools try them. */
export const DOM0_SOCKETS = ["/run/xenstored/socket", "/var/run/xenstored/socket"];
export const GUEST_DEVICE = "/dev/xen/xenbus";

export interface WatchEvent {
  readonly path: string;
  readonly token: string;
}

/** A registered watch. Iterate it for events (the first comes on registration); close() unwatches. */
export interface Watch extends AsyncIterable<WatchEvent> {
  readonly path: string;
  readonly token: string;
  close(): Promise<void>;
}

interface Transport {
  /** Sends one whole frame; `failed` is called if the frame could not be handed over. */
  write(frame: Buffer, failed: (err: Error) => void): void;
  /**
   * Whether the next request may only go out once the previous one is answered. Linux's /dev/xen/xenbus
   * queues a request with its payload still in the open file's one message buffer
   * (xenbus_dev_request_and_reply points at it) and lets the next write() reuse that buffer at once: a second
   * request written before the first reached the ring can overwrite its payload. Seen on real Xen as READs
   * answered EINVAL and requests never answered, most of all right after a resume. libxenstore likewise
   * keeps one request in flight per connection.
   */
  readonly oneAtATime: boolean;
  onData(fn: (chunk: Buffer) => void): void;
  onClose(fn: (err?: Error) => void): void;
  close(): void;
}

function streamTransport(stream: Duplex, oneAtATime = false): Transport {
  return {
    oneAtATime,
    write: (b, failed) => stream.write(b, (err) => err && failed(err)),
    onData: (fn) => stream.on("data", fn),
    onClose: (fn) => {
      stream.on("error", (e) => fn(e));
      stream.on("close", () => fn());
    },
    close: () => stream.destroy(),
  };
}

/** /dev/xen/xenbus: a character device; each write must carry whole messages. */
function deviceTransport(path: string): Transport {
  const fd = openSync(path, "r+");
  const input: Readable = createReadStream("", { fd, autoClose: false, highWaterMark: 4096 + 16 });
  let closed = false;
  return {
    oneAtATime: true,
    // The kernel refuses a frame it cannot buffer (EINVAL, E2BIG); the request then fails instead of hanging.
    write: (b, failed) => fsWrite(fd, b, (err) => err && failed(err)),
    onData: (fn) => input.on("data", (c) => fn(c as Buffer)),
    onClose: (fn) => {
      // Closing the descriptor under a pending read ends that read with EBADF: a close, not a crash.
      input.on("error", (err) => fn(closed ? undefined : err));
      input.on("close", () => fn());
    },
    close: () => {
      if (closed) return;
      closed = true;
      input.destroy();
      closeSync(fd);
    },
  };
}

interface Pending {
  resolve(frame: Frame): void;
  reject(err: Error): void;
  op: string;
  path: string | undefined;
}

interface WatchState {
  queue: WatchEvent[];
  wake: (() => void) | undefined;
  closed: boolean;
}

export interface Tx {
  read(path: string): Promise<string>;
  tryRead(path: string): Promise<string | undefined>;
  write(path: string, value: string): Promise<void>;
  mkdir(path: string): Promise<void>;
  rm(path: string): Promise<void>;
  directory(path: string): Promise<string[]>;
}

export interface ClientOptions {
  /**
   * A request unanswered this long fails with ETIMEDOUT (default 30 s). A guest's connection through
   * /dev/xen/xenbus can lose replies across a suspend; a caller that times out can reconnect.
   */
  readonly requestTimeoutMs?: number;
}

export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;

export class XenstoreClient {
  private nextReq = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly watches = new Map<string, WatchState>();
  private readonly decoder = new FrameDecoder();
  private nextToken = 1;
  private closedWith: Error | undefined;

  private readonly requestTimeoutMs: number;
  private readonly sendQueue: Array<{ reqId: number; send: () => boolean }> = [];
  private inFlight: number | undefined;

  private constructor(
    private readonly transport: Transport,
    options: ClientOptions = {},
  ) {
    this.requestTimeoutMs = options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    transport.onData((chunk) => this.receive(chunk));
    transport.onClose((err) => this.fail(err ?? new XenstoreError("EIO", "connection closed")));
  }

  /** Connects to a unix socket or the xenbus device; with no path, the usual Dom0 socket or guest device. */
  static async connect(path?: string, options: ClientOptions = {}): Promise<XenstoreClient> {
    const candidates = path ? [path] : [...DOM0_SOCKETS, GUEST_DEVICE];
    let lastError: unknown;
    for (const p of candidates) {
      try {
        const st = statSync(p);
        if (st.isCharacterDevice()) return new XenstoreClient(deviceTransport(p), options);
        const sock = connect(p);
        await new Promise<void>((resolve, reject) => {
          sock.once("connect", resolve);
          sock.once("error", reject);
        });
        return new XenstoreClient(streamTransport(sock), options);
      } catch (err) {
        lastError = err;
      }
    }
    throw new XenstoreError(
      "ENOENT",
      "connect",
      `${candidates.join(", ")} (${(lastError as Error | undefined)?.message ?? "not found"}); is xenstored running, and are you root?`,
    );
  }

  /** A client over an already connected stream (tests, in-process servers). */
  static over(stream: Duplex, options: ClientOptions & { oneAtATime?: boolean } = {}): XenstoreClient {
    return new XenstoreClient(streamTransport(stream, options.oneAtATime), options);
  }

  private receive(chunk: Buffer): void {
    let frames: Frame[];
    try {
      frames = this.decoder.push(chunk);
    } catch (err) {
      this.fail(err as Error);
      this.transport.close();
      return;
    }
    for (const f of frames) {
      if (f.type === XS.WATCH_EVENT) {
        const [path, token] = splitNul(f.payload);
        const w = token === undefined ? undefined : this.watches.get(token);
        if (w && path !== undefined) {
          w.queue.push({ path, token: token as string });
          w.wake?.();
        }
        continue;
      }
      const p = this.pending.get(f.reqId);
      if (!p) continue;
      this.pending.delete(f.reqId);
      if (f.type === XS.ERROR) p.reject(new XenstoreError(splitNul(f.payload)[0] ?? "EIO", p.op, p.path));
      else p.resolve(f);
    }
  }

  private fail(err: Error): void {
    if (this.closedWith) return;
    this.closedWith = err;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    for (const w of this.watches.values()) {
      w.closed = true;
      w.wake?.();
    }
  }

  private request(type: number, payload: Buffer, txId = 0, path?: string): Promise<Frame> {
    const op = TYPE_NAMES[type] ?? String(type);
    if (this.closedWith) return Promise.reject(this.closedWith);
    const reqId = this.nextReq;
    this.nextReq = (this.nextReq % 0xfffffffe) + 1;
    return new Promise<Frame>((resolve, reject) => {
      let frame: Buffer;
      try {
        frame = encodeFrame({ type, reqId, txId, payload });
      } catch (err) {
        reject(err instanceof XenstoreError ? new XenstoreError(err.code, op, path) : (err as Error));
        return;
      }
      let timer: NodeJS.Timeout | undefined;
      const settled = () => {
        clearTimeout(timer);
        if (this.inFlight === reqId) this.inFlight = undefined;
        this.sendNext();
      };
      this.pending.set(reqId, {
        resolve: (f) => {
          settled();
          resolve(f);
        },
        reject: (e) => {
          settled();
          reject(e);
        },
        op,
        path,
      });
      const send = () => {
        // Settled meanwhile (the connection failed while this request waited its turn).
        if (this.closedWith || !this.pending.has(reqId)) return false;
        timer = setTimeout(
          () =>
            this.settle(
              reqId,
              new XenstoreError("ETIMEDOUT", op, `${path ?? ""} (no answer in ${this.requestTimeoutMs} ms)`),
            ),
          this.requestTimeoutMs,
        );
        timer.unref();
        this.transport.write(frame, (err) => {
          const code = (err as NodeJS.ErrnoException).code ?? "EIO";
          this.settle(
            reqId,
            new XenstoreError(code, op, `${path ?? ""} (the write was refused: ${err.message})`),
          );
        });
        return true;
      };
      if (!this.transport.oneAtATime) {
        send();
        return;
      }
      this.sendQueue.push({ reqId, send });
      this.sendNext();
    });
  }

  /** Fails a pending request (a timeout, a refused write). */
  private settle(reqId: number, err: Error): void {
    const p = this.pending.get(reqId);
    if (!p) return;
    this.pending.delete(reqId);
    p.reject(err);
  }

  /** The device transport: the next queued request goes out once none is in flight. */
  private sendNext(): void {
    if (!this.transport.oneAtATime) return;
    while (this.inFlight === undefined) {
      const next = this.sendQueue.shift();
      if (!next) return;
      this.inFlight = next.reqId;
      if (!next.send()) this.inFlight = undefined;
    }
  }

  async read(path: string, txId = 0): Promise<string> {
    return (await this.request(XS.READ, nulTerminated(path), txId, path)).payload.toString("utf8");
  }

  /** Like read, but undefined for a node that does not exist. */
  async tryRead(path: string, txId = 0): Promise<string | undefined> {
    try {
      return await this.read(path, txId);
    } catch (err) {
      if (isXenstoreError(err, "ENOENT")) return undefined;
      throw err;
    }
  }

  async write(path: string, value: string, txId = 0): Promise<void> {
    const payload = Buffer.concat([Buffer.from(`${path}\0`, "utf8"), Buffer.from(value, "utf8")]);
    await this.request(XS.WRITE, payload, txId, path);
  }

  async mkdir(path: string, txId = 0): Promise<void> {
    await this.request(XS.MKDIR, nulTerminated(path), txId, path);
  }

  async rm(path: string, txId = 0): Promise<void> {
    await this.request(XS.RM, nulTerminated(path), txId, path);
  }

  async directory(path: string, txId = 0): Promise<string[]> {
    return splitNul((await this.request(XS.DIRECTORY, nulTerminated(path), txId, path)).payload);
  }

  async getPerms(path: string, txId = 0): Promise<Perm[]> {
    const f = await this.request(XS.GET_PERMS, nulTerminated(path), txId, path);
    return parsePerms(splitNul(f.payload), "GET_PERMS", path);
  }

  async setPerms(path: string, perms: readonly Perm[], txId = 0): Promise<void> {
    await this.request(XS.SET_PERMS, nulTerminated(path, ...formatPerms(perms)), txId, path);
  }

  /** XS_CONTROL: a server-specific command (the lab's xenstored: introduce DOMID SOCKET, release DOMID). */
  async control(...args: string[]): Promise<string> {
    return splitNul((await this.request(XS.CONTROL, nulTerminated(...args))).payload)[0] ?? "";
  }

  async getDomainPath(domid: number): Promise<string> {
    return splitNul((await this.request(XS.GET_DOMAIN_PATH, nulTerminated(String(domid)))).payload)[0] ?? "";
  }

  /** Registers a watch on a path (and everything below it). The first event arrives on registration. */
  async watch(path: string, token = `xr${process.pid}-${this.nextToken++}`): Promise<Watch> {
    if (this.watches.has(token)) throw new XenstoreError("EEXIST", "WATCH", token);
    const state: WatchState = { queue: [], wake: undefined, closed: false };
    this.watches.set(token, state);
    try {
      await this.request(XS.WATCH, nulTerminated(path, token), 0, path);
    } catch (err) {
      this.watches.delete(token);
      throw err;
    }
    const close = async () => {
      if (state.closed) return;
      state.closed = true;
      state.wake?.();
      this.watches.delete(token);
      if (!this.closedWith)
        await this.request(XS.UNWATCH, nulTerminated(path, token), 0, path).catch(() => {});
    };
    return {
      path,
      token,
      close,
      [Symbol.asyncIterator]: () => ({
        next: async (): Promise<IteratorResult<WatchEvent>> => {
          for (;;) {
            const ev = state.queue.shift();
            if (ev) return { done: false, value: ev };
            if (state.closed) return { done: true, value: undefined };
            await new Promise<void>((r) => {
              state.wake = r;
            });
            state.wake = undefined;
          }
        },
        return: async (): Promise<IteratorResult<WatchEvent>> => {
          await close();
          return { done: true, value: undefined };
        },
      }),
    };
  }

  /**
   * Runs fn in a transaction and commits it, starting over when xenstored answers EAGAIN (someone changed
   * what the transaction read). fn must be safe to run again.
   */
  async transaction<T>(fn: (tx: Tx) => Promise<T>, options: { retries?: number } = {}): Promise<T> {
    const retries = options.retries ?? 16;
    for (let attempt = 0; ; attempt++) {
      const start = await this.request(XS.TRANSACTION_START, nulTerminated(""));
      const id = Number(splitNul(start.payload)[0]);
      const tx: Tx = {
        read: (p) => this.read(p, id),
        tryRead: (p) => this.tryRead(p, id),
        write: (p, v) => this.write(p, v, id),
        mkdir: (p) => this.mkdir(p, id),
        rm: (p) => this.rm(p, id),
        directory: (p) => this.directory(p, id),
      };
      let result: T;
      try {
        result = await fn(tx);
      } catch (err) {
        await this.request(XS.TRANSACTION_END, nulTerminated("F"), id).catch(() => {});
        throw err;
      }
      try {
        await this.request(XS.TRANSACTION_END, nulTerminated("T"), id);
        return result;
      } catch (err) {
        if (!isXenstoreError(err, "EAGAIN") || attempt >= retries) throw err;
        await new Promise((r) => setTimeout(r, Math.min(50, 2 ** attempt)));
      }
    }
  }

  close(): void {
    this.fail(new XenstoreError("EIO", "client closed"));
    this.transport.close();
  }

  /** The connection is gone (xenstored closed it, restarted, or `close` was called): a new client is needed. */
  get lost(): boolean {
    return this.closedWith !== undefined;
  }
}

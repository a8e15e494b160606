// The npm `netlink` package's native socket, for Bun: its `NativeNetlink` (node_netlink src/binding.cc, the
// class `Socket`) over libc through bun:ffi, so that the package's own JavaScript (framing, requests,
// rtnetlink) and xenroam's adapter (rtnetlink.ts) run unchanged under Bun. Bun cannot load the addon itself: it
// drives libuv directly and Bun panics at uv_poll_init ("unsupported uv function", oven-sh/bun#18546). Only
// xenroam's Bun builds load this module, in place of `node-gyp-build` inside `netlink` (scripts/bun-bundle.mjs);
// the Netlink contract suite runs over it against the kernel (test/bun-contract.root.test.ts).
//
// How it receives, without a poll handle in Bun's event loop:
// - A socket with no multicast group (every request socket) reads only right after it has sent, without
//   blocking (MSG_DONTWAIT), until the queue is empty: rtnetlink answers in the sender's own context (the
//   request runs inside sendmsg, net/netlink/af_netlink.c netlink_unicast_kernel -> rtnetlink_rcv, and queues
//   its answer or ack before sendmsg returns), and a dump's further parts are made inside recvmsg
//   (netlink_recvmsg calls netlink_dump when the queue has drained below half the receive buffer). If a drain
//   finds nothing it looks again after 1, 10 and 100 ms.
// - A socket with a group (the event socket) is read by Bun's event loop: its descriptor, non-blocking, as a
//   stream (Bun.file(fd).stream(), which polls a socket with epoll and reads it when readable; no thread). All
//   of such a socket's datagrams come through that one reader, in order (netlink's multipart grouping needs
//   it); a chunk may hold more than one datagram, which netlink's parser takes as it takes one (messages carry
//   their own lengths). Not node:fs read: that blocks a thread of Bun's small pool (two on one vCPU) for as
//   long as no event comes, and xenstore's and the sysctls' file I/O then waited behind it (seconds, on real Xen).
import { constants } from "node:os";
import { dlopen, FFIType, ptr, read, type Pointer } from "bun:ffi";

const AF_NETLINK = 16;
const SOCK_RAW = 3;
const SOCK_CLOEXEC = 0o2000000;
const MSG_PEEK = 0x2;
const MSG_TRUNC = 0x20;
const MSG_DONTWAIT = 0x40;
const SOL_SOCKET = 1;
const SO_SNDBUF = 7;
const SO_RCVBUF = 8;
const F_GETFL = 3;
const F_SETFL = 4;
const O_NONBLOCK = 0o4000;
const SOL_NETLINK = 270;
const NETLINK_ADD_MEMBERSHIP = 1;
const NETLINK_DROP_MEMBERSHIP = 2;
const EINTR = 4;
const EAGAIN = 11;
const RETRY_MS = [1, 10, 100];

const { i32, u32, i64, u64, ptr: p } = FFIType;
const libc = dlopen("libc.so.6", {
  socket: { args: [i32, i32, i32], returns: i32 },
  bind: { args: [i32, p, u32], returns: i32 },
  getsockname: { args: [i32, p, p], returns: i32 },
  setsockopt: { args: [i32, i32, i32, p, u32], returns: i32 },
  getsockopt: { args: [i32, i32, i32, p, p], returns: i32 },
  sendto: { args: [i32, p, u64, i32, p, u32], returns: i64 },
  recvfrom: { args: [i32, p, u64, i32, p, p], returns: i64 },
  close: { args: [i32], returns: i32 },
  fcntl: { args: [i32, i32, i32], returns: i32 },
  __errno_location: { args: [], returns: p },
}).symbols;

const errnoNow = () => read.i32(libc.__errno_location() as Pointer);
/** errno numbers to names, the first name of each (EAGAIN, not its alias EWOULDBLOCK, as libuv names it). */
const ERRNO_NAMES = new Map<number, string>();
for (const [name, n] of Object.entries(constants.errno)) if (!ERRNO_NAMES.has(n)) ERRNO_NAMES.set(n, name);

/** The addon's ErrnoException (binding.cc): errno positive, code its name, syscall. */
function errnoException(errno: number, syscall: string, message: string): Error {
  const code = ERRNO_NAMES.get(errno) ?? `E${errno}`;
  return Object.assign(new Error(`${message}: ${code}`), { name: "ErrnoException", errno, code, syscall });
}

/** Runs a libc call that answers -1 and sets errno on failure, again after EINTR. */
function sys(call: () => number | bigint, syscall: string, message: string): number {
  for (;;) {
    const r = Number(call());
    if (r !== -1) return r;
    const errno = errnoNow();
    if (errno !== EINTR) throw errnoException(errno, syscall, message);
  }
}

function sockaddr(port: number, groups: number): Buffer {
  const a = Buffer.alloc(12);
  a.writeUInt16LE(AF_NETLINK, 0);
  a.writeUInt32LE(port >>> 0, 4);
  a.writeUInt32LE(groups >>> 0, 8);
  return a;
}

interface RInfo {
  port: number;
  groups: number;
  truncated?: number;
}
type ReadCallback = (msg: Buffer, rinfo: RInfo) => void;
type ErrorCallback = (error: Error) => void;

export class NativeNetlink {
  #fd: number;
  #open = true;
  #grouped = false;
  #reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  #retry: ReturnType<typeof setTimeout> | undefined;
  readonly #msgBuffer: number;
  readonly #onMessage: ReadCallback;
  readonly #onError: ErrorCallback;

  constructor(protocol: number, msgBuffer: number, onMessage: ReadCallback, onError: ErrorCallback) {
    this.#msgBuffer = msgBuffer;
    this.#onMessage = onMessage;
    this.#onError = onError;
    this.#fd = sys(
      () => libc.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, protocol),
      "socket",
      "Couldn't create netlink socket",
    );
  }

  #check(): void {
    if (!this.#open) throw new Error("Netlink socket is closed");
  }

  bind(port: number, groups: number): void {
    this.#check();
    const a = sockaddr(port, groups);
    sys(() => libc.bind(this.#fd, ptr(a), a.length), "bind", "Couldn't bind netlink socket");
    if (groups) this.#startReader();
  }

  send(port: number, groups: number, data: Buffer | Buffer[], callback: (error?: Error) => void): void {
    this.#check();
    const msg = Array.isArray(data) ? Buffer.concat(data) : data;
    const a = sockaddr(port, groups);
    let error: Error | undefined;
    try {
      sys(
        () => libc.sendto(this.#fd, ptr(msg), msg.length, 0, ptr(a), a.length),
        "sendmsg",
        "Error when sending Netlink message",
      );
    } catch (err) {
      error = err as Error;
    }
    // The addon calls back from its loop, never synchronously; the answer is already queued (see above).
    setImmediate(() => {
      if (!this.#open) return;
      callback(error);
      if (!error && !this.#grouped) this.#drain(0);
    });
  }

  /** Reads what is queued without blocking; if nothing was, looks again a little later. */
  #drain(attempt: number): void {
    if (!this.#open) return;
    clearTimeout(this.#retry);
    this.#retry = undefined;
    let got = 0;
    for (;;) {
      const one = this.#receiveNow();
      if (!one) break;
      got++;
      this.#onMessage(one.msg, one.rinfo);
      if (!this.#open) return;
    }
    if (got === 0 && attempt < RETRY_MS.length)
      this.#retry = setTimeout(() => this.#drain(attempt + 1), RETRY_MS[attempt]);
  }

  /** One datagram, sized by a peek as the addon does when its msgBuffer is 0; undefined when none is queued. */
  #receiveNow(): { msg: Buffer; rinfo: RInfo } | undefined {
    const from = sockaddr(0, 0);
    const fromLen = Buffer.alloc(4);
    const one = Buffer.alloc(1);
    const recv = (buf: Buffer, len: number, flags: number) => {
      fromLen.writeUInt32LE(from.length, 0);
      for (;;) {
        const r = Number(
          libc.recvfrom(this.#fd, ptr(buf), len, flags | MSG_DONTWAIT, ptr(from), ptr(fromLen)),
        );
        if (r !== -1) return r;
        const errno = errnoNow();
        if (errno === EAGAIN) return -1;
        if (errno !== EINTR) {
          this.#onError(errnoException(errno, "recvmsg", "Error when receiving Netlink message"));
          return -1;
        }
      }
    };
    let size = this.#msgBuffer;
    if (size === 0) {
      size = recv(one, 1, MSG_PEEK | MSG_TRUNC);
      if (size < 0) return undefined;
    }
    const buf = Buffer.alloc(Math.max(size, 1));
    const got = recv(buf, size, MSG_TRUNC);
    if (got < 0) return undefined;
    const rinfo: RInfo = { port: from.readUInt32LE(4), groups: from.readUInt32LE(8) };
    if (got > size) rinfo.truncated = got;
    return { msg: buf.subarray(0, Math.min(got, size)), rinfo };
  }

  /** The one reader of a socket with a multicast group: Bun's event loop, as a stream of its descriptor. */
  #startReader(): void {
    if (this.#grouped) return;
    this.#grouped = true;
    clearTimeout(this.#retry);
    const flags = sys(() => libc.fcntl(this.#fd, F_GETFL, 0), "fcntl", "Couldn't read the socket's flags");
    sys(
      () => libc.fcntl(this.#fd, F_SETFL, flags | O_NONBLOCK),
      "fcntl",
      "Couldn't make the socket non-blocking",
    );
    const reader = Bun.file(this.#fd).stream().getReader();
    this.#reader = reader;
    const pump = async () => {
      for (;;) {
        let chunk: Awaited<ReturnType<typeof reader.read>>;
        try {
          chunk = await reader.read();
        } catch (err) {
          if (this.#open)
            this.#onError(
              errnoException(0, "recvmsg", `Error when receiving Netlink message: ${String(err)}`),
            );
          return;
        }
        if (chunk.done || !this.#open) return;
        // The kernel's multicast messages come from port 0 (binding.cc reports the sender's address).
        this.#onMessage(Buffer.from(chunk.value), { port: 0, groups: 0 });
      }
    };
    void pump();
  }

  close(): void {
    if (!this.#open) return;
    this.#open = false;
    clearTimeout(this.#retry);
    const fd = this.#fd;
    this.#fd = -1;
    // Bun does not close a descriptor it was given; the stream lets go of it (and of its poll) first.
    if (this.#reader) void this.#reader.cancel().finally(() => libc.close(fd));
    else libc.close(fd);
  }

  /** A grouped socket's stream keeps Bun's loop alive until it is closed; a request socket holds nothing. */
  ref(): void {}
  unref(): void {}

  address(): RInfo {
    this.#check();
    const a = sockaddr(0, 0);
    const len = Buffer.alloc(4);
    len.writeUInt32LE(a.length, 0);
    sys(() => libc.getsockname(this.#fd, ptr(a), ptr(len)), "getsockname", "Couldn't get socket address");
    return { port: a.readUInt32LE(4), groups: a.readUInt32LE(8) };
  }

  #membership(option: number, group: number, what: string): void {
    this.#check();
    const g = Buffer.alloc(4);
    g.writeUInt32LE(group >>> 0, 0);
    sys(() => libc.setsockopt(this.#fd, SOL_NETLINK, option, ptr(g), 4), "setsockopt", what);
  }

  addMembership(group: number): void {
    this.#membership(NETLINK_ADD_MEMBERSHIP, group, "Couldn't add membership");
    this.#startReader();
  }

  dropMembership(group: number): void {
    this.#membership(NETLINK_DROP_MEMBERSHIP, group, "Couldn't drop membership");
  }

  #getInt(option: number): number {
    this.#check();
    const v = Buffer.alloc(4);
    const len = Buffer.alloc(4);
    len.writeUInt32LE(4, 0);
    sys(
      () => libc.getsockopt(this.#fd, SOL_SOCKET, option, ptr(v), ptr(len)),
      "getsockopt",
      "Couldn't get option",
    );
    return v.readInt32LE(0);
  }

  #setInt(option: number, value: number): void {
    this.#check();
    const v = Buffer.alloc(4);
    v.writeInt32LE(value, 0);
    sys(() => libc.setsockopt(this.#fd, SOL_SOCKET, option, ptr(v), 4), "setsockopt", "Couldn't set option");
  }

  getRecvBufferSize(): number {
    return this.#getInt(SO_RCVBUF);
  }
  setRecvBufferSize(size: number): void {
    this.#setInt(SO_RCVBUF, size);
  }
  getSendBufferSize(): number {
    return this.#getInt(SO_SNDBUF);
  }
  setSendBufferSize(size: number): void {
    this.#setInt(SO_SNDBUF, size);
  }
}

/** What `require('node-gyp-build')(dir)` gives netlink's raw.js: the binding's exports. */
export default function nodeGypBuild(): { NativeNetlink: typeof NativeNetlink } {
  return { NativeNetlink };
}

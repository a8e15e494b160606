// The downtime probe: a UDP echo server on the correspondent, and a sender in the VM that sends a datagram
// every 10 ms and prints one line per reply. The sender runs inside the VM, so it is paused with the VM, and
// its source address is whatever the guest's routing picks at each send — exactly what an application sees.

import { createSocket } from "node:dgram";
import { connect, createServer } from "node:net";

export const PROBE_PORT = 7357;

/** Echoes every datagram back to its sender until SIGTERM. */
export function runEchoServer(port = PROBE_PORT): void {
  const sock = createSocket({ type: "udp6", ipv6Only: true });
  sock.on("message", (msg, rinfo) => sock.send(msg, rinfo.port, rinfo.address));
  sock.bind(port, "::");
  const stop = () => sock.close(() => process.exit(0));
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
}

/**
 * Sends seq/timestamp datagrams every `intervalMs` to target and prints "seq sentAt recvAt" (wall-clock ms)
 * for each reply on stdout, plus "sent seq sentAt" lines so losses can be counted. Stops on SIGTERM.
 */
export function runProbeSender(target: string, intervalMs = 10, port = PROBE_PORT): void {
  const sock = createSocket({ type: "udp6", ipv6Only: true });
  let seq = 0;
  const out: string[] = [];
  const flush = () => {
    if (out.length > 0) process.stdout.write(`${out.splice(0).join("\n")}\n`);
  };
  sock.on("message", (msg) => {
    if (msg.length < 16) return;
    out.push(`r ${msg.readUInt32BE(0)} ${Number(msg.readBigUInt64BE(8))} ${Date.now()}`);
  });
  sock.on("error", () => {});
  const buf = Buffer.alloc(16);
  const timer = setInterval(() => {
    seq++;
    const now = Date.now();
    buf.writeUInt32BE(seq, 0);
    buf.writeBigUInt64BE(BigInt(now), 8);
    out.push(`s ${seq} ${now}`);
    // Unreachable networks are part of what is being measured: send errors are expected and ignored.
    sock.send(buf, port, target, () => {});
  }, intervalMs);
  const flusher = setInterval(flush, 50);
  const stop = () => {
    clearInterval(timer);
    clearInterval(flusher);
    flush();
    sock.close(() => process.exit(0));
  };
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
}

export const TCP_PROBE_PORT = 7358;

/**
 * The VM's side of the TCP probe: to every connection, a 64-byte chunk every 5 ms until SIGTERM. The VM is
 * paused with everything in it, so a migration shows up as a stall at the receiver, never as a burst.
 */
export function runTcpStreamServer(port = TCP_PROBE_PORT): void {
  const chunk = Buffer.alloc(64, 0x78);
  const server = createServer((s) => {
    s.setNoDelay(true);
    const timer = setInterval(() => s.write(chunk), 5);
    const end = () => clearInterval(timer);
    s.on("error", end);
    s.on("close", end);
  });
  server.listen(port, "::");
  const stop = () => {
    server.close();
    process.exit(0);
  };
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
}

/**
 * The CN's side: connects to target (the VM's HoA) and prints "connected AT", "stall MS ENDAT" whenever data
 * resumes after a silence over 20 ms, and "closed REASON AT" if the connection ever ends (a reset).
 */
export function runTcpStreamClient(target: string, port = TCP_PROBE_PORT): void {
  let last = 0;
  let bytes = 0;
  const s = connect({ host: target, port }, () => {
    last = Date.now();
    process.stdout.write(`connected ${last}\n`);
  });
  s.on("data", (d: Buffer) => {
    const now = Date.now();
    if (last && now - last > 20) process.stdout.write(`stall ${now - last} ${now}\n`);
    last = now;
    bytes += d.length;
  });
  const closed = (reason: string) => {
    process.stdout.write(`closed ${reason.replace(/\s+/g, "_")} ${Date.now()} ${bytes}\n`);
    process.exit(1);
  };
  s.on("error", (err) => closed(err.message));
  s.on("end", () => closed("end"));
  const stop = () => {
    s.removeAllListeners();
    s.destroy();
    process.stdout.write(`stopped ${Date.now()} ${bytes}\n`);
    process.exit(0);
  };
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
}

export interface TcpLog {
  connectedAt: number | undefined;
  /** [stall ms, the time data resumed]. */
  readonly stalls: Array<[number, number]>;
  closed: string | undefined;
}

export function newTcpLog(): TcpLog {
  return { connectedAt: undefined, stalls: [], closed: undefined };
}

export function ingestTcpLine(log: TcpLog, line: string): void {
  const [kind, a, b] = line.split(" ");
  if (kind === "connected") log.connectedAt = Number(a);
  else if (kind === "stall") log.stalls.push([Number(a), Number(b)]);
  else if (kind === "closed") log.closed = a ?? "closed";
}

/** The longest stall whose end falls in [from, to]. */
export function longestStall(log: TcpLog, from: number, to: number): number {
  return Math.max(0, ...log.stalls.filter(([, end]) => end >= from && end <= to).map(([ms]) => ms));
}

export interface ProbeLog {
  readonly sent: Map<number, number>;
  /** Reply receive times (wall-clock ms), in arrival order. */
  readonly replies: number[];
  readonly answered: Set<number>;
}

export function newProbeLog(): ProbeLog {
  return { sent: new Map(), replies: [], answered: new Set() };
}

export function ingestProbeLine(log: ProbeLog, line: string): void {
  const [kind, a, b, c] = line.split(" ");
  if (kind === "s") log.sent.set(Number(a), Number(b));
  else if (kind === "r" && c !== undefined) {
    log.replies.push(Number(c));
    log.answered.add(Number(a));
  }
}

export interface Outage {
  /** Longest time between two consecutive replies in the window, ms. */
  readonly gapMs: number;
  /** Probes sent in the window that never got a reply. */
  readonly lost: number;
}

/** The outage a migration caused: the longest silence between replies from `from` until `to`. */
export function outage(log: ProbeLog, from: number, to: number): Outage {
  const inWindow = log.replies.filter((t) => t >= from && t <= to).sort((x, y) => x - y);
  const before = log.replies.filter((t) => t < from).at(-1);
  const points = before === undefined ? inWindow : [before, ...inWindow];
  let gap = 0;
  for (let i = 1; i < points.length; i++) gap = Math.max(gap, (points[i] ?? 0) - (points[i - 1] ?? 0));
  let lost = 0;
  for (const [seq, at] of log.sent) if (at >= from && at <= to - 50 && !log.answered.has(seq)) lost++;
  return { gapMs: gap, lost };
}

/** The first reply after `after`, or undefined. */
export function firstReplyAfter(log: ProbeLog, after: number): number | undefined {
  return log.replies.find((t) => t > after);
}

// The downtime probe: a UDP echo server on the correspondent, and a sender in the VM that sends a datagram
// every 10 ms and prints one line per reply. The sender runs inside the VM, so it is paused with the VM, and
// its source address is whatever the guest's routing picks at each send — exactly what an application sees.

import { createSocket } from "node:dgram";

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

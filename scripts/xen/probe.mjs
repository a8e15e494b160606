// The real-Xen benchmark's VM->CN probe, dependency-free (the guest runs it with the agent bundle's Node.js).
//   probe.mjs send HOST PORT [INTERVAL_MS]   in the guest: a datagram every INTERVAL_MS (20) to HOST:PORT, each
//                                            carrying the sequence numbers whose replies arrived lately
//   probe.mjs echo PORT                      on the CN: answers every datagram and prints one JSON line a
//                                            datagram: {"t": arrival (ms, CN clock), "i": sender session,
//                                            "s": seq, "src": source address, "a": seqs newly acknowledged}
// The guest's clock is never used: the CN knows when it sent each reply, and the guest only says which
// replies it got (the last 32 in every datagram, so the ones before an outage arrive with the first after it).
import { createSocket } from "node:dgram";

const [mode, ...args] = process.argv.slice(2);
// The wall clock, as `date` and `ping -D` read it (performance.timeOrigin + now() drifts from it here).
const nowMs = () => Date.now();

if (mode === "send") {
  const [host, port, interval = "20"] = args;
  const session = Math.floor(Math.random() * 2 ** 31).toString(36);
  const sock = createSocket({ type: "udp6" });
  const acked = [];
  let seq = 0;
  sock.on("message", (msg) => {
    try {
      const s = JSON.parse(msg.toString()).s;
      if (Number.isInteger(s)) {
        acked.push(s);
        if (acked.length > 32) acked.shift();
      }
    } catch {
      // not ours
    }
  });
  sock.on("error", () => {}); // unreachable while the VM moves: keep sending
  setInterval(() => {
    seq++;
    const msg = Buffer.from(JSON.stringify({ i: session, s: seq, a: acked }));
    sock.send(msg, Number(port), host, () => {});
  }, Number(interval));
} else if (mode === "echo") {
  const [port = "7400"] = args;
  const sock = createSocket({ type: "udp6", ipv6Only: true });
  const seen = new Map(); // session -> Set of acknowledged seqs already printed
  sock.on("message", (msg, rinfo) => {
    const t = nowMs();
    let m;
    try {
      m = JSON.parse(msg.toString());
    } catch {
      return;
    }
    if (typeof m.i !== "string" || !Number.isInteger(m.s) || !Array.isArray(m.a)) return;
    sock.send(JSON.stringify({ s: m.s }), rinfo.port, rinfo.address);
    let acks = seen.get(m.i);
    if (!acks) seen.set(m.i, (acks = new Set()));
    const fresh = m.a.filter((s) => Number.isInteger(s) && !acks.has(s));
    for (const s of fresh) acks.add(s);
    if (acks.size > 4096) for (const s of [...acks].slice(0, 2048)) acks.delete(s);
    process.stdout.write(`${JSON.stringify({ t, i: m.i, s: m.s, src: rinfo.address, a: fresh })}\n`);
  });
  sock.bind(Number(port), "::");
  const stop = () => sock.close(() => process.exit(0));
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
} else {
  process.stderr.write("usage: probe.mjs send HOST PORT [INTERVAL_MS] | probe.mjs echo PORT\n");
  process.exit(2);
}

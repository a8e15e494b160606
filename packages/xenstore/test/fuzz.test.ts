// The server must survive anything a guest can send: random frames, random bytes, oversized lengths.
import { connect, type Socket } from "node:net";
import { join } from "node:path";
import test from "ava";
import fc from "fast-check";
import { encodeFrame, PAYLOAD_MAX, XS } from "../src/index.js";
import { rig } from "./helpers.js";

const open = (path: string) =>
  new Promise<Socket>((resolve, reject) => {
    const s = connect(path);
    s.once("connect", () => resolve(s));
    s.once("error", reject);
  });

test("10,000 random frames from a guest do not crash the server", async (t) => {
  const r = await rig(t, [9]);
  const frame = fc.record({
    type: fc.oneof(fc.integer({ min: 0, max: 25 }), fc.integer({ min: 0, max: 0xffffffff })),
    reqId: fc.integer({ min: 0, max: 0xffffffff }),
    txId: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 20 }), fc.integer({ min: 0, max: 0xffffffff })),
    payload: fc.oneof(
      fc.uint8Array({ maxLength: 64 }),
      fc.uint8Array({ maxLength: PAYLOAD_MAX }),
      fc
        .array(fc.stringMatching(/^[a-z0-9/@_-]{0,12}$/), { maxLength: 4 })
        .map((parts) => new TextEncoder().encode(parts.map((p) => `${p}\0`).join(""))),
    ),
  });
  const frames = fc.sample(frame, { numRuns: 10_000, seed: 42 });
  const sock = await open(join(r.dir, "dom9.sock"));
  let replies = 0;
  sock.on("data", () => replies++);
  for (const f of frames) {
    sock.write(encodeFrame({ ...f, payload: Buffer.from(f.payload) }));
  }
  await new Promise((res) => setTimeout(res, 300));
  t.true(replies > 0, "the server answered");
  sock.destroy();

  // Raw byte streams, including oversized lengths: the connection may be closed, the server lives on.
  for (const bytes of fc.sample(fc.uint8Array({ minLength: 1, maxLength: 600 }), { numRuns: 200, seed: 7 })) {
    const s = await open(join(r.dir, "dom9.sock"));
    s.on("error", () => {});
    s.end(Buffer.from(bytes));
  }
  const oversized = Buffer.alloc(16);
  oversized.writeUInt32LE(XS.WRITE, 0);
  oversized.writeUInt32LE(PAYLOAD_MAX + 1, 12);
  const s = await open(join(r.dir, "dom9.sock"));
  const closed = new Promise<void>((res) => s.on("close", () => res()));
  s.write(oversized);
  await closed;
  t.pass("oversized length closes that connection");

  const xs = await r.dom0();
  await xs.write("/tool/alive", "yes");
  t.is(await xs.read("/tool/alive"), "yes", "the server still serves");
  t.is(await xs.tryRead("/local/domain/0"), undefined, "the guest could not create outside its domain");
});

// The gate on xl's back channel (receive): everything passes through in order; only xl's "ready" message
// waits, and only until xenroam's own steps have settled (or failed).
import test from "ava";
import { MarkerGate, XL_READY } from "../src/adapters/xl.js";

const BANNER = Buffer.from("xl migration receiver ready, send binary domain data.\n");
const REPORT = Buffer.from("my copy unpause results are as follows\0\0");

function gate(before: () => Promise<void>) {
  const out: Buffer[] = [];
  const g = new MarkerGate(XL_READY, (c) => out.push(Buffer.from(c)), before);
  return { g, text: () => Buffer.concat(out).toString("latin1") };
}

const tick = () => new Promise((r) => setImmediate(r));

test("the banner passes at once; ready waits for xenroam's steps; the report follows it in order", async (t) => {
  let done!: () => void;
  const steps = new Promise<void>((r) => (done = r));
  const { g, text } = gate(() => steps);
  g.push(BANNER);
  t.is(text(), BANNER.toString(), "nothing before the marker is held");
  g.push(XL_READY);
  g.push(REPORT); // cannot happen with xl (the report follows GO), but order must hold regardless
  await tick();
  t.is(text(), BANNER.toString(), "ready is held while the steps run");
  done();
  await tick();
  await tick();
  t.is(text(), Buffer.concat([BANNER, XL_READY, REPORT]).toString("latin1"));
  g.push(Buffer.from("after"));
  t.true(text().endsWith("after"), "open after the marker has gone on");
});

test("a marker split over chunks, byte by byte, is still recognised; a look-alike tail is not held for good", async (t) => {
  let ran = 0;
  const { g, text } = gate(async () => {
    ran++;
  });
  g.push(Buffer.from("x domain rec")); // the tail could be the marker's beginning: held back
  t.is(text(), "x ");
  g.push(Buffer.from("o")); // no longer could: let go
  t.is(text(), "x domain reco");
  for (const b of XL_READY) g.push(Buffer.from([b]));
  await tick();
  await tick();
  t.is(ran, 1);
  t.is(text(), `x domain reco${XL_READY.toString("latin1")}`);
});

test("steps that throw still let ready go: the sender is waiting with the VM stopped", async (t) => {
  const { g, text } = gate(() => Promise.reject(new Error("xenstore gone")));
  g.push(XL_READY);
  await tick();
  await tick();
  t.is(text(), XL_READY.toString("latin1"));
});

test("a receiver that dies before its ready message: what it said still reaches the sender", (t) => {
  const { g, text } = gate(async () => t.fail("no marker, no steps"));
  g.push(Buffer.from("xl migration receiver ready, send binary domain data.\ndomain r"));
  g.end();
  t.is(text(), "xl migration receiver ready, send binary domain data.\ndomain r");
});

import test from "ava";
import { RefusalLog, SourceLimiter } from "../src/gate.js";

test("a source gets its burst, then its rate; others are not held back; the least recently seen goes first", (t) => {
  const l = new SourceLimiter({ perSecond: 10, burst: 3, maxSources: 2 });
  t.deepEqual(
    [1, 2, 3, 4].map(() => l.admit("a", 0)),
    [true, true, true, false],
  );
  t.true(l.admit("b", 0), "another source has its own bucket");
  t.false(l.admit("a", 50), "half a token back after 50 ms");
  t.true(l.admit("a", 100), "one token back after 100 ms");
  t.true(l.admit("c", 100), "a third source evicts the least recently seen (b)");
  t.true(l.admit("b", 100), "b starts afresh");
});

test("refusals: the first of each window in full, then one count with the commonest reasons", (t) => {
  const lines: Array<[string, Record<string, unknown>]> = [];
  const r = new RefusalLog((e, f) => lines.push([e, f]), 1000);
  r.refused({ from: "x", reason: "signature does not verify" }, 0);
  for (let i = 1; i <= 5; i++) r.refused({ reason: `replayed or stale: sequence ${i} is not after 9` }, i);
  t.is(lines.length, 1);
  r.refused({ reason: "expired at 2026" }, 1500);
  t.deepEqual(
    lines.map(([e]) => e),
    ["binding_refused", "bindings_refused", "binding_refused"],
  );
  t.like(lines[1]?.[1], {
    count: 5,
    windowMs: 1000,
    reasons: { "replayed or stale: sequence … is not after …": 5 },
  });
  r.flush();
  t.is(lines.length, 3, "nothing more to count");
});

test("refusals: a stranger's choice of reason texts is counted in a bounded number of kinds", (t) => {
  const lines: Array<[string, Record<string, unknown>]> = [];
  const r = new RefusalLog((e, f) => lines.push([e, f]), 1000);
  r.refused({ reason: "first" }, 0);
  for (let i = 0; i < 10_000; i++)
    r.refused({ reason: `malformed binding: unknown field "f${"x".repeat(i % 50)}"` }, 1);
  r.flush();
  t.like(lines[1]?.[1], { count: 10_000 });
  const reasons = lines[1]?.[1].reasons as Record<string, number>;
  t.true(Object.keys(reasons).length <= 5, "the commonest five");
  t.true("(other reasons)" in reasons, "the rest counted together");
});

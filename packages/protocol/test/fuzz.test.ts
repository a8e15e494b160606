// Property-based fuzzing of the guest channel's parsers (issue 12 item 6): whatever a guest or a Dom0 writes
// into xenstore, a parser answers ok or a reason — it never throws, never hangs — and what it accepts encodes
// back to a message it accepts again, unchanged. Fixed seeds in CI; XENROAM_FUZZ_RUNS=N (and
// XENROAM_FUZZ_SEED=S) for a longer run.
import test from "ava";
import fc from "fast-check";
import {
  encodeMessage,
  MESSAGE_MAX_BYTES,
  parseAgentStatus,
  parseAnswer,
  parseArrival,
  parseRequest,
} from "../src/index.js";

const RUNS = Number(process.env.XENROAM_FUZZ_RUNS ?? 2000);
const SEED = Number(process.env.XENROAM_FUZZ_SEED ?? 1212);
const parsers = { parseRequest, parseAnswer, parseArrival, parseAgentStatus } as const;

/** Valid messages of every kind, to mutate: the interesting inputs are near-misses. */
const valid: unknown[] = [
  {
    v: 1,
    kind: "prepare",
    id: "m-1",
    site: "b",
    prefix: "2001:db8:b::/64",
    gateway: { linkLocal: "fe80::b:1", mac: "02:00:00:00:0b:01" },
    secondaryMac: "00:16:3e:00:00:02",
    timeoutMs: 10_000,
  },
  { v: 1, kind: "abort", id: "m-1" },
  {
    v: 1,
    id: "m-1",
    status: "prepared",
    moa: "2001:db8:b:0:216:3eff:fe00:2",
    ifname: "eth1",
    activation: {
      vm: "web1",
      hoa: "2001:db8:f::5",
      locator: "2001:db8:b:0:216:3eff:fe00:2",
      seq: 7,
      expiresAt: 1_800_000_000_000,
      kid: "AAAAAAAAAAA",
      sig: "A".repeat(86),
    },
  },
  { v: 1, id: "m-1", status: "error", reason: "no RA" },
  { v: 1, id: "m-1", status: "aborted" },
  { v: 1, id: "m-1", host: "hostb" },
];

/** A value with one field somewhere replaced, removed or added. */
function mutate(value: unknown, path: number[], replacement: unknown, op: number): unknown {
  if (typeof value !== "object" || value === null) return replacement;
  const o = Array.isArray(value) ? [...value] : { ...(value as Record<string, unknown>) };
  const keys = Object.keys(o);
  if (keys.length === 0 || path.length === 0) return replacement;
  const k = keys[(path[0] ?? 0) % keys.length] as string;
  const rec = o as Record<string, unknown>;
  if (op % 5 === 0) delete rec[k];
  else if (op % 5 === 1) rec[`x${k}`] = replacement;
  else rec[k] = mutate(rec[k], path.slice(1), replacement, op);
  return o;
}

const input = fc.oneof(
  fc.string({ maxLength: 300 }),
  fc.string({ unit: "binary", maxLength: 300 }),
  fc.jsonValue({ maxDepth: 4 }).map((v) => JSON.stringify(v) ?? "null"),
  fc
    .tuple(
      fc.constantFrom(...valid),
      fc.array(fc.nat(20), { maxLength: 4 }),
      fc.oneof(
        fc.jsonValue({ maxDepth: 2 }),
        fc.constantFrom("", "::", "fe80::1", "2001:db8::1", "x".repeat(600), -1, 1e308, null, [], {}),
      ),
      fc.nat(),
    )
    .map(([v, path, repl, op]) => JSON.stringify(mutate(v, path, repl, op)) ?? "null"),
  fc.constant(`{"pad":"${"x".repeat(MESSAGE_MAX_BYTES)}"}`),
);

for (const [name, parse] of Object.entries(parsers)) {
  test(`${name}: any text gets ok or a reason; what is accepted re-encodes to itself (seed ${SEED})`, (t) => {
    fc.assert(
      fc.property(input, (text) => {
        const r = parse(text);
        if (!r.ok) return typeof r.reason === "string" && r.reason.length > 0 && r.reason.length < 4096;
        const again = parse(encodeMessage(r.value));
        return again.ok && JSON.stringify(again.value) === JSON.stringify(r.value);
      }),
      { numRuns: RUNS, seed: SEED },
    );
    t.pass();
  });
}

test("the valid messages the fuzzer mutates are valid (else it only fuzzes the refusals)", (t) => {
  const texts = valid.map((v) => JSON.stringify(v));
  t.true(parseRequest(texts[0] as string).ok);
  t.true(parseRequest(texts[1] as string).ok);
  t.true(parseAnswer(texts[2] as string).ok);
  t.true(parseAnswer(texts[3] as string).ok);
  t.true(parseAnswer(texts[4] as string).ok);
  t.true(parseArrival(texts[5] as string).ok);
});

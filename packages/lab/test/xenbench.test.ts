import test from "ava";
import { renderSvg } from "../src/plot.js";
import {
  figureSpec,
  outage,
  parseEcho,
  parsePing,
  replyTimes,
  requestTimes,
  type RunRecord,
  sampleOf,
  table2Markdown,
} from "../src/xenbench.js";

/** Reply times every 20 ms from `from` to `to` (ms), none strictly inside the gaps. */
function every20(from: number, to: number, gaps: readonly [number, number][] = []): number[] {
  const out: number[] = [];
  for (let t = from; t <= to; t += 20) if (!gaps.some(([a, b]) => t > a && t < b)) out.push(t);
  return out;
}

test("ping -D lines: time, address (with its colons) and sequence; duplicates and errors skipped", (t) => {
  const text = [
    "PING 2001:db8:a:0:216:3eff:fe00:20 (2001:db8:a:0:216:3eff:fe00:20) 56 data bytes",
    "[1796306688.210114] 64 bytes from 2001:db8:a:0:216:3eff:fe00:20: icmp_seq=1 ttl=63 time=1.23 ms",
    "[1796306688.230114] 64 bytes from 2001:db8:a:0:216:3eff:fe00:20: icmp_seq=1 ttl=63 time=21.2 ms (DUP!)",
    "[1796306688.300000] From 2001:db8:c::1 icmp_seq=3 Destination unreachable: Address unreachable",
    "[1796306688.410] 64 bytes from 2001:db8:f::5: icmp_seq=7 ttl=63 time=9 ms",
  ].join("\n");
  t.deepEqual(parsePing(text), [
    { atMs: 1796306688210.114, from: "2001:db8:a:0:216:3eff:fe00:20", seq: 1 },
    { atMs: 1796306688410, from: "2001:db8:f::5", seq: 7 },
  ]);
});

test("the VM's probe: requests at the CN, and replies by when the CN sent those the VM acknowledged", (t) => {
  const text = [
    '{"t":1000,"i":"x","s":1,"src":"2001:db8:f::5","a":[]}',
    '{"t":1020,"i":"x","s":2,"src":"2001:db8:f::5","a":[1]}',
    '{"t":1040,"i":"x","s":3,"src":"2001:db8:f::5","a":[]}', // the reply to 2 was lost
    '{"t":1060,"i":"x","s":4,"src":"2001:db8:f::5","a":[3]}',
    '{"t":1070,"i":"y","s":1,"src":"2001:db8:f::5","a":[]}', // another probe process: its own numbering
    '{"t":1090,"i":"y","s":2,"src":"2001:db8:f::5","a":[1]}',
    '{"t":10',
  ].join("\n");
  const recs = parseEcho(text);
  t.is(recs.length, 6);
  t.deepEqual(requestTimes(recs), [1000, 1020, 1040, 1060, 1070, 1090]);
  t.deepEqual(replyTimes(recs), [1000, 1040, 1070]);
});

test("T_DW is the silence from the last reply before the stop to the first after; T_ALL ends there", (t) => {
  const times = every20(0, 20_000, [[9000, 11_500]]);
  const o = outage(times, 5000, 20_000);
  t.is(o.dwMs, 2500);
  t.is(o.lastBeforeMs, 9000);
  t.is(o.firstAfterMs, 11_500);
  t.is(o.restoredMs, 11_500);
  t.true(o.steadyBefore);
});

test("traffic is restored after the last long silence, even when a longer one came first", (t) => {
  const times = every20(0, 30_000, [
    [9000, 14_000],
    [16_000, 17_500],
  ]);
  const o = outage(times, 5000, 30_000);
  t.is(o.dwMs, 5000);
  t.is(o.restoredMs, 17_500, "the second silence (1.5 s) also cut the traffic");
});

test("a direction silent at the end of its window did not recover", (t) => {
  const o = outage(every20(0, 9000), 5000, 70_000);
  t.is(o.dwMs, null);
  t.is(o.restoredMs, null);
  t.is(o.trailingSilenceMs, 70_000 - 9000);
});

test("no reply before the start: the silence is counted from the start, and said so", (t) => {
  const o = outage(every20(8000, 20_000), 5000, 20_000);
  t.false(o.steadyBefore);
  t.is(o.dwMs, 3000);
});

const run = (over: Partial<RunRecord> = {}): RunRecord => ({
  subject: "method",
  link: "shaped",
  memoryMb: 256,
  run: 1,
  from: "xa",
  to: "xb",
  startMs: 100_000,
  preparedMs: 110_000,
  returnedMs: 160_000,
  endMs: 170_000,
  ok: true,
  pings: [
    { target: "2001:db8:f::5", role: "primary", log: "hoa.log" },
    { target: "2001:db8:b:0:216:3eff:fe00:11", role: "own", log: "own.log" },
  ],
  echoLog: "echo.log",
  ...over,
});

function logs(vmGap: [number, number], cnGap: [number, number]) {
  const ping = (gap: [number, number]) =>
    every20(90_000, 170_000, [gap])
      .map((t, k) => `[${(t / 1000).toFixed(3)}] 64 bytes from 2001:db8:f::5: icmp_seq=${k + 1} ttl=63`)
      .join("\n");
  const echo = every20(90_000, 170_000, [vmGap])
    .map((t, k) => JSON.stringify({ t, i: "s", s: k + 1, src: "2001:db8:f::5", a: k > 0 ? [k] : [] }))
    .join("\n");
  return { "hoa.log": ping(cnGap), "own.log": ping(cnGap), "echo.log": echo };
}

test("a sample: T_DW the longer direction, T_ALL from the start to both restored, where it was probed", (t) => {
  const s = sampleOf(run(), logs([150_000, 152_000], [150_000, 153_000]));
  t.true(s.recovered);
  t.is(s.tDwMs, 3000, "CN->VM's, the longer");
  t.is(s.tAllMs, 153_000 - 100_000);
  t.is(s.tAllFromMigrateMs, 153_000 - 110_000, "the method's T_ALL without its prepare");
  t.is(s.startupMs, undefined, "no report, no start-up");
  t.is(sampleOf(run({ report: { startedAt: 112_500 } }), logs([1, 2], [3, 4])).startupMs, 2500);
  t.deepEqual(s.directions.cnToVm?.probedAt, ["2001:db8:f::5"]);
  t.deepEqual(s.directions.cnToVmOwn?.probedAt, ["2001:db8:b:0:216:3eff:fe00:11"]);
  t.deepEqual(s.directions.vmToCn?.probedAt, ["2001:db8:f::5"]);
  t.is(s.directions.vmToCn?.dwMs, 2000, "the reply to each request acknowledged by the next");
  t.false("pings" in s, "log paths stay out of the sample");
});

test("a run that never recovered, or whose xenroam failed, is kept and marked", (t) => {
  const silent = sampleOf(run(), logs([150_000, 200_000], [150_000, 153_000]));
  t.false(silent.recovered);
  t.is(silent.tDwMs, null);
  t.is(silent.directions.vmToCn?.dwMs, null);
  const failed = sampleOf(
    run({ ok: false, error: "xenroam exit 1" }),
    logs([150_000, 151_000], [150_000, 151_000]),
  );
  t.false(failed.recovered);
  t.is(failed.error, "xenroam exit 1");
});

test("Table 2: each cell ours (the paper's), partial recoveries counted, the paper's rows kept", (t) => {
  const good = sampleOf(run(), logs([150_000, 152_000], [150_000, 153_000]));
  const bad = sampleOf(run({ run: 2 }), logs([150_000, 200_000], [150_000, 153_000]));
  const md = table2Markdown([good, bad], { rateMbit: 100 });
  const rows = md.split("\n");
  t.is(rows.length, 2 + 5, "32..512 MB");
  const row256 = rows.find((r) => r.startsWith("| 256 |")) ?? "";
  t.true(row256.includes("| 3.00 [1/2] (0.66) | 53.00 [1/2] (23.96) |"), row256);
  t.true(row256.includes("| — (0.60) | — (3.42) |"), "unshaped: nothing measured, the paper's 1000 Mbps");
  t.true(rows[0]?.includes("with the method, 100 Mbps: T_DW"));
});

test("the Figure-4 spec compiles and renders to SVG headless", async (t) => {
  const s = sampleOf(run(), logs([150_000, 152_000], [150_000, 153_000]));
  const spec = figureSpec([s, { ...s, subject: "ordinary", memoryMb: 512 }], { rateMbit: 100 });
  const svg = await renderSvg(spec);
  t.true(svg.startsWith("<svg"));
  t.true(svg.includes("T_ALL"));
  t.true(svg.includes("Watanabe et al."));
});

import { readFileSync } from "node:fs";
import test from "ava";
import { renderSvg } from "../src/plot.js";
import {
  parseScaleFile,
  runLine,
  type ScaleFigureData,
  ScaleFigureError,
  scaleFigureOf,
  scaleFigureSpec,
  ScaleFileError,
  type ScaleSource,
} from "../src/scalefigure.js";

// The runs the README's tables and figure come from (from dist/test/ to the repository's docs/bench/).
const kept = (name: string): ScaleSource => {
  const file = `docs/bench/${name}`;
  const text = readFileSync(new URL(`../../../../${file}`, import.meta.url), "utf8");
  return { file, run: parseScaleFile(JSON.parse(text), file) };
};
const SCALE = kept("scale-lab-2026-12-05.json");
const FANOUT = kept("fanout-lab-2026-12-05.json");

interface Panel {
  title: { text: string; subtitle: string };
  data?: { values: Array<Record<string, unknown>> };
  layer: Array<{ data?: { values: Array<Record<string, unknown>> }; layer?: unknown[] }>;
}
const panelsOf = (data: ScaleFigureData, caption: readonly string[] = []) =>
  (scaleFigureSpec(data, caption) as unknown as { hconcat: Panel[] }).hconcat;
/** A panel's own points (its first layer's data, or its data) and its target rule's value, if any. */
const pointsOf = (p: Panel) => p.layer[0]?.data?.values ?? p.data?.values ?? [];
const targetOf = (p: Panel) => p.layer[1]?.data?.values[0]?.ms;

test("the kept runs parse: the fan-out from its own run, prepare and evacuation from the scale run", (t) => {
  t.is(FANOUT.run.fanout.length, 6);
  t.deepEqual(FANOUT.run.prepare, []);
  t.is(SCALE.run.fanout.length, 0, "the scale run's fan-out was left out (see its note)");
  t.deepEqual(
    SCALE.run.prepare.map((p) => p.vms),
    [10, 100],
  );
  t.deepEqual(
    SCALE.run.evacuation.map((e) => [e.vms, e.rows.length, e.single.networkMs.length]),
    [
      [10, 20, 6],
      [20, 40, 6],
    ],
  );
  t.is(SCALE.run.at, "2026-12-05T01:51:05.365Z");
});

test("the combined figure takes each part from its run and names both runs in panel order", (t) => {
  const { data, caption } = scaleFigureOf(SCALE, FANOUT);
  t.is(data.fanout, FANOUT.run.fanout);
  t.is(data.prepare, SCALE.run.prepare);
  t.is(data.evacuation, SCALE.run.evacuation);
  t.deepEqual(caption, [
    "fan-out: docs/bench/fanout-lab-2026-12-05.json, 2026-12-05 02:44 UTC (AMD EPYC, 2 cores)",
    "prepare, evacuation: docs/bench/scale-lab-2026-12-05.json, 2026-12-05 01:51 UTC (AMD EPYC, 2 cores)",
  ]);
  t.is(runLine("fan-out, prepare", undefined, {}), "fan-out, prepare: this run");
});

test("(a) fan-out: every store and count's p50 and p95 as measured, on a log axis, the 100 ms target", (t) => {
  const [a] = panelsOf(scaleFigureOf(SCALE, FANOUT).data);
  if (!a) return t.fail();
  t.regex(a.title.text, /^\(a\) fan-out/);
  t.is(a.title.subtitle, "20 activations a point; p50 and p95");
  const points = pointsOf(a);
  t.is(points.length, 12);
  for (const f of FANOUT.run.fanout) {
    const store = f.store === "sqlite" ? "SQLite" : "etcd";
    for (const [statistic, ms] of [
      ["p50", f.p50Ms],
      ["p95", f.p95Ms],
    ] as const)
      t.true(
        points.some(
          (p) => p.store === store && p.watchers === f.watchers && p.statistic === statistic && p.ms === ms,
        ),
        `${store} ${f.watchers} ${statistic} ${ms}`,
      );
  }
  t.is(targetOf(a), 100);
  const x = (a.layer[0]?.layer?.[0] as { encoding: { x: { scale: { type: string }; axis: unknown } } })
    .encoding.x;
  t.is(x.scale.type, "log");
  t.like(x.axis, { values: [10, 100, 1000] });
});

test("(b) prepare: p50 and p95 against the VMs prepared at once, the peak RSS once a count, the 3 s target", (t) => {
  const [, b] = panelsOf(scaleFigureOf(SCALE, FANOUT).data);
  if (!b) return t.fail();
  t.regex(b.title.text, /^\(b\)/);
  t.deepEqual(
    pointsOf(b).map((p) => [p.vms, p.statistic, p.ms, p.rss]),
    [
      [10, "p50", 1373, "peak RSS 78.9 MB"],
      [10, "p95", 1422, ""],
      [100, "p50", 3130, ""],
      [100, "p95", 3390, "peak RSS 102.5 MB"],
    ],
  );
  t.is(targetOf(b), 3000);
});

test("(c) evacuation: every VM's and every single migration's downtime, and both p50s as kept", (t) => {
  const [, , c] = panelsOf(scaleFigureOf(SCALE, FANOUT).data);
  if (!c) return t.fail();
  t.regex(c.title.text, /^\(c\)/);
  const points = pointsOf(c);
  for (const e of SCALE.run.evacuation) {
    const mine = points.filter((p) => p.vms === `${e.vms} VMs, --parallel ${e.parallel}`);
    const each = mine.filter((p) => p.kind === "each VM of the evacuation");
    const single = mine.filter((p) => p.kind === "single migration");
    t.deepEqual(
      each.filter((p) => !p.p50).map((p) => p.ms),
      e.rows.map((r) => r.networkMs),
    );
    t.deepEqual(
      single.filter((p) => !p.p50).map((p) => p.ms),
      [...e.single.networkMs],
    );
    t.deepEqual(
      each.filter((p) => p.p50).map((p) => p.ms),
      [e.p50Ms],
    );
    t.deepEqual(
      single.filter((p) => p.p50).map((p) => p.ms),
      [e.single.p50Ms],
    );
  }
});

test("the figure renders to SVG headless with its three panels, targets and caption", async (t) => {
  const { data, caption } = scaleFigureOf(SCALE, FANOUT);
  const svg = await renderSvg(scaleFigureSpec(data, caption));
  t.true(svg.startsWith("<svg"));
  for (const text of [
    "(a) fan-out of an activation",
    "(b) one host preparing many VMs",
    "(c) evacuation vs a single migration",
    "target: p95 ≤ 100 ms",
    "target: p95 ≤ 3 s",
    "peak RSS 102.5 MB",
    "1,000",
    "docs/bench/fanout-lab-2026-12-05.json",
  ])
    t.true(svg.includes(text), text);
  t.false(svg.includes("NaN"));
});

test("only the parts measured are drawn; a percentile of nothing (null) is left out; one count draws", async (t) => {
  const run = parseScaleFile(
    {
      fanout: [{ store: "etcd", watchers: 10, activations: 5, p50Ms: null, p95Ms: 12 }],
      prepare: [],
      evacuation: [],
    },
    "one.json",
  );
  const { data, caption } = scaleFigureOf({ file: "one.json", run });
  t.deepEqual(caption, ["fan-out: one.json"]);
  const panels = panelsOf(data);
  t.is(panels.length, 1);
  t.deepEqual(
    pointsOf(panels[0] as Panel).map((p) => [p.statistic, p.ms]),
    [["p95", 12]],
  );
  const svg = await renderSvg(scaleFigureSpec(data));
  t.true(svg.includes("5 activations a point"));
  t.false(svg.includes("NaN"));
});

test("a file that is not a scale result is refused with each problem's path", (t) => {
  const err = t.throws(
    () =>
      parseScaleFile(
        { prepare: [{ vms: 0, p50Ms: "1", p95Ms: 2, peakRssMb: 3 }], fanout: [{ store: "redis" }] },
        "x.json",
      ),
    { instanceOf: ScaleFileError },
  );
  t.regex(err.message, /^x\.json is not a `xenroam-lab scale --json` result:\n/);
  t.regex(err.message, /- fanout\[0\]\.store: /);
  t.regex(err.message, /- prepare\[0\]\.vms: /);
  t.regex(err.message, /- prepare\[0\]\.p50Ms: /);
  t.throws(() => parseScaleFile([1, 2], "y.json"), { message: /y\.json .*\n {2}- \(top level\): / });
});

test("nothing to draw, or a fan-out file without a fan-out, is refused naming the file", (t) => {
  const empty = { file: "empty.json", run: parseScaleFile({}, "empty.json") };
  t.throws(() => scaleFigureOf(empty), {
    instanceOf: ScaleFigureError,
    message: /^empty\.json has no fan-out, prepare or evacuation figures to draw/,
  });
  t.throws(() => scaleFigureOf(FANOUT, SCALE), {
    instanceOf: ScaleFigureError,
    message: "docs/bench/scale-lab-2026-12-05.json has no fan-out figures (was it run with --fanout '')?",
  });
  t.throws(() => scaleFigureSpec({ fanout: [], prepare: [], evacuation: [] }), {
    instanceOf: ScaleFigureError,
  });
});

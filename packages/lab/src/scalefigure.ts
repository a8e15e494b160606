// The figures at scale (`xenroam-lab scale`) as one vega-lite figure for the README, and the validation of the
// result files it is drawn from. Pure: the SVG is rendered by plot.ts.
import type { TopLevelSpec } from "vega-lite";
import { z } from "zod";
import type { FanoutFigure } from "./fanout.js";
import type { EvacuationFigure, PrepareFigure } from "./scale.js";

/** The issue's targets, drawn as rules: a fan-out p95 at or under 100 ms, a prepare p95 at or under 3 s. */
export const FANOUT_TARGET_MS = 100;
export const PREPARE_TARGET_MS = 3000;

/** What the figure draws of a `scale` result: `runScale`'s own figures, or those read back from its --json. */
export interface ScaleFigureData {
  readonly fanout: ReadonlyArray<
    Pick<FanoutFigure, "store" | "watchers" | "activations" | "p50Ms" | "p95Ms">
  >;
  readonly prepare: ReadonlyArray<Pick<PrepareFigure, "vms" | "p50Ms" | "p95Ms" | "peakRssMb">>;
  readonly evacuation: ReadonlyArray<
    Pick<EvacuationFigure, "vms" | "parallel" | "p50Ms"> & {
      readonly single: Pick<EvacuationFigure["single"], "networkMs" | "p50Ms">;
      readonly rows: ReadonlyArray<Pick<EvacuationFigure["rows"][number], "networkMs">>;
    }
  >;
}

/** One `scale --json` file, as far as the figure needs it; `at` and `machine` say which run it was. */
export interface ScaleFile extends ScaleFigureData {
  readonly at?: string;
  readonly machine?: Readonly<Record<string, string>>;
}

export class ScaleFileError extends Error {
  override readonly name = "ScaleFileError";
  constructor(
    readonly source: string,
    readonly problems: readonly string[],
  ) {
    super(
      `${source} is not a \`xenroam-lab scale --json\` result:\n${problems.map((p) => `  - ${p}`).join("\n")}`,
    );
  }
}

/** The figures given cannot make a figure (nothing measured in them). */
export class ScaleFigureError extends Error {
  override readonly name = "ScaleFigureError";
}

const count = z.number().int().positive();
// A percentile of nothing is NaN in the run, null once written as JSON: such a point is not drawn.
const ms = z.number().nonnegative().nullable();

const scaleFileSchema = z.object({
  fanout: z
    .array(
      z.object({
        store: z.enum(["sqlite", "etcd"]),
        watchers: count,
        activations: count,
        p50Ms: ms,
        p95Ms: ms,
      }),
    )
    .default([]),
  prepare: z
    .array(z.object({ vms: count, p50Ms: ms, p95Ms: ms, peakRssMb: z.number().nonnegative().nullable() }))
    .default([]),
  evacuation: z
    .array(
      z.object({
        vms: count,
        parallel: count,
        p50Ms: ms,
        single: z.object({ networkMs: z.array(z.number().nonnegative()), p50Ms: ms }),
        rows: z.array(z.object({ networkMs: z.number().nonnegative() })),
      }),
    )
    .default([]),
  at: z.string().optional(),
  machine: z.record(z.string(), z.string()).optional(),
});

const pathText = (path: readonly PropertyKey[]) =>
  path.reduce<string>(
    (acc, k) => (typeof k === "number" ? `${acc}[${k}]` : acc ? `${acc}.${String(k)}` : String(k)),
    "",
  );

/** Validates a parsed `scale --json` file; `source` names it in errors. Nulls (percentiles of nothing) kept. */
export function parseScaleFile(value: unknown, source: string): ScaleFile {
  const r = scaleFileSchema.safeParse(value);
  if (!r.success)
    throw new ScaleFileError(
      source,
      r.error.issues.map((i) => `${pathText(i.path) || "(top level)"}: ${i.message}`),
    );
  const { at, machine, ...figures } = r.data;
  const nan = (v: number | null) => v ?? Number.NaN;
  return {
    fanout: figures.fanout.map((f) => ({ ...f, p50Ms: nan(f.p50Ms), p95Ms: nan(f.p95Ms) })),
    prepare: figures.prepare.map((p) => ({
      ...p,
      p50Ms: nan(p.p50Ms),
      p95Ms: nan(p.p95Ms),
      peakRssMb: nan(p.peakRssMb),
    })),
    evacuation: figures.evacuation.map((e) => ({
      ...e,
      p50Ms: nan(e.p50Ms),
      single: { ...e.single, p50Ms: nan(e.single.p50Ms) },
    })),
    ...(at !== undefined ? { at } : {}),
    ...(machine !== undefined ? { machine } : {}),
  };
}

/** A caption line naming a run: what it gave the figure, where it is kept, when it ran, on what. */
export function runLine(
  what: string,
  file: string | undefined,
  run: Pick<ScaleFile, "at" | "machine">,
): string {
  const m = run.machine;
  const machine = m ? [m.cpu, m.cores ? `${m.cores.split(" ")[0]} cores` : undefined].filter(Boolean) : [];
  return [
    `${what}: ${file ?? "this run"}`,
    run.at ? `, ${run.at.slice(0, 16).replace("T", " ")} UTC` : "",
    machine.length > 0 ? ` (${machine.join(", ")})` : "",
  ].join("");
}

/** A result file (or a run's own result) and where it is kept (none: this run, not written). */
export interface ScaleSource {
  readonly file?: string;
  readonly run: ScaleFile;
}

/**
 * What to draw from a `scale` result and, optionally, another whose fan-out replaces the first's (the kept fan-out
 * was run on its own: `scale --prepare '' --evacuate '' --json …`), with a caption line for each file used.
 */
export function scaleFigureOf(
  scale: ScaleSource | undefined,
  fanout?: ScaleSource,
): { readonly data: ScaleFigureData; readonly caption: readonly string[] } {
  if (fanout && fanout.run.fanout.length === 0)
    throw new ScaleFigureError(
      `${fanout.file ?? "the fan-out run"} has no fan-out figures (was it run with --fanout '')?`,
    );
  const data: ScaleFigureData = {
    fanout: (fanout ?? scale)?.run.fanout ?? [],
    prepare: scale?.run.prepare ?? [],
    evacuation: scale?.run.evacuation ?? [],
  };
  if (data.fanout.length + data.prepare.length + data.evacuation.length === 0)
    throw new ScaleFigureError(
      `${scale?.file ?? "this run"} has no fan-out, prepare or evacuation figures to draw` +
        (scale?.file ? " (is it what `xenroam-lab scale --json` wrote?)" : ""),
    );
  // In the panels' order: the fan-out's run first.
  const caption: string[] = fanout ? [runLine("fan-out", fanout.file, fanout.run)] : [];
  if (scale) {
    const parts = [
      ...(!fanout && data.fanout.length > 0 ? ["fan-out"] : []),
      ...(data.prepare.length > 0 ? ["prepare"] : []),
      ...(data.evacuation.length > 0 ? ["evacuation"] : []),
    ];
    if (parts.length > 0) caption.push(runLine(parts.join(", "), scale.file, scale.run));
  }
  return { data, caption };
}

/** One panel of the figure's row. */
type Panel = Extract<TopLevelSpec, { hconcat: unknown }>["hconcat"][number];

const STORE_LABEL: Readonly<Record<string, string>> = { sqlite: "SQLite", etcd: "etcd" };
const WIDTH = 230;
const HEIGHT = 220;
const finite = (v: number) => Number.isFinite(v);
/** A log axis with ticks at the counts measured, thousands grouped (1,000). */
const countAxis = (title: string, counts: readonly number[], padding = 16) => ({
  title,
  scale: { type: "log" as const, nice: false, padding },
  axis: { values: [...new Set(counts)].sort((a, b) => a - b), format: ",d", grid: false },
});
/**
 * A target drawn as a dashed red rule, labelled just above it from the smallest count on (a label's x must be a
 * datum: a value or no x at all fails in vega's parser inside a concat, "Duplicate signal name: width").
 */
const targetLayer = (ms: number, label: string, fromCount: number) => ({
  data: { values: [{ ms, label }] },
  layer: [
    {
      mark: { type: "rule" as const, color: "#d62728", strokeDash: [4, 3] },
      encoding: { y: { field: "ms", type: "quantitative" as const } },
    },
    {
      mark: { type: "text" as const, color: "#d62728", align: "left" as const, dy: -6, fontSize: 10 },
      encoding: {
        x: { datum: fromCount, type: "quantitative" as const },
        y: { field: "ms", type: "quantitative" as const },
        text: { field: "label" },
      },
    },
  ],
});

/**
 * One figure, a panel for each part measured: (a) the fan-out's p50/p95 against the watchers, SQLite and etcd;
 * (b) each VM's prepare p50/p95 against the VMs prepared at once, xenroam's peak RSS beside each; (c) each VM's
 * network downtime in the evacuations beside the single migrations', their p50s as ticks. `caption`: a line
 * per run drawn from (`runLine`).
 */
export function scaleFigureSpec(data: ScaleFigureData, caption: readonly string[] = []): TopLevelSpec {
  const panels: Panel[] = [];
  const statDash = {
    field: "statistic",
    type: "nominal" as const,
    title: null,
    sort: ["p50", "p95"],
    scale: {
      domain: ["p50", "p95"],
      range: [
        [1, 0],
        [5, 3],
      ],
    },
    legend: { symbolType: "stroke", symbolStrokeWidth: 2, symbolSize: 300 },
  };

  const fanout = data.fanout.flatMap((f) =>
    (
      [
        ["p50", f.p50Ms],
        ["p95", f.p95Ms],
      ] as const
    )
      .filter(([, v]) => finite(v))
      .map(([statistic, v]) => ({
        store: STORE_LABEL[f.store] ?? f.store,
        watchers: f.watchers,
        statistic,
        ms: v,
      })),
  );
  if (fanout.length > 0) {
    const each = [...new Set(data.fanout.map((f) => f.activations))];
    const activations = each.length === 1 ? String(each[0]) : `${Math.min(...each)}–${Math.max(...each)}`;
    const x = {
      field: "watchers",
      type: "quantitative" as const,
      ...countAxis(
        "correspondents watching",
        fanout.map((f) => f.watchers),
      ),
    };
    const y = {
      field: "ms",
      type: "quantitative" as const,
      title: "activation → receipt (ms)",
    };
    const color = {
      field: "store",
      type: "nominal" as const,
      title: "store",
      scale: { domain: ["SQLite", "etcd"], range: ["#4c78a8", "#f58518"] },
    };
    panels.push({
      title: {
        text: "(a) fan-out of an activation",
        subtitle: `${activations} activations a point; p50 and p95`,
      },
      width: WIDTH,
      height: HEIGHT,
      layer: [
        {
          data: { values: fanout },
          layer: [
            {
              mark: { type: "line" },
              encoding: { x, y, color, strokeDash: statDash, detail: { field: "statistic" } },
            },
            { mark: { type: "point", filled: true, size: 36 }, encoding: { x, y, color } },
          ],
        },
        targetLayer(
          FANOUT_TARGET_MS,
          `target: p95 ≤ ${FANOUT_TARGET_MS} ms`,
          Math.min(...fanout.map((f) => f.watchers)),
        ),
      ],
      resolve: { scale: { color: "independent", strokeDash: "independent" } },
    });
  }

  const largest = Math.max(...data.prepare.map((p) => p.vms));
  const prepare = data.prepare.flatMap((p) =>
    (
      [
        ["p50", p.p50Ms],
        ["p95", p.p95Ms],
      ] as const
    )
      .filter(([, v]) => finite(v))
      .map(([statistic, v]) => ({
        vms: p.vms,
        statistic,
        ms: v,
        // xenroam's peak RSS, once a count: above the p95 at the largest count (the lines come from its lower
        // left), below right of the p50 at the others (the lines leave them to the upper right).
        rss:
          finite(p.peakRssMb) && statistic === (p.vms === largest ? "p95" : "p50")
            ? `peak RSS ${p.peakRssMb} MB`
            : "",
        last: p.vms === largest,
      })),
  );
  if (prepare.length > 0) {
    const x = {
      field: "vms",
      type: "quantitative" as const,
      // Room for the RSS labels, centred on the points at either end.
      ...countAxis(
        "VMs prepared at once (one host)",
        prepare.map((p) => p.vms),
        48,
      ),
    };
    const y = { field: "ms", type: "quantitative" as const, title: "prepare, each VM (ms)" };
    panels.push({
      title: {
        text: "(b) one host preparing many VMs",
        subtitle: "one xenroam prepare; labels: its peak RSS",
      },
      width: WIDTH,
      height: HEIGHT,
      layer: [
        {
          data: { values: prepare },
          layer: [
            {
              mark: { type: "line", color: "#54a24b" },
              encoding: { x, y, strokeDash: statDash, detail: { field: "statistic" } },
            },
            { mark: { type: "point", filled: true, size: 36, color: "#54a24b" }, encoding: { x, y } },
            {
              transform: [{ filter: "datum.rss !== '' && datum.last" }],
              mark: { type: "text", align: "center", dy: -12, fontSize: 10, color: "#333" },
              encoding: { x, y, text: { field: "rss" } },
            },
            {
              transform: [{ filter: "datum.rss !== '' && !datum.last" }],
              mark: { type: "text", align: "left", dx: 6, dy: 14, fontSize: 10, color: "#333" },
              encoding: { x, y, text: { field: "rss" } },
            },
          ],
        },
        targetLayer(
          PREPARE_TARGET_MS,
          `target: p95 ≤ ${PREPARE_TARGET_MS / 1000} s`,
          Math.min(...prepare.map((p) => p.vms)),
        ),
      ],
      resolve: { scale: { strokeDash: "independent" } },
    });
  }

  const SINGLE = "single migration";
  const EACH = "each VM of the evacuation";
  const evacuation = data.evacuation.flatMap((e) => {
    const vms = `${e.vms} VMs, --parallel ${e.parallel}`;
    return [
      ...e.rows.map((r) => ({ vms, kind: EACH, ms: r.networkMs, p50: false })),
      ...e.single.networkMs.map((v) => ({ vms, kind: SINGLE, ms: v, p50: false })),
      ...(finite(e.p50Ms) ? [{ vms, kind: EACH, ms: e.p50Ms, p50: true }] : []),
      ...(finite(e.single.p50Ms) ? [{ vms, kind: SINGLE, ms: e.single.p50Ms, p50: true }] : []),
    ];
  });
  if (evacuation.length > 0) {
    const x = {
      field: "vms",
      type: "ordinal" as const,
      title: "VMs evacuated, there and back",
      sort: null,
      axis: { labelAngle: 0 },
    };
    const y = {
      field: "ms",
      type: "quantitative" as const,
      title: "network downtime (ms)",
      scale: { zero: false },
    };
    const xOffset = { field: "kind", type: "nominal" as const, sort: [SINGLE, EACH] };
    const color = {
      field: "kind",
      type: "nominal" as const,
      title: null,
      sort: [SINGLE, EACH],
      scale: { domain: [SINGLE, EACH], range: ["#9d755d", "#b279a2"] },
    };
    panels.push({
      title: {
        text: "(c) evacuation vs a single migration",
        subtitle: "probe gap less pause; ticks: p50s",
      },
      width: WIDTH,
      height: HEIGHT,
      data: { values: evacuation },
      layer: [
        {
          transform: [{ filter: "!datum.p50" }],
          mark: { type: "point", opacity: 0.55, size: 24 },
          encoding: { x, xOffset, y, color },
        },
        {
          transform: [{ filter: "datum.p50" }],
          mark: { type: "tick", thickness: 3, size: 26 },
          encoding: { x, xOffset, y, color },
        },
      ],
    });
  }

  if (panels.length === 0)
    throw new ScaleFigureError("nothing to draw: no fan-out, prepare or evacuation figures");
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    title: {
      text: "xenroam at scale (xenroam-lab scale)",
      ...(caption.length > 0 ? { subtitle: [...caption] } : {}),
      anchor: "start",
    },
    hconcat: panels,
    // Each panel as wide as its plot: vega estimates text widths without a canvas (too wide), and the panels'
    // centred titles would otherwise push them apart. The spacing leaves room for the next one's y axis.
    bounds: "flush",
    spacing: 95,
    resolve: {
      scale: { color: "independent", strokeDash: "independent" },
      legend: { color: "independent", strokeDash: "independent" },
    },
    config: {
      legend: { orient: "bottom", direction: "vertical", labelLimit: 300 },
      title: { subtitleColor: "#555" },
      view: { stroke: "#ddd" },
    },
  };
}

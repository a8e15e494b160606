// The real-Xen benchmark's arithmetic (scripts/xen/bench.sh): T_DW and T_ALL from the probe logs, the samples in
// the layout of the paper's Table 2 beside the paper's own figures, and a Figure-4-style vega-lite spec. Pure.
import type { TopLevelSpec } from "vega-lite";

export type Subject = "method" | "without" | "ordinary";
export type Link = "shaped" | "unshaped";

/** The paper's column order. */
export const SUBJECTS: readonly Subject[] = ["method", "without", "ordinary"];
export const LINKS: readonly Link[] = ["shaped", "unshaped"];

export const SUBJECT_LABEL: Readonly<Record<Subject, string>> = {
  method: "global, with the method",
  without: "global, without the method",
  ordinary: "ordinary (one subnet)",
};
const SUBJECT_SHORT: Readonly<Record<Subject, string>> = {
  method: "with the method",
  without: "without",
  ordinary: "ordinary",
};

/** The VM and the CN send a probe every this many ms. */
export const PROBE_INTERVAL_MS = 20;
/** A silence this long after which traffic resumed counts for T_ALL ("traffic restored" after the last one). */
export const RESTORED_GAP_MS = 1000;
/** A direction whose last reply is this much older than the end of its window did not recover. */
export const NOT_RECOVERED_MS = 1000;

/**
 * Table 2 of Watanabe et al. (seeds/002, "Experimental results"): seconds, each the mean of three runs, for
 * [T_DW, T_ALL] at 100 Mbps and at 1000 Mbps. Xen 3.2, PV guests of 32–512 MB, MAT for the global subjects.
 */
export const PAPER_TABLE2: Readonly<
  Record<number, Readonly<Record<Subject, { readonly mbit100: Pair; readonly mbit1000: Pair }>>>
> = {
  32: {
    method: { mbit100: [0.63, 3.68], mbit1000: [0.57, 1.38] },
    without: { mbit100: [3.26, 6.71], mbit1000: [2.67, 3.59] },
    ordinary: { mbit100: [0.37, 3.36], mbit1000: [0.45, 1.02] },
  },
  64: {
    method: { mbit100: [0.72, 6.7], mbit1000: [0.61, 1.68] },
    without: { mbit100: [2.76, 9.09], mbit1000: [2.76, 3.88] },
    ordinary: { mbit100: [0.49, 6.04], mbit1000: [0.39, 1.6] },
  },
  128: {
    method: { mbit100: [0.7, 12.45], mbit1000: [0.62, 2.2] },
    without: { mbit100: [3.56, 15.68], mbit1000: [2.93, 4.8] },
    ordinary: { mbit100: [0.47, 11.73], mbit1000: [0.37, 2.35] },
  },
  256: {
    method: { mbit100: [0.66, 23.96], mbit1000: [0.6, 3.42] },
    without: { mbit100: [2.71, 26.67], mbit1000: [2.82, 5.68] },
    ordinary: { mbit100: [0.53, 23.3], mbit1000: [0.43, 3.61] },
  },
  512: {
    method: { mbit100: [0.74, 46.97], mbit1000: [0.66, 6.2] },
    without: { mbit100: [4.87, 52.72], mbit1000: [3.05, 8.43] },
    ordinary: { mbit100: [0.4, 46.07], mbit1000: [0.53, 5.9] },
  },
};
type Pair = readonly [dw: number, all: number];

/** Our shaped link stands beside the paper's 100 Mbps, the unshaped one beside its 1000 Mbps. */
function paperPair(memoryMb: number, subject: Subject, link: Link): Pair | undefined {
  const row = PAPER_TABLE2[memoryMb]?.[subject];
  return row && (link === "shaped" ? row.mbit100 : row.mbit1000);
}

// ---- probe logs ----

/** iputils `ping -D` reply lines: `[1796306688.210114] 64 bytes from ADDR: icmp_seq=N ttl=63 time=1.2 ms`. */
export function parsePing(text: string): { atMs: number; from: string; seq: number }[] {
  const out: { atMs: number; from: string; seq: number }[] = [];
  const seen = new Set<number>();
  for (const line of text.split("\n")) {
    const m = /^\[(\d+(?:\.\d+)?)\] \d+ bytes from (\S+): icmp_seq=(\d+)/.exec(line);
    if (!m) continue;
    const seq = Number(m[3]);
    if (seen.has(seq)) continue; // (DUP!)
    seen.add(seq);
    out.push({ atMs: Number(m[1]) * 1000, from: m[2] ?? "", seq });
  }
  return out;
}

/** One line of `probe.mjs echo`: a VM's datagram as it reached the CN, with the replies it says it got. */
export interface EchoRecord {
  /** Arrival at the CN (ms, CN clock); the CN answered at once. */
  readonly t: number;
  /** The sender's session (one per probe process). */
  readonly i: string;
  readonly s: number;
  readonly src: string;
  /** Sequence numbers whose replies reached the VM, not reported before. */
  readonly a: readonly number[];
}

export function parseEcho(text: string): EchoRecord[] {
  const out: EchoRecord[] = [];
  for (const line of text.split("\n")) {
    if (!line.startsWith("{")) continue;
    try {
      const r = JSON.parse(line) as Partial<EchoRecord>;
      if (typeof r.t === "number" && typeof r.i === "string" && typeof r.s === "number" && Array.isArray(r.a))
        out.push({ t: r.t, i: r.i, s: r.s, src: String(r.src ?? ""), a: r.a.filter(Number.isInteger) });
    } catch {
      // a line cut short when the echo server stopped
    }
  }
  return out;
}

/** VM→CN as the paper measured it: when each of the VM's requests reached the CN. */
export function requestTimes(records: readonly EchoRecord[]): number[] {
  return records.map((r) => r.t).sort((a, b) => a - b);
}

/**
 * VM→CN as the VM saw it: for each request whose reply reached the VM, when the CN sent that reply (the CN's
 * clock only; the guest's clock jumps across a migration).
 */
export function replyTimes(records: readonly EchoRecord[]): number[] {
  const sent = new Map<string, number>();
  for (const r of records) sent.set(`${r.i}:${r.s}`, r.t);
  const out: number[] = [];
  for (const r of records)
    for (const s of r.a) {
      const t = sent.get(`${r.i}:${s}`);
      if (t !== undefined) out.push(t);
    }
  return out.sort((a, b) => a - b);
}

// ---- one direction's outage ----

export interface Outage {
  /** T_DW: from the last reply before the stop to the first after it (the longest silence); null if none came. */
  readonly dwMs: number | null;
  readonly lastBeforeMs: number | null;
  readonly firstAfterMs: number | null;
  /** Traffic restored: the first reply after the last silence of RESTORED_GAP_MS or more (else after T_DW's). */
  readonly restoredMs: number | null;
  /** Replies in the window. */
  readonly replies: number;
  /** Whether replies were arriving when the migration started (else the silence is counted from the start). */
  readonly steadyBefore: boolean;
  /** How long the window's end is past the last reply: a direction that did not recover has it long. */
  readonly trailingSilenceMs: number;
}

/** One direction's outage around a migration that started at startMs; replies are looked at up to endMs. */
export function outage(times: readonly number[], startMs: number, endMs: number): Outage {
  const sorted = [...times].sort((a, b) => a - b);
  let anchor: number | undefined;
  for (const t of sorted) if (t <= startMs) anchor = t;
  const after = sorted.filter((t) => t > startMs && t <= endMs);
  const steadyBefore = anchor !== undefined && startMs - anchor < NOT_RECOVERED_MS;
  const series = [anchor ?? startMs, ...after];
  const last = series[series.length - 1] ?? startMs;
  const base = { replies: after.length, steadyBefore, trailingSilenceMs: Math.max(0, endMs - last) };
  if (endMs - last >= NOT_RECOVERED_MS)
    return { ...base, dwMs: null, lastBeforeMs: last, firstAfterMs: null, restoredMs: null };
  let worst: [number, number] | undefined;
  let restored: number | undefined;
  for (let k = 1; k < series.length; k++) {
    const a = series[k - 1] ?? 0;
    const b = series[k] ?? 0;
    if (!worst || b - a > worst[1] - worst[0]) worst = [a, b];
    if (b - a >= RESTORED_GAP_MS) restored = b;
  }
  if (!worst) return { ...base, dwMs: 0, lastBeforeMs: last, firstAfterMs: last, restoredMs: last };
  return {
    ...base,
    dwMs: worst[1] - worst[0],
    lastBeforeMs: worst[0],
    firstAfterMs: worst[1],
    restoredMs: restored ?? worst[1],
  };
}

// ---- a run, as bench.sh records it, and its sample ----

/** What bench.sh records about one migration (times in ms, host clock). */
export interface RunRecord {
  readonly subject: Subject;
  readonly link: Link;
  readonly memoryMb: number;
  readonly run: number;
  readonly from: string;
  readonly to: string;
  /** `xenroam prepare` (the method) or `xenroam migrate` began. */
  readonly startMs: number;
  /** `xenroam prepare` returned (the method). */
  readonly preparedMs?: number;
  /** `xenroam migrate` returned. */
  readonly returnedMs: number;
  /** Probing stopped: recovered (plus a tail) or the deadline passed. */
  readonly endMs: number;
  /** xenroam's exit status and report (`--json`), or its last words. */
  readonly ok: boolean;
  readonly report?: unknown;
  readonly error?: string;
  /** The CN's pings: "primary" addresses make T_DW (the HoA, or the guest's own); "own" is the method's MoA. */
  readonly pings: readonly {
    readonly target: string;
    readonly role: "primary" | "own";
    readonly log: string;
  }[];
  readonly echoLog: string;
  /** Where this run's lines begin in the echo log (it lives as long as the rig). */
  readonly echoOffset?: number;
}

export type Direction = "vmToCn" | "cnToVm" | "cnToVmOwn" | "vmToCnAtCn";

export const DIRECTION_LABEL: Readonly<Record<Direction, string>> = {
  vmToCn: "VM→CN (replies at the VM)",
  cnToVm: "CN→VM (replies at the CN)",
  cnToVmOwn: "CN→VM own address (the method's MoA)",
  vmToCnAtCn: "VM→CN requests at the CN (the paper's one-way)",
};

export interface Sample extends Omit<RunRecord, "pings" | "echoLog" | "echoOffset"> {
  /** Each direction's outage and the addresses it was probed at (for VM→CN: the sources the CN saw). */
  readonly directions: Partial<Record<Direction, Outage & { readonly probedAt: readonly string[] }>>;
  /** T_DW: the longer of VM→CN and CN→VM (an application that talks both ways); null if one never recovered. */
  readonly tDwMs: number | null;
  /** T_ALL: from the start to traffic restored both ways. */
  readonly tAllMs: number | null;
  /** T_ALL counted from `xenroam migrate` (for the method: without its prepare). */
  readonly tAllFromMigrateMs: number | null;
  /** From issuing `xenroam migrate` to its engine starting (the report's startedAt): Node.js starting in Dom0. */
  readonly startupMs?: number;
  /**
   * xl, the method: how long `xenroam receive` held xl's ready message (the domain complete and paused) for its
   * own steps (find, hold, arrival, relay): xenroam's share of the pause at the destination.
   */
  readonly readyHeldMs?: number;
  readonly recovered: boolean;
}

/** The sample of one run from its record and the text of its logs (by path). */
export function sampleOf(run: RunRecord, logs: Readonly<Record<string, string>>): Sample {
  const { pings, echoLog, echoOffset: _offset, ...rest } = run;
  const window = (times: number[]) => outage(times, run.startMs, run.endMs);
  const echo = parseEcho(logs[echoLog] ?? "").filter((r) => r.t >= run.startMs - 5000 && r.t <= run.endMs);
  const directions: Partial<Record<Direction, Outage & { probedAt: readonly string[] }>> = {};
  const sources = [...new Set(echo.filter((r) => r.t > run.startMs).map((r) => r.src))];
  directions.vmToCn = { ...window(replyTimes(echo)), probedAt: sources };
  directions.vmToCnAtCn = { ...window(requestTimes(echo)), probedAt: sources };
  for (const role of ["primary", "own"] as const) {
    const mine = pings.filter((p) => p.role === role);
    if (mine.length === 0) continue;
    const times = mine.flatMap((p) => parsePing(logs[p.log] ?? "").map((r) => r.atMs));
    directions[role === "primary" ? "cnToVm" : "cnToVmOwn"] = {
      ...window(times),
      probedAt: mine.map((p) => p.target),
    };
  }
  const both = [directions.vmToCn, directions.cnToVm].filter((d) => d !== undefined);
  const recovered = run.ok && both.length === 2 && both.every((d) => d.dwMs !== null);
  const restored = Math.max(...both.map((d) => d.restoredMs ?? 0));
  const migrateFrom = run.preparedMs ?? run.startMs;
  const startedAt = (run.report as { startedAt?: unknown } | undefined)?.startedAt;
  const arrival = (run.report as { arrival?: unknown } | undefined)?.arrival;
  const readyHeld = Array.isArray(arrival)
    ? (arrival as Array<{ phase?: unknown; atMs?: unknown }>).find((m) => m.phase === "ready-sent")?.atMs
    : undefined;
  return {
    ...rest,
    directions,
    tDwMs: recovered ? Math.max(...both.map((d) => d.dwMs ?? 0)) : null,
    tAllMs: recovered ? restored - run.startMs : null,
    tAllFromMigrateMs: recovered ? restored - migrateFrom : null,
    ...(typeof startedAt === "number" ? { startupMs: startedAt - migrateFrom } : {}),
    ...(typeof readyHeld === "number" ? { readyHeldMs: readyHeld } : {}),
    recovered,
  };
}

// ---- summaries ----

export interface Cell {
  readonly runs: number;
  readonly recovered: number;
  /** Means over the recovered runs (seconds). */
  readonly dwS?: number;
  readonly allS?: number;
  readonly dwMinS?: number;
  readonly dwMaxS?: number;
}

const mean = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

export function cellOf(samples: readonly Sample[]): Cell {
  const ok = samples.filter((s) => s.recovered);
  const dws = ok.map((s) => (s.tDwMs ?? 0) / 1000);
  const alls = ok.map((s) => (s.tAllMs ?? 0) / 1000);
  if (ok.length === 0) return { runs: samples.length, recovered: 0 };
  return {
    runs: samples.length,
    recovered: ok.length,
    dwS: mean(dws),
    allS: mean(alls),
    dwMinS: Math.min(...dws),
    dwMaxS: Math.max(...dws),
  };
}

function pick(samples: readonly Sample[], subject: Subject, link: Link, memoryMb: number): Sample[] {
  return samples.filter((s) => s.subject === subject && s.link === link && s.memoryMb === memoryMb);
}

const s2 = (x: number | undefined) => (x === undefined ? "—" : x.toFixed(2));

/** "ours (paper)"; "[k/n]" when only k of n runs recovered; "—" for nothing. */
function cellText(cell: Cell, which: "dw" | "all", paper: number | undefined): string {
  const ours = s2(which === "dw" ? cell.dwS : cell.allS);
  const partial = cell.runs > 0 && cell.recovered < cell.runs ? ` [${cell.recovered}/${cell.runs}]` : "";
  const theirs = paper === undefined ? "" : ` (${paper.toFixed(2)})`;
  return `${ours}${partial}${theirs}`;
}

export interface ReportOptions {
  /** The shaped link's rate. */
  readonly rateMbit: number;
}

/**
 * The paper's Table 2 layout — RAM rows; with the method, without it, ordinary; each at two links, T_DW and
 * T_ALL — with each cell "ours (paper)": our shaped link beside their 100 Mbps, unshaped beside their 1000.
 */
export function table2Markdown(samples: readonly Sample[], o: ReportOptions): string {
  const ours = [...new Set(samples.map((s) => s.memoryMb))];
  const rows = [...new Set([...ours, ...Object.keys(PAPER_TABLE2).map(Number)])].sort((a, b) => a - b);
  const linkHead: Record<Link, string> = { shaped: `${o.rateMbit} Mbps`, unshaped: "unshaped" };
  const head = ["RAM (MB)"];
  for (const subject of SUBJECTS)
    for (const link of LINKS) head.push(`${SUBJECT_SHORT[subject]}, ${linkHead[link]}: T_DW`, "T_ALL");
  const lines = [`| ${head.join(" | ")} |`, `|${head.map(() => "---").join("|")}|`];
  for (const mb of rows) {
    const cells = [String(mb)];
    for (const subject of SUBJECTS)
      for (const link of LINKS) {
        const cell = cellOf(pick(samples, subject, link, mb));
        const paper = paperPair(mb, subject, link);
        cells.push(cellText(cell, "dw", paper?.[0]), cellText(cell, "all", paper?.[1]));
      }
    lines.push(`| ${cells.join(" | ")} |`);
  }
  return lines.join("\n");
}

/** The mean of what is known, in seconds. */
function meanText(ms: readonly (number | null | undefined)[]): string {
  const xs = ms.filter((x): x is number => typeof x === "number").map((x) => x / 1000);
  return xs.length ? s2(mean(xs)) : "";
}

function msText(ms: readonly (number | null | undefined)[]): string {
  const xs = ms.filter((x): x is number => typeof x === "number");
  return xs.length ? `${Math.round(mean(xs))} (${Math.min(...xs)}–${Math.max(...xs)})` : "";
}

/** The mean time `xenroam prepare` took (inside T_ALL), for the method. */
function prepareText(group: readonly Sample[]): string {
  const p = group.flatMap((s) => (s.preparedMs === undefined ? [] : [(s.preparedMs - s.startMs) / 1000]));
  return p.length ? s2(mean(p)) : "";
}

/** Every direction of every (subject, link, memory): means, ranges, recoveries and where it was probed. */
export function detailMarkdown(samples: readonly Sample[]): string {
  const head = [
    "subject",
    "link",
    "RAM (MB)",
    "runs",
    "recovered",
    "T_DW mean (min–max)",
    "T_ALL mean",
    "of which prepare",
    "T_ALL from migrate",
    "xenroam start-up",
    "ready held (ms)",
    ...(["vmToCn", "cnToVm", "cnToVmOwn", "vmToCnAtCn"] as const).map((d) => `${DIRECTION_LABEL[d]}: T_DW`),
    "probed at (CN→VM; VM→CN source)",
  ];
  const lines = [`| ${head.join(" | ")} |`, `|${head.map(() => "---").join("|")}|`];
  const mems = [...new Set(samples.map((s) => s.memoryMb))].sort((a, b) => a - b);
  for (const subject of SUBJECTS)
    for (const link of LINKS)
      for (const mb of mems) {
        const group = pick(samples, subject, link, mb);
        if (group.length === 0) continue;
        const cell = cellOf(group);
        const dir = (d: Direction) => {
          const got = group.map((s) => s.directions[d]).filter((x) => x !== undefined);
          if (got.length === 0) return "";
          const ok = got.filter((x) => x.dwMs !== null).map((x) => (x.dwMs ?? 0) / 1000);
          const nr = got.length - ok.length;
          return `${ok.length ? s2(mean(ok)) : "—"}${nr ? ` (${nr} not recovered)` : ""}`;
        };
        const probed = (d: Direction) => [...new Set(group.flatMap((s) => s.directions[d]?.probedAt ?? []))];
        lines.push(
          `| ${[
            SUBJECT_LABEL[subject],
            link,
            mb,
            cell.runs,
            cell.recovered,
            cell.recovered ? `${s2(cell.dwS)} (${s2(cell.dwMinS)}–${s2(cell.dwMaxS)})` : "—",
            s2(cell.allS),
            prepareText(group),
            meanText(group.map((s) => s.tAllFromMigrateMs)),
            meanText(group.map((s) => s.startupMs)),
            msText(group.map((s) => s.readyHeldMs)),
            dir("vmToCn"),
            dir("cnToVm"),
            dir("cnToVmOwn"),
            dir("vmToCnAtCn"),
            `${[...probed("cnToVm"), ...probed("cnToVmOwn")].join(", ")}; ${probed("vmToCn").join(", ")}`,
          ].join(" | ")} |`,
        );
      }
  return lines.join("\n");
}

// ---- Figure 4 ----

/**
 * Figure 4's axes (T_DW and T_ALL against memory size), for the three subjects and both links: our runs as
 * points, their means as solid lines, the paper's figures dashed.
 */
export function figureSpec(samples: readonly Sample[], o: ReportOptions): TopLevelSpec {
  const linkName: Record<Link, string> = {
    shaped: `${o.rateMbit} Mbps shaped (paper: 100 Mbps)`,
    unshaped: "unshaped (paper: 1000 Mbps)",
  };
  const values: Record<string, string | number>[] = [];
  const ours = "this run (real Xen 4.17 under QEMU/TCG)";
  const paper = "Watanabe et al., Table 2 (Xen 3.2)";
  for (const s of samples) {
    if (!s.recovered) continue;
    for (const [metric, ms] of [
      ["T_DW", s.tDwMs],
      ["T_ALL", s.tAllMs],
    ] as const)
      values.push({
        kind: "run",
        source: ours,
        subject: SUBJECT_LABEL[s.subject],
        link: linkName[s.link],
        memoryMb: s.memoryMb,
        metric,
        seconds: (ms ?? 0) / 1000,
      });
  }
  const linksSeen = LINKS.filter((l) => samples.some((s) => s.link === l));
  for (const subject of SUBJECTS)
    for (const link of linksSeen) {
      const mems = [...new Set(samples.map((s) => s.memoryMb))];
      for (const mb of mems) {
        const cell = cellOf(pick(samples, subject, link, mb));
        if (cell.dwS === undefined || cell.allS === undefined) continue;
        for (const [metric, v] of [
          ["T_DW", cell.dwS],
          ["T_ALL", cell.allS],
        ] as const)
          values.push({
            kind: "mean",
            source: ours,
            subject: SUBJECT_LABEL[subject],
            link: linkName[link],
            memoryMb: mb,
            metric,
            seconds: v,
          });
      }
      for (const mb of Object.keys(PAPER_TABLE2).map(Number)) {
        const pair = paperPair(mb, subject, link);
        if (!pair) continue;
        for (const [metric, v] of [
          ["T_DW", pair[0]],
          ["T_ALL", pair[1]],
        ] as const)
          values.push({
            kind: "mean",
            source: paper,
            subject: SUBJECT_LABEL[subject],
            link: linkName[link],
            memoryMb: mb,
            metric,
            seconds: v,
          });
      }
    }
  const x = {
    field: "memoryMb",
    type: "quantitative" as const,
    title: "VM memory (MB)",
    scale: { type: "log" as const, base: 2 },
    axis: { values: [32, 64, 128, 256, 512] },
  };
  const color = {
    field: "subject",
    type: "nominal" as const,
    title: "subject",
    sort: SUBJECTS.map((s) => SUBJECT_LABEL[s]),
  };
  const y = {
    field: "seconds",
    type: "quantitative" as const,
    title: "seconds (log scale)",
    scale: { type: "log" as const },
  };
  const mean = "datum.kind === 'mean'";
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    title: {
      text: "Global live migration: T_DW and T_ALL against VM memory (cf. Figure 4)",
      subtitle: "circles: our runs; solid lines: our means; dashed lines: the paper's Table 2",
    },
    data: { values },
    facet: {
      row: { field: "link", type: "nominal", title: null },
      column: { field: "metric", type: "nominal", title: null, sort: ["T_DW", "T_ALL"] },
    },
    resolve: { scale: { y: "independent" } },
    spec: {
      width: 320,
      height: 220,
      layer: [
        {
          transform: [{ filter: mean }],
          mark: { type: "line" },
          encoding: {
            x,
            y,
            color,
            strokeDash: {
              field: "source",
              type: "nominal",
              title: null,
              sort: [ours, paper],
              legend: { symbolType: "stroke", symbolStrokeWidth: 2, symbolSize: 400 },
            },
          },
        },
        {
          transform: [{ filter: mean }],
          mark: { type: "point", filled: true, size: 30 },
          encoding: { x, y, color },
        },
        {
          transform: [{ filter: "datum.kind === 'run'" }],
          mark: { type: "point", shape: "circle", opacity: 0.6, size: 40 },
          encoding: { x, y, color },
        },
      ],
    },
    config: { legend: { labelLimit: 400, orient: "bottom", direction: "vertical" } },
  };
}

// `xenroam evacuate`: every guest off this host, to one site, with the method — a few at a time. The parts that
// decide (where each VM goes, what its downtime was, the summary) are pure; the engine runs the migrations.

import type { PhaseMark } from "@xenroam/protocol";
import type { MigrationReport } from "./engine.js";

export interface EvacuationPlan {
  readonly vm: string;
  readonly to: string;
}

export type EvacuationOutcome = "method" | "fallback" | "plain" | "failed";

export interface EvacuationRow {
  readonly vm: string;
  readonly to: string;
  readonly outcome: EvacuationOutcome;
  /** fallback: why the method was not used; failed: why the VM did not go (it runs here still, if `stayed`). */
  readonly why?: string;
  /** failed: whether the VM still runs on this host (checked after the failure). */
  readonly stayed?: boolean;
  readonly moa?: string;
  /** How long the VM was paused, from the toolstack or the timeline; undefined when neither tells. */
  readonly downtimeMs?: number;
  /** The whole migration, prepare to clean-up. */
  readonly elapsedMs: number;
  readonly migrationId?: string;
}

export interface EvacuationSummary {
  readonly host: string;
  readonly site: string;
  readonly destinations: readonly string[];
  readonly parallel: number;
  readonly rows: readonly EvacuationRow[];
  readonly elapsedMs: number;
}

/**
 * Which VM goes where: VMs by name, dealt round-robin over the destinations (by name too), so a host never
 * takes two before every other took one. The same input gives the same plan.
 */
export function planEvacuation(vms: readonly string[], destinations: readonly string[]): EvacuationPlan[] {
  if (destinations.length === 0) throw new Error("no destination host to evacuate to");
  const hosts = [...destinations].sort();
  return [...new Set(vms)].sort().map((vm, i) => ({ vm, to: hosts[i % hosts.length] as string }));
}

const at = (timeline: readonly PhaseMark[], ...phases: string[]) =>
  timeline.find((m) => phases.includes(m.phase))?.atMs;

/**
 * The pause, as the toolstack measured it when it did (the lab), else from the timeline: from the pause (lab
 * "paused", xl's "suspended") to the VM running again ("resumed", or the engine's "running-on-destination",
 * which on xl is when `xl migrate` returned: an upper bound). Undefined when the timeline has no pause (XAPI:
 * xenopsd's pause is not seen).
 */
export function downtimeOf(report: Pick<MigrationReport, "pausedMs" | "timeline">): number | undefined {
  if (report.pausedMs !== undefined) return report.pausedMs;
  const paused = at(report.timeline, "paused", "suspended");
  const running = at(report.timeline, "resumed", "running-on-destination");
  return paused !== undefined && running !== undefined && running >= paused ? running - paused : undefined;
}

export function rowOf(plan: EvacuationPlan, report: MigrationReport, elapsedMs: number): EvacuationRow {
  const downtimeMs = downtimeOf(report);
  return {
    vm: plan.vm,
    to: report.to,
    outcome: report.method === "dual-interface" ? "method" : report.fallback ? "fallback" : "plain",
    ...(report.fallback ? { why: report.fallback } : {}),
    ...(report.moa ? { moa: report.moa } : {}),
    ...(downtimeMs !== undefined ? { downtimeMs } : {}),
    elapsedMs,
    migrationId: report.migrationId,
  };
}

/**
 * Runs `work` on every item, at most `parallel` at once, in order of the items; results in the same order.
 * `work` is expected not to throw (a throw still rejects the whole run, after the items under way settle).
 */
export async function boundedAll<T, R>(
  items: readonly T[],
  parallel: number,
  work: (item: T, index: number) => Promise<R>,
): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const lanes = Array.from({ length: Math.max(1, Math.min(parallel, items.length)) }, async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await work(items[i] as T, i);
    }
  });
  await Promise.all(lanes);
  return results;
}

const seconds = (ms: number | undefined) => (ms === undefined ? "-" : `${(ms / 1000).toFixed(2)} s`);
const millis = (ms: number | undefined) => (ms === undefined ? "-" : `${Math.round(ms)} ms`);

/** The summary table people read at the end (text; --json prints the summary itself). */
export function renderEvacuation(s: EvacuationSummary): string {
  const head = ["VM", "to", "outcome", "downtime", "took", "why / MoA"];
  const body = s.rows.map((r) => [
    r.vm,
    r.to,
    r.outcome === "failed" ? (r.stayed ? "failed (still here)" : "failed (state unknown)") : r.outcome,
    millis(r.downtimeMs),
    seconds(r.elapsedMs),
    r.why ?? r.moa ?? "",
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((row) => (row[i] ?? "").length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join("  ")
      .trimEnd();
  const count = (o: EvacuationOutcome) => s.rows.filter((r) => r.outcome === o).length;
  const tally = [
    `${count("method")} with the method`,
    ...(count("fallback") ? [`${count("fallback")} fell back to a plain migration`] : []),
    ...(count("plain") ? [`${count("plain")} plain`] : []),
    ...(count("failed") ? [`${count("failed")} could not go`] : []),
  ];
  return [
    line(head),
    ...body.map(line),
    "",
    `${s.host} -> site ${s.site} (${s.destinations.join(", ")}), ${s.parallel} at a time: ${s.rows.length} VM${s.rows.length === 1 ? "" : "s"} in ${seconds(s.elapsedMs)}; ${tally.join(", ")}`,
  ].join("\n");
}

// A migration's record in the Prometheus text format, for node_exporter's textfile collector: one file per
// VM with its last migration from this host (phases, outcome, downtime) and its counters, carried over from the
// file it replaces. Pure: adapters/textfile.ts reads and writes the files.

import type { MigrationRecord } from "./ports.js";

export const MIGRATION_OUTCOMES = ["dual-interface", "plain", "fallback", "failed"] as const;
export const FALLBACK_REASONS = ["silent", "refused", "malformed"] as const;

type Outcome = (typeof MIGRATION_OUTCOMES)[number];
type FallbackReason = (typeof FALLBACK_REASONS)[number];

/** A VM's counters so far on this host (each migration adds one). */
export interface MigrationCounters {
  readonly outcomes: Readonly<Record<Outcome, number>>;
  readonly fallbacks: Readonly<Record<FallbackReason, number>>;
}

/** A label value as the exposition format writes it: backslash, double quote and line feed escaped. */
export function escapeLabelValue(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

const series = (name: string, labels: Readonly<Record<string, string>>): string =>
  `${name}{${Object.entries(labels)
    .map(([k, v]) => `${k}="${escapeLabelValue(v)}"`)
    .join(",")}}`;

const seconds = (ms: number): string => String(Math.max(0, ms) / 1000);

/**
 * How long the VM was down: the toolstack's pause when it says, else (xl) from the suspend seen on xenstore
 * to `xl migrate` returning once the destination runs it, which bounds it from above.
 */
export function downtimeMs(r: MigrationRecord): number | undefined {
  if (r.pausedMs !== undefined) return r.pausedMs;
  const at = (phase: string) => r.timeline.find((m) => m.phase === phase)?.atMs;
  const suspended = at("suspended");
  const running = at("running-on-destination");
  return suspended !== undefined && running !== undefined && running >= suspended
    ? running - suspended
    : undefined;
}

/** The counters of `vm` in a file this module wrote (zero for whatever is not there or not a count). */
export function readCounters(text: string | undefined, vm: string): MigrationCounters {
  const values = new Map<string, string>();
  for (const line of (text ?? "").split("\n")) {
    const space = line.lastIndexOf(" ");
    if (space > 0 && !line.startsWith("#")) values.set(line.slice(0, space), line.slice(space + 1));
  }
  const count = (name: string, labels: Record<string, string>) => {
    const v = Number(values.get(series(name, labels)));
    return Number.isSafeInteger(v) && v >= 0 ? v : 0;
  };
  return {
    outcomes: Object.fromEntries(
      MIGRATION_OUTCOMES.map((outcome) => [outcome, count("xenroam_migrations_total", { vm, outcome })]),
    ) as Record<Outcome, number>,
    fallbacks: Object.fromEntries(
      FALLBACK_REASONS.map((reason) => [reason, count("xenroam_migration_fallbacks_total", { vm, reason })]),
    ) as Record<FallbackReason, number>,
  };
}

/** The counters once `r` is counted. */
export function counted(before: MigrationCounters, r: MigrationRecord): MigrationCounters {
  return {
    outcomes: { ...before.outcomes, [r.outcome]: before.outcomes[r.outcome] + 1 },
    fallbacks: r.fallback
      ? { ...before.fallbacks, [r.fallback]: before.fallbacks[r.fallback] + 1 }
      : before.fallbacks,
  };
}

/**
 * The file for `r`'s VM: its last migration and `counters` (counted() already). No timestamps on samples (the
 * textfile collector refuses them): when is a metric of its own. Every file writes the same HELP and TYPE, as
 * node_exporter requires of a family several files share.
 */
export function renderMigrationTextfile(r: MigrationRecord, counters: MigrationCounters): string {
  const vm = r.vm;
  const out: string[] = [
    `# xenroam: the last migration of this VM from this host (${printableId(r.migrationId)})`,
  ];
  const family = (name: string, type: "gauge" | "counter", help: string, samples: string[]) => {
    if (samples.length === 0) return;
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, ...samples);
  };
  family(
    "xenroam_migration_last_outcome",
    "gauge",
    "1 for the outcome of the VM's last migration from this host (dual-interface, plain, fallback, failed), 0 for the others.",
    MIGRATION_OUTCOMES.map(
      (o) => `${series("xenroam_migration_last_outcome", { vm, outcome: o })} ${o === r.outcome ? 1 : 0}`,
    ),
  );
  family(
    "xenroam_migration_timestamp_seconds",
    "gauge",
    "When the VM's last migration from this host ended (Unix time).",
    [`${series("xenroam_migration_timestamp_seconds", { vm })} ${seconds(r.endedAt)}`],
  );
  family(
    "xenroam_migration_duration_seconds",
    "gauge",
    "How long the VM's last migration from this host took, from its start to its end.",
    [`${series("xenroam_migration_duration_seconds", { vm })} ${seconds(r.endedAt - r.startedAt)}`],
  );
  const down = downtimeMs(r);
  family(
    "xenroam_migration_downtime_seconds",
    "gauge",
    "How long the VM's last migration from this host kept it paused: the toolstack's figure, else (xl) from its suspend to xl migrate's return, an upper bound.",
    down === undefined ? [] : [`${series("xenroam_migration_downtime_seconds", { vm })} ${seconds(down)}`],
  );
  const phases = new Map<string, number>();
  for (const m of r.timeline) if (!phases.has(m.phase)) phases.set(m.phase, m.atMs);
  family(
    "xenroam_migration_phase_seconds",
    "gauge",
    "When the VM's last migration from this host reached each phase, in seconds from its start.",
    [...phases].map(
      ([phase, atMs]) => `${series("xenroam_migration_phase_seconds", { vm, phase })} ${seconds(atMs)}`,
    ),
  );
  family(
    "xenroam_migrations_total",
    "counter",
    "Migrations of the VM started from this host, by outcome.",
    MIGRATION_OUTCOMES.map(
      (o) => `${series("xenroam_migrations_total", { vm, outcome: o })} ${counters.outcomes[o]}`,
    ),
  );
  family(
    "xenroam_migration_fallbacks_total",
    "counter",
    "Migrations of the VM from this host that fell back to a plain one, by why the guest's prepare failed (silent, refused, malformed).",
    FALLBACK_REASONS.map(
      (reason) =>
        `${series("xenroam_migration_fallbacks_total", { vm, reason })} ${counters.fallbacks[reason]}`,
    ),
  );
  return `${out.join("\n")}\n`;
}

/** A migration id in a comment line: what it may hold of a line is letters, digits and - _ . : only. */
const printableId = (id: string): string => `migration ${id.replace(/[^A-Za-z0-9_.:-]/g, "?").slice(0, 80)}`;

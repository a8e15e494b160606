// The control plane's failover measured in the lab: two control replicas on a three-member etcd, the VM
// migrating while the watched replica and etcd members are killed; each activation's way to the correspondent.

import { readFileSync } from "node:fs";
import { join } from "node:path";
import { createNft } from "@xenroam/mobility";
import { type MemberView, memberViewsScript } from "@xenroam/process/etcd-cluster";
import { findWorkspaceCommand, type LabOptions, labDown, labUp, stateDirOf } from "./lab.js";
import {
  cnLocators,
  controlUrls,
  ETCD_MEMBERS,
  etcdClientPort,
  etcdServiceName,
  replicaServiceName,
} from "./mobility.js";
import { netnsName } from "./plan.js";
import { percentile } from "./stats.js";
import { holdService, readSupervisorState } from "./supervisor.js";
import { netnsExec } from "./system.js";
import { readVmLocation } from "./toolstack.js";
import { DEFAULT_TOPOLOGY, hoaOf, parseTopology, type Topology } from "./topology.js";

export type FailoverFault =
  "none" | "kill-watched-replica" | "kill-etcd-leader" | "kill-etcd-follower" | "restart-etcd";

/**
 * The faults, one per migration, in a cycle of eight: a replica kill every fourth migration (so that the
 * supervisor's five restarts a minute are never reached), a member down for three migrations (one of them
 * with a replica kill: failover on a cluster of two), the leader one cycle and a follower the next.
 */
export function failoverSchedule(migrations: number): FailoverFault[] {
  const cycle = (k: number): FailoverFault[] => [
    "kill-watched-replica",
    "none",
    k % 2 === 0 ? "kill-etcd-leader" : "kill-etcd-follower",
    "none",
    "kill-watched-replica",
    "none",
    "restart-etcd",
    "none",
  ];
  return Array.from({ length: migrations }, (_, i) => cycle(Math.floor(i / 8))[i % 8] as FailoverFault);
}

/**
 * When, after a migration began, its fault lands: around the moment its activation reaches the control server
 * (`activationMs`, the median of the migrations before), from 300 ms before it to 60 ms after, so that faults
 * hit the stream just before, at and just after the change it must carry.
 */
export function faultDelayMs(i: number, activationMs: number): number {
  const offsets = [-300, -150, -60, -20, 0, 20, 60, -100];
  return Math.max(0, activationMs + (offsets[i % offsets.length] as number));
}

export interface LogEvent {
  readonly ts: number;
  readonly service: string;
  readonly event: string;
  readonly fields: Record<string, unknown>;
}

/** The services' own JSON lines from the supervisor's log (each a `service_output` of the supervisor). */
export function serviceEvents(supervisorLog: string): LogEvent[] {
  const out: LogEvent[] = [];
  for (const line of supervisorLog.split("\n")) {
    if (!line.includes('"service_output"')) continue;
    let outer: { service?: unknown; line?: unknown };
    try {
      outer = JSON.parse(line) as typeof outer;
    } catch {
      continue;
    }
    if (typeof outer.line !== "string" || typeof outer.service !== "string") continue;
    let inner: Record<string, unknown>;
    try {
      inner = JSON.parse(outer.line) as Record<string, unknown>;
    } catch {
      continue;
    }
    const ts = typeof inner.ts === "string" ? Date.parse(inner.ts) : NaN;
    if (typeof inner.event !== "string" || !Number.isFinite(ts)) continue;
    out.push({ ts, service: outer.service, event: inner.event, fields: inner });
  }
  return out;
}

export interface ActivationLag {
  readonly seq: number;
  readonly locator: string;
  /** The replica that accepted it, and when (ms since the epoch). */
  readonly replica: string;
  readonly at: number;
  /** From its acceptance to the correspondent learning it from the stream; undefined: never learned. */
  readonly lagMs: number | undefined;
}

/**
 * Each activation of `hoa` (its first acceptance by any replica) beside the correspondent's learning of it
 * from the stream: the first `binding_learned` via the watch with that seq or a later one after it. Only the
 * activations from `since` on (the run's, not the lab's first).
 */
export function activationLags(events: readonly LogEvent[], hoa: string, since = 0): ActivationLag[] {
  const activated = new Map<number, LogEvent>();
  for (const e of events) {
    if (!e.service.startsWith("xenroam-control") || e.event !== "activated" || e.fields.hoa !== hoa) continue;
    if (e.ts < since) continue;
    const seq = Number(e.fields.seq);
    const first = activated.get(seq);
    if (!first || e.ts < first.ts) activated.set(seq, e);
  }
  const learned = events.filter(
    (e) =>
      e.service === "xenroam-correspondent" &&
      e.event === "binding_learned" &&
      e.fields.via === "watch" &&
      e.fields.hoa === hoa,
  );
  return [...activated]
    .sort(([a], [b]) => a - b)
    .map(([seq, a]) => {
      const l = learned.find((x) => Number(x.fields.seq) >= seq && x.ts >= a.ts - 5);
      return {
        seq,
        locator: String(a.fields.locator),
        replica: a.service,
        at: a.ts,
        lagMs: l ? Math.max(0, l.ts - a.ts) : undefined,
      };
    });
}

export interface FailoverMigration {
  readonly index: number;
  /** When it began (ms since the epoch); faultAtMs, activationAfterMs and mappedAfterMs count from it. */
  readonly startedAt: number;
  readonly from: string;
  readonly to: string;
  readonly fault: FailoverFault;
  /** What the fault hit: a replica's or an etcd member's service name. */
  readonly target: string | undefined;
  /** When it landed, after the migration began. */
  readonly faultAtMs: number | undefined;
  readonly method: string;
  readonly fallback: string | undefined;
  readonly moa: string | undefined;
  /** The correspondent's map showed the new MoA this long after the migration began (undefined: never). */
  readonly mappedAfterMs: number | undefined;
  /** Its activation reached a replica this long after the migration began. */
  readonly activationAfterMs: number | undefined;
  readonly lagMs: number | undefined;
  /** A watched replica killed: how long until the correspondent's watch moved to another (`control_failover`). */
  readonly watchMovedAfterMs: number | undefined;
  readonly error: string | undefined;
}

export interface MemberCatchUp {
  readonly member: string;
  readonly downForMs: number;
  /** From its start to having applied the revision its peers had. */
  readonly caughtUpMs: number | undefined;
  readonly behindBy: number;
}

export interface FailoverFigure {
  readonly migrations: readonly FailoverMigration[];
  readonly activations: number;
  readonly missed: readonly number[];
  readonly lag: { readonly p50Ms: number; readonly p95Ms: number; readonly maxMs: number };
  /** The longest lag, and the longest with no fault in its migration (the baseline beside it). */
  readonly longestInterruptionMs: number;
  readonly longestWithoutFaultMs: number;
  /** Every activation of the run, with its lag. */
  readonly lags: readonly ActivationLag[];
  /** The correspondent's watch moving from one replica to another (`control_failover`). */
  readonly watchFailovers: number;
  /** The longest a correspondent's watch stayed on a killed replica before moving to another. */
  readonly longestWatchMoveMs: number;
  /** The replicas' own etcd watches going down with a member (`etcd_watch_down`), and the longest. */
  readonly etcdWatchDowns: number;
  readonly etcdWatchDownMs: number;
  /** `watch_lost` → `watch_resumed` spells (every replica failing at once), longest. */
  readonly watchDownMs: number;
  readonly catchUps: readonly MemberCatchUp[];
  /** Replica (re)starts the supervisor made during the run. */
  readonly replicaStarts: number;
}

export interface FailoverOptions extends LabOptions {
  readonly migrations: number;
  readonly labName?: string;
  /** Progress lines. */
  readonly say?: (line: string) => void;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** `xenroam migrate --json` on the host the VM is on: its report, or why there is none. */
async function migrateOnce(
  t: Topology,
  stateDir: string,
  xenroam: readonly string[],
  from: string,
  to: string,
): Promise<{ report: { method?: string; fallback?: string; moa?: string }; error?: string }> {
  try {
    const out = await netnsExec(netnsName(t, from), [
      ...xenroam,
      ...["--lab", stateDir, "migrate", t.vm.name, to, "--json"],
    ]);
    return { report: JSON.parse(out) as { method?: string; fallback?: string; moa?: string } };
  } catch (err) {
    return { report: {}, error: (err as Error).message.trim().split("\n").slice(-3).join(" / ") || "failed" };
  }
}

/** The lab topology of this measurement: the default one, two replicas on etcd. */
export function failoverTopology(name: string): Topology {
  const base = parseTopology({ ...DEFAULT_TOPOLOGY, name }, "the failover lab");
  if (!base.mobility) throw new Error("internal: the default topology has the mobility layer");
  return parseTopology(
    { ...base, mobility: { ...base.mobility, store: "etcd", replicas: 2 } },
    "the failover lab (two replicas on etcd)",
  );
}

/**
 * Each etcd member's view, asked from inside the router's namespace (their client ports are on its
 * loopback) through their JSON gateway: its member id, the leader it knows, the revision it has applied.
 */
async function etcdViews(t: Topology): Promise<MemberView[]> {
  const ports = Array.from({ length: ETCD_MEMBERS }, (_, i) => etcdClientPort(i));
  const out = await netnsExec(netnsName(t, t.router.name), [
    process.execPath,
    "-e",
    memberViewsScript(ports),
  ]);
  return JSON.parse(out) as MemberView[];
}

/**
 * Drops the binding datagrams to the correspondent (nft, a table of its own in the CN's namespace): every
 * move then reaches it through the watch stream alone, and a change the stream missed shows as a HoA mapped
 * to an old locator.
 */
async function dropDatagrams(t: Topology, port: number, drop: boolean): Promise<void> {
  const nft = createNft({ netns: netnsName(t, t.correspondent.name) });
  const table = "xr_failover_drop";
  if (!drop) {
    await nft.apply(`delete table inet ${table}\n`).catch(() => {});
    return;
  }
  await nft.apply(
    `table inet ${table} {\n  chain input {\n    type filter hook input priority -10; policy accept;\n    meta l4proto { udp, tcp } th dport ${port} drop\n  }\n}\n`,
  );
}

/** When a replica first accepted the activation of `locator` for `hoa`, after `since` (ms after it). */
function activatedAt(events: readonly LogEvent[], hoa: string, locator: string | undefined, since: number) {
  const e = events.find(
    (x) =>
      x.service.startsWith("xenroam-control") &&
      x.event === "activated" &&
      x.fields.hoa === hoa &&
      x.fields.locator === locator &&
      x.ts >= since,
  );
  return e ? e.ts - since : undefined;
}

/** Which member leads, as the members see it (asked again for up to 3 s while an election runs). */
async function etcdLeader(t: Topology): Promise<number> {
  return waitUntil("an etcd leader", 3000, async () => {
    const views = await etcdViews(t);
    const leaderId = views.find((v) => v.leader && v.leader !== "0")?.leader;
    return views.find((v) => v.id === leaderId)?.member;
  });
}

/** Member `member`, started again at `restartedAt`, until it has applied its peers' revision (20 s at most). */
async function catchUp(t: Topology, member: number, restartedAt: number): Promise<MemberCatchUp> {
  const caughtUp = await waitUntil(`etcd member ${member} to catch up`, 20_000, async () => {
    const views = await etcdViews(t);
    const own = views[member]?.revision;
    const peers = Math.max(...views.filter((v) => v.member !== member).map((v) => v.revision ?? 0));
    return own !== undefined && own >= peers ? Date.now() : undefined;
  }).catch(() => undefined);
  const views = await etcdViews(t);
  const revisions = views.map((v) => v.revision ?? 0);
  return {
    member: etcdServiceName(member),
    downForMs: 0,
    caughtUpMs: caughtUp === undefined ? undefined : caughtUp - restartedAt,
    behindBy: Math.max(...revisions) - (views[member]?.revision ?? 0),
  };
}

function servicePid(stateDir: string, name: string): number | undefined {
  return readSupervisorState(stateDir)?.services[name]?.process?.pid;
}

/** The replica the correspondent watches now: where its last `control_failover` went, else the first. */
function watchedReplica(t: Topology, events: readonly LogEvent[]): string {
  const m = t.mobility;
  if (!m) throw new Error("internal: no mobility");
  const urls = controlUrls(t, m);
  const moves = events.filter((e) => e.service === "xenroam-correspondent" && e.event === "control_failover");
  const to = moves.at(-1)?.fields.to;
  const i = typeof to === "string" ? urls.indexOf(to) : 0;
  return replicaServiceName(Math.max(0, i));
}

async function waitUntil<T>(what: string, ms: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(50);
  }
}

/** Runs the measurement in a lab of its own, brought up and taken down here. */
export async function measureFailover(options: FailoverOptions): Promise<FailoverFigure> {
  const say = options.say ?? (() => {});
  const topology = failoverTopology(options.labName ?? "xrfo");
  const m = topology.mobility;
  const hoa = hoaOf(topology, topology.vm);
  if (!m || !hoa) throw new Error("internal: the failover lab has the mobility layer");
  const xenroam = findWorkspaceCommand("xenroam");
  if (!xenroam) throw new Error("no xenroam in this workspace; run `npm run build`");
  const quiet = { ...options, progress: () => {} };
  await labDown(topology.name, { ...quiet, force: true });
  say("bringing up a lab with two control server replicas on a three-member etcd cluster");
  await labUp(topology, quiet);
  const stateDir = stateDirOf(topology.name, options);
  const logFile = join(stateDir, "supervisor.log");
  const events = () => serviceEvents(readFileSync(logFile, "utf8"));
  const migrations: FailoverMigration[] = [];
  const catchUps: MemberCatchUp[] = [];
  let down: { member: number; since: number } | undefined;
  try {
    await dropDatagrams(topology, m.bindingPort, true);
    const since = Date.now();
    const schedule = failoverSchedule(options.migrations);
    for (const [index, fault] of schedule.entries()) {
      const from = readVmLocation(stateDir, topology.vm.name).host;
      const to = topology.hosts.find(
        (h) => h.site !== topology.hosts.find((x) => x.name === from)?.site,
      )?.name;
      if (!to) throw new Error("internal: no host in another site");
      const started = Date.now();
      const migration = migrateOnce(topology, stateDir, xenroam, from, to);
      let target: string | undefined;
      let faultAt: number | undefined;
      let catchingUp: Promise<MemberCatchUp> | undefined;
      if (fault !== "none") {
        const seen = migrations.flatMap((x) =>
          x.activationAfterMs === undefined ? [] : [x.activationAfterMs],
        );
        const at = started + faultDelayMs(index, seen.length ? percentile(seen, 50) : 1500);
        // The target is found before the moment comes (finding it takes time: a log to read, etcd to ask),
        // and the fault stamped when it lands.
        let member: number | undefined;
        if (fault === "kill-watched-replica") target = watchedReplica(topology, events());
        else if (fault === "restart-etcd") member = down?.member;
        else {
          const leader = await etcdLeader(topology);
          member = fault === "kill-etcd-leader" ? leader : (leader + 1) % ETCD_MEMBERS;
        }
        if (member !== undefined) target = etcdServiceName(member);
        await sleep(at - Date.now());
        if (!target) throw new Error(`migration ${index + 1}: ${fault} has no target (no member is down)`);
        faultAt = Date.now() - started;
        if (fault === "restart-etcd" && down) {
          const { since } = down;
          await holdService(stateDir, target, false);
          const restartedAt = Date.now();
          catchingUp = catchUp(topology, down.member, restartedAt).then((c) => ({
            ...c,
            downForMs: restartedAt - since,
          }));
          down = undefined;
        } else {
          const pid = servicePid(stateDir, target);
          if (!pid) throw new Error(`migration ${index + 1}: ${target} runs no process to kill`);
          process.kill(pid, "SIGKILL");
          if (member !== undefined) {
            // Kept down (held) until the schedule restarts it: the supervisor would start it again at once.
            await holdService(stateDir, target, true);
            down = { member, since: Date.now() };
          }
        }
        say(`migration ${index + 1}: ${fault} (${target}) at ${faultAt} ms`);
      }
      const { report, error } = await migration;
      const moa = report.moa;
      const mappedAt = moa
        ? await waitUntil("the correspondent's map", 20_000, async () =>
            (await cnLocators(topology)).get(hoa) === moa ? Date.now() : undefined,
          ).catch(() => undefined)
        : undefined;
      if (catchingUp) catchUps.push(await catchingUp);
      const row: FailoverMigration = {
        index,
        startedAt: started,
        from,
        to,
        fault,
        target,
        faultAtMs: faultAt,
        method: report.method ?? "failed",
        fallback: report.fallback,
        moa,
        mappedAfterMs: mappedAt === undefined ? undefined : mappedAt - started,
        activationAfterMs: activatedAt(events(), hoa, moa, started),
        lagMs: undefined,
        watchMovedAfterMs: undefined,
        error,
      };
      migrations.push(row);
      say(
        `migration ${index + 1}/${schedule.length} ${from} -> ${to}: ${row.method}, activation at ${row.activationAfterMs ?? "-"} ms, ${row.mappedAfterMs === undefined ? "NOT mapped at the correspondent" : `mapped at the correspondent after ${row.mappedAfterMs} ms`}`,
      );
      // The supervisor's restart of a killed replica, before the next fault may need it.
      await waitUntil("every replica to run again", 15_000, async () =>
        Array.from({ length: m.replicas }, (_, i) => replicaServiceName(i)).every(
          (n) => readSupervisorState(stateDir)?.services[n]?.state === "running",
        )
          ? true
          : undefined,
      );
    }
    if (down) await holdService(stateDir, etcdServiceName(down.member), false);
    await dropDatagrams(topology, m.bindingPort, false);
    const log = readFileSync(logFile, "utf8");
    return figureOf(migrations, catchUps, serviceEvents(log), hoa, since, replicaStartsIn(log, since));
  } finally {
    await labDown(topology.name, { ...quiet, force: true });
  }
}

/** How many times the supervisor started a control server replica from `since` on. */
export function replicaStartsIn(supervisorLog: string, since: number): number {
  let n = 0;
  for (const line of supervisorLog.split("\n")) {
    if (!line.includes('"service_started"') || !line.includes('"xenroam-control')) continue;
    try {
      const e = JSON.parse(line) as { ts?: string };
      if (Date.parse(e.ts ?? "") >= since) n += 1;
    } catch {
      // a torn last line
    }
  }
  return n;
}

/** The figure from the migrations and the services' logs (pure). */
export function figureOf(
  migrations: readonly FailoverMigration[],
  catchUps: readonly MemberCatchUp[],
  events: readonly LogEvent[],
  hoa: string,
  since: number,
  replicaStarts: number,
): FailoverFigure {
  const lags = activationLags(events, hoa, since);
  // A migration's activation: the first of its MoA after it began (a VM moving back and forth reuses its MoAs).
  const activationOf = (mig: FailoverMigration) =>
    lags.find((l) => l.locator === mig.moa && l.at >= mig.startedAt);
  const moves = events.filter((e) => e.service === "xenroam-correspondent" && e.event === "control_failover");
  const rows = migrations.map((mig, i) => {
    const killedAt = mig.faultAtMs === undefined ? undefined : mig.startedAt + mig.faultAtMs;
    // Its own move: before the next migration began (a later fault moves the watch too).
    const before = migrations[i + 1]?.startedAt ?? Infinity;
    const moved =
      mig.fault === "kill-watched-replica" && killedAt !== undefined
        ? moves.find((e) => e.ts >= killedAt - 5 && e.ts < before)
        : undefined;
    return {
      ...mig,
      lagMs: activationOf(mig)?.lagMs,
      watchMovedAfterMs: moved && killedAt !== undefined ? Math.max(0, moved.ts - killedAt) : undefined,
    };
  });
  const watchMoves = rows.flatMap((r) => (r.watchMovedAfterMs === undefined ? [] : [r.watchMovedAfterMs]));
  const known = lags.flatMap((l) => (l.lagMs === undefined ? [] : [l.lagMs])).sort((a, b) => a - b);
  const quiet = rows
    .filter((r) => r.fault === "none")
    .flatMap((r) => (r.lagMs === undefined ? [] : [r.lagMs]));
  const during = events.filter((e) => e.ts >= since);
  const ofService = (s: string, e: string) => during.filter((x) => x.service === s && x.event === e);
  const resumed = ofService("xenroam-correspondent", "watch_resumed").map(
    (e) => Number(e.fields.downMs) || 0,
  );
  return {
    migrations: rows,
    activations: lags.length,
    lags,
    missed: lags.filter((l) => l.lagMs === undefined).map((l) => l.seq),
    lag: {
      p50Ms: known.length ? percentile(known, 50) : 0,
      p95Ms: known.length ? percentile(known, 95) : 0,
      maxMs: known.at(-1) ?? 0,
    },
    longestInterruptionMs: known.at(-1) ?? 0,
    longestWithoutFaultMs: quiet.length ? Math.max(...quiet) : 0,
    watchFailovers: ofService("xenroam-correspondent", "control_failover").length,
    longestWatchMoveMs: watchMoves.length ? Math.max(...watchMoves) : 0,
    etcdWatchDowns: during.filter(
      (e) => e.service.startsWith("xenroam-control") && e.event === "etcd_watch_down",
    ).length,
    etcdWatchDownMs: Math.max(
      0,
      ...during
        .filter((e) => e.service.startsWith("xenroam-control") && e.event === "etcd_watch_resumed")
        .map((e) => Number(e.fields.downMs) || 0),
    ),
    watchDownMs: resumed.length ? Math.max(...resumed) : 0,
    catchUps,
    replicaStarts,
  };
}

const FAULT_TEXT: Readonly<Record<FailoverFault, string>> = {
  none: "none (right after a fault, or between two)",
  "kill-watched-replica": "the replica the correspondent watches SIGKILLed",
  "kill-etcd-leader": "the etcd leader SIGKILLed (kept down 3 migrations)",
  "kill-etcd-follower": "an etcd follower SIGKILLed (kept down 3 migrations)",
  "restart-etcd": "the killed etcd member started again",
};

/** The table the README shows: per fault, the migrations, the method kept, and the correspondent's lag. */
export function failoverMarkdown(f: FailoverFigure): string {
  const faults = [...new Set(f.migrations.map((m) => m.fault))];
  const rows = faults.map((fault) => {
    const ms = f.migrations.filter((m) => m.fault === fault);
    const lags = ms.flatMap((m) => (m.lagMs === undefined ? [] : [m.lagMs]));
    const method = ms.filter((m) => m.method === "dual-interface").length;
    const accepted = ms.flatMap((m) => (m.activationAfterMs === undefined ? [] : [m.activationAfterMs]));
    const mapped = ms.filter((m) => m.mappedAfterMs !== undefined).length;
    return `| ${FAULT_TEXT[fault]} | ${ms.length} | ${method} of ${ms.length} | ${accepted.length ? `${(Math.max(...accepted) / 1000).toFixed(2)} s` : "-"} | ${mapped} of ${ms.length} | ${lags.length ? `${percentile(lags, 50)} ms` : "-"} | ${lags.length ? `${Math.max(...lags)} ms` : "-"} |`;
  });
  const catchUp = f.catchUps
    .map(
      (c) =>
        `${c.member} ${c.caughtUpMs === undefined ? "did NOT catch up" : `caught up ${c.caughtUpMs} ms after its restart`} (down ${(c.downForMs / 1000).toFixed(1)} s)`,
    )
    .join("; ");
  return [
    "| fault during the migration | migrations | with the method | activation accepted, latest after the start | correspondent mapped the new MoA | activation → correspondent, p50 | longest |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ...rows,
    "",
    `Failover: ${f.activations} activations, ${f.missed.length === 0 ? "none missed" : `${f.missed.length} MISSED (seq ${f.missed.join(", ")})`}; the longest a correspondent waited for one ${f.longestInterruptionMs} ms (${f.longestWithoutFaultMs} ms in migrations without a fault); the watch moved between replicas ${f.watchFailovers} times, at most ${f.longestWatchMoveMs} ms after its replica was killed${f.watchDownMs > 0 ? `, lost every replica for up to ${f.watchDownMs} ms` : ", never without a replica"}; the replicas' etcd watches went down ${f.etcdWatchDowns} times (longest ${f.etcdWatchDownMs} ms); ${catchUp || "no member restarted"}.`,
  ].join("\n");
}

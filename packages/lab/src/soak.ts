// The fault soak: ping-pong migrations through the real `xenroam`, guest agent and lab toolstack, with faults
// injected on the way; after each migration, once things settle, whether the VM runs, unpaused, reachable at
// its HoA, and what was left behind: repaired by the next command's reconcile (`xenroam status`), cleared by
// the next migration, or leaked. The schedule, the leak rules, the tracking and the table are pure; the rest
// reads the lab's namespaces with ip, nft and /proc.

import { type ChildProcess, spawn } from "node:child_process";
import {
  closeSync,
  existsSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { StringDecoder } from "node:string_decoder";
import { parseIpv6, parsePrefix, prefixContains } from "@xenroam/core";
import { createNft } from "@xenroam/mobility";
import type { MachineFacts } from "./facts.js";
import { findWorkspaceCommand, type LabOptions, labDown, labUp, readState, stateDirOf } from "./lab.js";
import { netnsName } from "./plan.js";
import { holdService, readSupervisorState, type SupervisorState } from "./supervisor.js";
import { ipJson, isRunning, netnsExec, type ProcessState, processesIn } from "./system.js";
import { FAIL_AFTER_PAUSE_FILE, readVmLocation } from "./toolstack.js";
import { DEFAULT_TOPOLOGY, parseTopology, type Topology } from "./topology.js";

// ---------------------------------------------------------------------------------------------------------
// Faults and the schedule (pure)

export const FAULTS = [
  "agent-killed",
  "radvd-killed",
  "xenroam-killed",
  "control-down",
  "xenstored-restarted",
  "fail-after-pause",
] as const;
export type Fault = (typeof FAULTS)[number];
export type FaultOrNone = Fault | "none";

/** What each fault does, for --help, the report and the README. */
export const FAULT_TEXT: Readonly<Record<FaultOrNone, string>> = {
  none: "a clean migration (it also checks the previous fault's aftermath)",
  "agent-killed":
    "the guest agent SIGKILLed as it starts the prepare (its prepare_started line); the lab's supervisor restarts it",
  "radvd-killed":
    "the source's staging radvd SIGKILLed (found by its pid file in the host's state directory) as the guest starts the prepare",
  "xenroam-killed":
    "xenroam SIGKILLed once the guest has answered prepared, before the migration proper; the next command finds the prepare",
  "control-down":
    "the control server stopped through the lab's supervisor for the whole migration, then started again",
  "xenstored-restarted":
    "the source host's xenstored restarted (SIGTERM; the supervisor starts it again, the store carried over) as the migration proper starts",
  "fail-after-pause":
    "the lab toolstack's restore fails just after the pause (the activation relayed, nothing moved yet): the source resumes the VM",
};

export function isFault(name: string): name is Fault {
  return (FAULTS as readonly string[]).includes(name);
}

/**
 * One entry per migration: the first is clean (a reference), then each fault in turn followed by a clean one,
 * which checks the fault's aftermath with the next command (its reconcile). Without faults, all are clean.
 */
export function faultSchedule(migrations: number, faults: readonly Fault[]): FaultOrNone[] {
  return Array.from({ length: migrations }, (_, i): FaultOrNone => {
    if (faults.length === 0 || i === 0 || i % 2 === 0) return "none";
    return faults[((i - 1) / 2) % faults.length] ?? "none";
  });
}

// ---------------------------------------------------------------------------------------------------------
// Observations and the leak rules (pure)

/** The part of a host's `host-state.json` (xenroam's state, read as a file: `xenroam status` would reconcile). */
export interface HostStateView {
  readonly vms: Readonly<
    Record<string, { readonly phase: string; readonly site: string; readonly migrationId: string }>
  >;
  readonly staging: Readonly<
    Record<
      string,
      { readonly bridge: string; readonly users: readonly string[]; readonly radvd?: { pid: number } }
    >
  >;
}

export interface HostObservation {
  /** Links named xr-* (xenroam's staging bridges). */
  readonly stagingBridges: readonly string[];
  /** radvd processes in the host's namespace (only staging ones run there), each with its parent. */
  readonly radvd: ReadonlyArray<{ readonly pid: number; readonly ppid: number }>;
  /** IPv6 routes on links other than staging bridges. */
  readonly routes: number;
  readonly state: HostStateView;
}

export interface NodeObservation {
  /** Program name → how many run in the node's namespace. */
  readonly processes: Readonly<Record<string, number>>;
}

export interface MobileObservation extends NodeObservation {
  /** ip6 nftables tables. */
  readonly tables: readonly string[];
  /** Element counts of the xenroam table's maps (correspondent: hoa_to_locator, locator_to_hoa). */
  readonly maps: Readonly<Record<string, number>>;
}

export interface VmObservation extends MobileObservation {
  /** Global-scope addresses on the VM's interfaces. */
  readonly addresses: ReadonlyArray<{ readonly ifname: string; readonly address: string }>;
  readonly defaultRoutes: ReadonlyArray<{ readonly dev: string; readonly metric: number }>;
  /** Any process of the VM stopped (the lab toolstack pauses a VM by stopping its processes). */
  readonly paused: boolean;
}

export interface Observation {
  /** Where the VM runs (the lab toolstack's record). */
  readonly vmHost: string;
  readonly hosts: Readonly<Record<string, HostObservation & NodeObservation>>;
  readonly vm: VmObservation;
  readonly cn: MobileObservation;
  readonly router: NodeObservation;
  /** Supervised services not running (name → state). */
  readonly servicesDown: Readonly<Record<string, string>>;
}

export type LeakKind = "bridge" | "radvd" | "state" | "route" | "address" | "nft" | "process" | "service";

export interface LeakItem {
  /** Identifies one leak across observations. */
  readonly key: string;
  readonly kind: LeakKind;
  /** What it is, without identifiers (for grouping in the report). */
  readonly label: string;
  readonly detail: string;
}

export interface LeakContext {
  readonly hoa: string;
  /** Site name → /64 prefix. */
  readonly sites: Readonly<Record<string, string>>;
  /** Host name → site name. */
  readonly hostSite: Readonly<Record<string, string>>;
  /** The CN's locator_to_hoa holds the HoA's current and previous locators at most. */
  readonly locatorsPerHoa: number;
}

const extra = (now: number, base: number | undefined) => now - (base ?? 0);

/**
 * What is left that should not be, measured against a baseline taken right after the lab came up: staging
 * bridges and radvd with no prepared VM, xenroam state records, routes, processes and nftables tables or map
 * elements beyond the baseline's, addresses the VM should not hold, services down.
 */
export function leaksOf(obs: Observation, baseline: Observation, ctx: LeakContext): LeakItem[] {
  const items: LeakItem[] = [];
  const add = (key: string, kind: LeakKind, label: string, detail: string) =>
    items.push({ key, kind, label, detail });
  for (const [host, h] of Object.entries(obs.hosts)) {
    const base = baseline.hosts[host];
    // A staging bridge (and its radvd) is in use while a VM recorded on this host is prepared through it.
    const inUse = Object.entries(h.state.staging).filter(([site, st]) =>
      st.users.some((u) => h.state.vms[u]?.site === site),
    );
    const usedBridges = new Set(inUse.map(([, st]) => st.bridge));
    const usedRadvd = new Set(inUse.flatMap(([, st]) => (st.radvd ? [st.radvd.pid] : [])));
    for (const b of h.stagingBridges) {
      if (!usedBridges.has(b))
        add(`${host}: bridge ${b}`, "bridge", "staging bridge with no prepared VM", `${host}: ${b}`);
    }
    // radvd's privilege-separated child (a second "radvd") belongs to the one recorded.
    for (const { pid, ppid } of h.radvd) {
      if (!usedRadvd.has(pid) && !usedRadvd.has(ppid))
        add(`${host}: radvd ${pid}`, "radvd", "staging radvd with no prepared VM", `${host}: pid ${pid}`);
    }
    for (const [vm, r] of Object.entries(h.state.vms)) {
      add(
        `${host}: state ${vm} ${r.migrationId}`,
        "state",
        `state record (${r.phase})`,
        `${host}: ${vm} ${r.phase} for site ${r.site}, migration ${r.migrationId}`,
      );
    }
    for (const [site, st] of Object.entries(h.state.staging)) {
      if (!inUse.some(([s]) => s === site))
        add(
          `${host}: state staging ${site}`,
          "state",
          "state staging entry with no prepared VM",
          `${host}: ${st.bridge} (users: ${st.users.join(", ") || "none"})`,
        );
    }
    if (base && h.routes > base.routes)
      add(
        `${host}: routes`,
        "route",
        "host routes beyond the baseline",
        `${host}: ${h.routes} (baseline ${base.routes})`,
      );
    processLeaks(`${host}`, h.processes, base?.processes ?? {}, add, ["radvd"]);
  }
  processLeaks("vm", obs.vm.processes, baseline.vm.processes, add);
  processLeaks("cn", obs.cn.processes, baseline.cn.processes, add);
  processLeaks("router", obs.router.processes, baseline.router.processes, add);

  for (const [node, now, base] of [
    ["vm", obs.vm, baseline.vm],
    ["cn", obs.cn, baseline.cn],
  ] as const) {
    for (const t of now.tables)
      if (!base.tables.includes(t))
        add(`${node}: nft table ${t}`, "nft", "nftables table beyond the baseline", `${node}: ip6 ${t}`);
    for (const t of base.tables)
      if (!now.tables.includes(t))
        add(`${node}: nft table ${t} missing`, "nft", "nftables table missing", `${node}: ip6 ${t}`);
    for (const [map, n] of Object.entries(now.maps)) {
      const bound = Math.max(base.maps[map] ?? 0, map === "locator_to_hoa" ? ctx.locatorsPerHoa : 1);
      if (n > bound)
        add(
          `${node}: nft map ${map}`,
          "nft",
          `nftables map ${map} beyond its bound`,
          `${node}: ${n} elements (bound ${bound})`,
        );
    }
  }

  // The VM: global addresses only where the method puts them — the current site's on the primary (the
  // interface of the lowest-metric default route), a prepared destination's on the other one.
  const site = ctx.hostSite[obs.vmHost];
  const here = site ? ctx.sites[site] : undefined;
  const primary = [...obs.vm.defaultRoutes].sort((a, b) => a.metric - b.metric)[0]?.dev;
  const prepared = Object.values(obs.hosts[obs.vmHost]?.state.vms ?? {}).map((r) => ctx.sites[r.site]);
  const within = (address: string, prefix: string | undefined) => {
    try {
      return prefix !== undefined && prefixContains(parsePrefix(prefix), parseIpv6(address));
    } catch {
      return false;
    }
  };
  for (const a of obs.vm.addresses) {
    if (a.address === ctx.hoa) continue;
    const expected =
      a.ifname === primary ? within(a.address, here) : prepared.some((p) => within(a.address, p));
    if (!expected)
      add(
        `vm: address ${a.address} on ${a.ifname}`,
        "address",
        "VM address outside the method's",
        `${a.address} on ${a.ifname} (primary ${primary ?? "none"}, at site ${site ?? "?"})`,
      );
  }
  const allowedRoutes = baseline.vm.defaultRoutes.length + prepared.length;
  if (obs.vm.defaultRoutes.length > allowedRoutes)
    add(
      "vm: default routes",
      "route",
      "VM default routes beyond the baseline",
      `${obs.vm.defaultRoutes.map((r) => `${r.dev} metric ${r.metric}`).join(", ")} (at most ${allowedRoutes})`,
    );
  for (const [svc, state] of Object.entries(obs.servicesDown))
    add(`service ${svc}`, "service", "lab service not running", `${svc}: ${state}`);
  return items;
}

function processLeaks(
  node: string,
  now: Readonly<Record<string, number>>,
  base: Readonly<Record<string, number>>,
  add: (key: string, kind: LeakKind, label: string, detail: string) => void,
  skip: readonly string[] = [],
): void {
  for (const [comm, n] of Object.entries(now)) {
    if (skip.includes(comm) || extra(n, base[comm]) <= 0) continue;
    add(
      `${node}: process ${comm}`,
      "process",
      `extra ${comm} process`,
      `${node}: ${n} ${comm} (baseline ${base[comm] ?? 0})`,
    );
  }
}

// ---------------------------------------------------------------------------------------------------------
// Tracking leaks across migrations (pure)

export interface LeakRecord extends LeakItem {
  /** The migration (1-based) after which it was first seen, and its fault. */
  readonly foundAfter: number;
  readonly fault: FaultOrNone;
  /** The migration after which it was gone, if it went, and what took it away. */
  readonly repairedAfter?: number;
  readonly repairedBy?: RepairedBy;
}

/**
 * "reconcile": gone after `xenroam status` ran on the hosts (every xenroam command first reconciles what a
 * crash left); "migration": gone only after the next migration (its prepare reused or replaced it).
 */
export type RepairedBy = "reconcile" | "migration";

/**
 * Folds one observation's leaks into the records: a new key opens a record attributed to this migration's
 * fault; an open record whose key is gone is closed as repaired `by`. Returns the new records and what changed.
 */
export function trackLeaks(
  records: readonly LeakRecord[],
  items: readonly LeakItem[],
  migration: number,
  fault: FaultOrNone,
  by: RepairedBy,
): { records: LeakRecord[]; found: LeakRecord[]; repaired: LeakRecord[] } {
  const now = new Map(items.map((i) => [i.key, i]));
  const open = new Set(records.filter((r) => r.repairedAfter === undefined).map((r) => r.key));
  const repaired: LeakRecord[] = [];
  const next = records.map((r) => {
    if (r.repairedAfter !== undefined) return r;
    const still = now.get(r.key);
    if (still) return { ...r, detail: still.detail };
    const closed = { ...r, repairedAfter: migration, repairedBy: by };
    repaired.push(closed);
    return closed;
  });
  const found = items
    .filter((i) => !open.has(i.key))
    .map((i): LeakRecord => ({ ...i, foundAfter: migration, fault }));
  return { records: [...next, ...found], found, repaired };
}

// ---------------------------------------------------------------------------------------------------------
// Results and the table (pure)

export interface MigrationRecord {
  readonly index: number;
  readonly fault: FaultOrNone;
  readonly from: string;
  readonly to: string;
  /** How the fault was injected, or why it could not be (undefined for clean migrations). */
  readonly injected?: { readonly ok: boolean; readonly detail: string };
  /** xenroam's outcome: its exit and, on success, its report's method and fallback. */
  readonly outcome: "migrated" | "failed" | "killed" | "timed-out";
  readonly error?: string;
  readonly method?: string;
  readonly fallback?: string;
  /** xenroam's log events in order (phases as "phase:NAME"), for the JSON. */
  readonly events?: readonly string[];
  readonly durationMs: number;
  /** The VM runs on `to` once settled. */
  readonly completed: boolean;
  readonly pausedAfter: boolean;
  readonly hoaReachable: boolean;
  readonly cnReachable: boolean;
  readonly settleMs: number;
  /** Leaks first seen after this migration. */
  readonly leaksFound: readonly string[];
  /** Earlier leaks this migration cleared. */
  readonly leaksCleared: readonly string[];
  /** Leaks `xenroam status` (its reconcile) repaired after this migration, and what it said it repaired. */
  readonly leaksRepaired: readonly string[];
  readonly reconciled: readonly string[];
}

export interface FaultRow {
  readonly fault: FaultOrNone | "total";
  readonly migrations: number;
  readonly injected: number;
  readonly completed: number;
  readonly fallbacks: number;
  /** Leaks first seen after this fault's migrations and still there at the end. */
  readonly leaks: number;
  /** Leaks first seen after this fault's migrations that the next command's reconcile repaired. */
  readonly repaired: number;
  /** Leaks first seen after this fault's migrations that only the next migration cleared. */
  readonly cleared: number;
  readonly pausedAfter: number;
  readonly unreachableAfter: number;
}

export function faultRows(
  migrations: readonly MigrationRecord[],
  leaks: readonly LeakRecord[],
  faults: readonly FaultOrNone[] = ["none", ...FAULTS],
): FaultRow[] {
  const rowOf = (fault: FaultRow["fault"], ms: readonly MigrationRecord[], ls: readonly LeakRecord[]) => ({
    fault,
    migrations: ms.length,
    injected: ms.filter((m) => m.injected?.ok).length,
    completed: ms.filter((m) => m.completed).length,
    fallbacks: ms.filter((m) => m.fallback !== undefined).length,
    leaks: ls.filter((l) => l.repairedAfter === undefined).length,
    repaired: ls.filter((l) => l.repairedBy === "reconcile").length,
    cleared: ls.filter((l) => l.repairedBy === "migration").length,
    pausedAfter: ms.filter((m) => m.pausedAfter).length,
    unreachableAfter: ms.filter((m) => !m.hoaReachable || !m.cnReachable).length,
  });
  const rows = faults
    .filter((f) => migrations.some((m) => m.fault === f))
    .map((f) =>
      rowOf(
        f,
        migrations.filter((m) => m.fault === f),
        leaks.filter((l) => l.fault === f),
      ),
    );
  return [...rows, rowOf("total", migrations, leaks)];
}

export function soakTable(rows: readonly FaultRow[]): string {
  const line = (r: FaultRow) => {
    const name = r.fault === "total" ? "**total**" : r.fault;
    const injected = r.fault === "none" || r.fault === "total" ? "" : String(r.injected);
    return `| ${name} | ${r.migrations} | ${injected} | ${r.completed} | ${r.fallbacks} | ${r.leaks} | ${r.repaired} | ${r.cleared} | ${r.pausedAfter} | ${r.unreachableAfter} |`;
  };
  return [
    "| fault | migrations | injected | completed | fallbacks | leaks | repaired by reconcile | cleared by next migration | paused after | unreachable after |",
    "|---|---|---|---|---|---|---|---|---|---|",
    ...rows.map(line),
  ].join("\n");
}

/** The leaks and repairs, grouped by fault and what they were, as lines under the table. */
export function leakLines(leaks: readonly LeakRecord[]): string[] {
  interface Group {
    fault: FaultOrNone;
    label: string;
    left: number;
    reconcile: number;
    migration: number;
    example: string;
  }
  const groups = new Map<string, Group>();
  for (const l of leaks) {
    const k = `${l.fault}\u0000${l.label}`;
    const g = groups.get(k) ?? {
      fault: l.fault,
      label: l.label,
      left: 0,
      reconcile: 0,
      migration: 0,
      example: l.detail,
    };
    if (l.repairedBy === undefined) g.left++;
    else g[l.repairedBy]++;
    groups.set(k, g);
  }
  return [...groups.values()].map(
    (g) =>
      `- ${g.fault}: ${g.label}: ${g.left > 0 ? `${g.left} LEFT` : "none left"}; repaired by reconcile ${g.reconcile}, cleared by the next migration ${g.migration} (e.g. ${g.example})`,
  );
}

/** Zero when nothing leaked and the VM was never left paused or unreachable once settled. */
export function soakExitCode(rows: readonly FaultRow[], final: FinalCheck): number {
  const total = rows.find((r) => r.fault === "total");
  const bad =
    (total?.leaks ?? 0) > 0 ||
    (total?.pausedAfter ?? 0) > 0 ||
    (total?.unreachableAfter ?? 0) > 0 ||
    final.paused ||
    !final.hoaReachable ||
    !final.cnReachable;
  return bad ? 1 : 0;
}

export interface FinalCheck {
  readonly host: string;
  readonly paused: boolean;
  readonly hoaReachable: boolean;
  readonly cnReachable: boolean;
  /** What `xenroam status` repaired on each host at the end (its reconcile). */
  readonly repairs: Readonly<Record<string, readonly string[]>>;
}

export interface SoakResult {
  readonly name: string;
  readonly startedAt: string;
  readonly durationMs: number;
  readonly faults: readonly Fault[];
  readonly migrations: readonly MigrationRecord[];
  readonly leaks: readonly LeakRecord[];
  /** Leaks a fresh lab already had (not counted). */
  readonly baselineLeaks: readonly LeakItem[];
  readonly final: FinalCheck;
  readonly rows: readonly FaultRow[];
}

export function writeSoakJson(file: string, result: SoakResult, machine: MachineFacts): void {
  writeFileSync(
    file,
    `${JSON.stringify({ generatedAt: new Date().toISOString(), machine, ...result }, null, 2)}\n`,
  );
}

// ---------------------------------------------------------------------------------------------------------
// The run (root, the lab's namespaces)

export interface SoakOptions extends LabOptions {
  readonly migrations: number;
  readonly faults: readonly Fault[];
  /** The soak's own lab name (namespace prefix). */
  readonly name: string;
  /** How long to wait after a migration for the VM to run, answer at its HoA and reach the CN. */
  readonly settleMs?: number;
  /** Abort (SIGINT): the current migration is killed, the lab taken down. */
  readonly signal?: AbortSignal;
  /** control-down: how long the control server stays down after the migration has returned (0). */
  readonly controlDownAfterMs?: number;
}

export const DEFAULT_SETTLE_MS = 30_000;
/** A migration running longer than this is killed and recorded as timed out. */
const MIGRATION_TIMEOUT_MS = 120_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** New complete lines of a growing file (the supervisor's log), from where it was when made. */
class LogTail {
  private offset: number;
  private rest = "";
  private readonly decoder = new StringDecoder("utf8");
  constructor(private readonly file: string) {
    this.offset = existsSync(file) ? statSync(file).size : 0;
  }
  lines(): string[] {
    let fd: number;
    try {
      fd = openSync(this.file, "r");
    } catch {
      return [];
    }
    try {
      const buf = Buffer.alloc(1 << 16);
      let text = "";
      for (;;) {
        const n = readSync(fd, buf, 0, buf.length, this.offset);
        if (n <= 0) break;
        this.offset += n;
        text += this.decoder.write(buf.subarray(0, n));
      }
      const parts = (this.rest + text).split("\n");
      this.rest = parts.pop() ?? "";
      return parts;
    } finally {
      closeSync(fd);
    }
  }
}

function parseJsonLine(line: string): Record<string, unknown> | undefined {
  try {
    const v = JSON.parse(line) as unknown;
    return v && typeof v === "object" ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** The guest agent's own log events, as the supervisor logs its output. */
function agentEvent(supervisorLine: string): string | undefined {
  const outer = parseJsonLine(supervisorLine);
  if (outer?.service !== "xenroam-agent" || typeof outer.line !== "string") return undefined;
  const inner = parseJsonLine(outer.line);
  return typeof inner?.event === "string" ? inner.event : undefined;
}

interface Lab {
  readonly topology: Topology & { mobility: NonNullable<Topology["mobility"]> };
  readonly stateDir: string;
  readonly xenroam: readonly string[];
  readonly ctx: LeakContext;
}

const ns = (lab: Lab, node: string) => netnsName(lab.topology, node);
const hostStateDir = (lab: Lab, host: string) => join(lab.stateDir, `host-${host}`);

function readHostState(lab: Lab, host: string): HostStateView {
  const file = join(hostStateDir(lab, host), "host-state.json");
  try {
    const s = JSON.parse(readFileSync(file, "utf8")) as Partial<HostStateView>;
    return { vms: s.vms ?? {}, staging: s.staging ?? {} };
  } catch {
    return { vms: {}, staging: {} };
  }
}

const countBy = (ps: readonly ProcessState[]) => {
  const out: Record<string, number> = {};
  for (const p of ps) out[p.comm] = (out[p.comm] ?? 0) + 1;
  return out;
};

async function mobileObservation(netns: string, maps: readonly string[]): Promise<MobileObservation> {
  const nft = createNft({ netns });
  const tables = await nft.tables();
  const counts: Record<string, number> = {};
  for (const m of maps) {
    const els = tables.includes("xenroam") ? await nft.mapElements("xenroam", m) : undefined;
    if (els) counts[m] = els.size;
  }
  return { processes: countBy(await processesIn(netns)), tables, maps: counts };
}

function servicesDown(sup: SupervisorState | undefined): Record<string, string> {
  const down: Record<string, string> = {};
  for (const [name, s] of Object.entries(sup?.services ?? {})) {
    if (s.state !== "running" || !s.process || !isRunning(s.process)) down[name] = s.state;
  }
  return down;
}

async function observe(lab: Lab): Promise<Observation> {
  const t = lab.topology;
  const hosts: Record<string, HostObservation & NodeObservation> = {};
  for (const h of t.hosts) {
    const netns = ns(lab, h.name);
    const links = (await ipJson(netns, ["link", "show"])) as Array<{ ifname: string }>;
    const routes = (await ipJson(netns, ["-6", "route", "show"])) as Array<{ dev?: string }>;
    const procs = await processesIn(netns);
    hosts[h.name] = {
      stagingBridges: links.map((l) => l.ifname).filter((n) => n.startsWith("xr-")),
      radvd: procs.filter((p) => p.comm === "radvd").map((p) => ({ pid: p.pid, ppid: p.ppid })),
      routes: routes.filter((r) => !r.dev?.startsWith("xr-")).length,
      state: readHostState(lab, h.name),
      processes: countBy(procs),
    };
  }
  const vmNs = ns(lab, t.vm.name);
  const addrs = (await ipJson(vmNs, ["-6", "addr", "show", "scope", "global"])) as Array<{
    ifname: string;
    addr_info?: Array<{ local: string; scope?: string }>;
  }>;
  const defaults = (await ipJson(vmNs, ["-6", "route", "show", "default"])) as Array<{
    dev: string;
    metric?: number;
  }>;
  const vmProcs = await processesIn(vmNs);
  const vmMobile = await mobileObservation(vmNs, []);
  return {
    vmHost: readVmLocation(lab.stateDir).host,
    hosts,
    vm: {
      ...vmMobile,
      processes: countBy(vmProcs),
      addresses: addrs.flatMap((a) =>
        (a.addr_info ?? [])
          .filter((i) => i.scope === "global")
          .map((i) => ({ ifname: a.ifname, address: i.local })),
      ),
      defaultRoutes: defaults.map((r) => ({ dev: r.dev, metric: r.metric ?? 0 })),
      paused: vmProcs.some((p) => p.state === "T"),
    },
    cn: await mobileObservation(ns(lab, t.correspondent.name), ["hoa_to_locator", "locator_to_hoa"]),
    router: { processes: countBy(await processesIn(ns(lab, t.router.name))) },
    servicesDown: servicesDown(readSupervisorState(lab.stateDir)),
  };
}

/** Leaks, measured until two measurements a second apart agree (a cleanup finishing is not a leak). */
async function stableLeaks(
  lab: Lab,
  baseline: Observation,
): Promise<{ obs: Observation; items: LeakItem[] }> {
  let obs = await observe(lab);
  let items = leaksOf(obs, baseline, lab.ctx);
  for (let i = 0; i < 4; i++) {
    await sleep(1000);
    const o2 = await observe(lab);
    const i2 = leaksOf(o2, baseline, lab.ctx);
    const same = i2.length === items.length && i2.every((x) => items.some((y) => y.key === x.key));
    obs = o2;
    items = i2;
    if (same) break;
  }
  return { obs, items };
}

async function pingOnce(netns: string, to: string): Promise<boolean> {
  try {
    await netnsExec(netns, ["ping", "-6", "-n", "-c", "1", "-W", "1", to]);
    return true;
  } catch {
    return false;
  }
}

async function vmPaused(lab: Lab): Promise<boolean> {
  return (await processesIn(ns(lab, lab.topology.vm.name))).some((p) => p.state === "T");
}

/** Waits (bounded) until the VM runs, answers at its HoA from the CN, reaches the CN, and every service runs. */
async function settle(lab: Lab, settleMs: number) {
  const t = lab.topology;
  const started = Date.now();
  let paused = true;
  let hoa = false;
  let cn = false;
  for (;;) {
    paused = await vmPaused(lab);
    hoa = !paused && (await pingOnce(ns(lab, t.correspondent.name), t.mobility.hoa));
    cn = hoa && (await pingOnce(ns(lab, t.vm.name), t.correspondent.address));
    const up = Object.keys(servicesDown(readSupervisorState(lab.stateDir))).length === 0;
    if ((!paused && hoa && cn && up) || Date.now() - started > settleMs) break;
    await sleep(250);
  }
  // One more pair of tries each (a single lost probe is not unreachability).
  if (!paused && !hoa) hoa = await pingOnce(ns(lab, t.correspondent.name), t.mobility.hoa);
  if (!paused && !cn) cn = await pingOnce(ns(lab, t.vm.name), t.correspondent.address);
  return { paused, hoaReachable: hoa, cnReachable: cn, settleMs: Date.now() - started };
}

interface Injector {
  /** Before xenroam starts. */
  before?(): Promise<void>;
  /** Each JSON log line of xenroam (stderr); `kill` SIGKILLs it. */
  onXenroam?(event: Record<string, unknown>, kill: () => void): void;
  /** Each line the guest agent logs while the migration runs. */
  onAgent?(event: string): void;
  /** Every 10 ms while xenroam runs (after onAgent's lines). */
  poll?(): void;
  /** After xenroam has exited, before the settle. */
  after?(): Promise<void>;
  readonly result: () => { ok: boolean; detail: string };
}

/** The service's process as the supervisor recorded it, if it runs. */
function serviceProcess(lab: Lab, name: string) {
  const p = readSupervisorState(lab.stateDir)?.services[name]?.process;
  return p && isRunning(p) ? p : undefined;
}

/** The staging radvd of `host`, by the pid file xenroam gave it, checked to be that radvd (never by name). */
function stagingRadvd(lab: Lab, host: string): { pid: number; file: string } | undefined {
  const dir = hostStateDir(lab, host);
  let files: string[];
  try {
    files = readdirSync(dir).filter((f) => /^radvd-.*\.pid$/.test(f));
  } catch {
    return undefined;
  }
  for (const f of files) {
    const file = join(dir, f);
    const pid = Number(readFileSync(file, "utf8").trim());
    if (!Number.isInteger(pid) || pid <= 0) continue;
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
      if (cmdline.includes(file)) return { pid, file };
    } catch {
      /* gone */
    }
  }
  return undefined;
}

function injector(
  fault: FaultOrNone,
  lab: Lab,
  from: string,
  controlDownAfterMs: number,
): Injector | undefined {
  let result = { ok: false, detail: "the moment to inject never came" };
  const done = (ok: boolean, detail: string) => {
    result = { ok, detail };
  };
  const get = () => result;
  let killed: number | undefined;
  /** Whether the supervisor started a killed service again (bounded), said in the fault's detail. */
  const restarted = async (name: string, old: number) => {
    const deadline = Date.now() + 10_000;
    let now = serviceProcess(lab, name);
    while ((!now || now.pid === old) && Date.now() < deadline) {
      await sleep(100);
      now = serviceProcess(lab, name);
    }
    done(
      result.ok && now !== undefined && now.pid !== old,
      `${result.detail}; ${now && now.pid !== old ? `the supervisor started it again as pid ${now.pid}` : "NOT started again within 10 s"}`,
    );
  };
  switch (fault) {
    case "none":
      return undefined;
    case "agent-killed":
      return {
        onAgent(event) {
          if (event !== "prepare_started" || result.ok) return;
          const p = serviceProcess(lab, "xenroam-agent");
          if (!p) return done(false, "the agent was not running at its prepare_started");
          process.kill(p.pid, "SIGKILL");
          killed = p.pid;
          done(true, `agent pid ${p.pid} SIGKILLed at its prepare_started`);
        },
        async after() {
          if (killed !== undefined) await restarted("xenroam-agent", killed);
        },
        result: get,
      };
    case "radvd-killed": {
      let started = 0;
      return {
        onAgent(event) {
          if (event === "prepare_started" && started === 0) started = Date.now();
        },
        // The pid file appears once radvd has started: looked for every tick once the guest is preparing.
        poll() {
          if (started <= 0 || result.ok) return;
          const r = stagingRadvd(lab, from);
          if (r) {
            process.kill(r.pid, "SIGKILL");
            done(
              true,
              `staging radvd pid ${r.pid} (${r.file}) SIGKILLed ${Date.now() - started} ms after the agent's prepare_started`,
            );
          } else if (Date.now() - started > 2000) {
            done(false, "no staging radvd pid file within 2 s of the agent's prepare_started");
            started = -1;
          }
        },
        result: get,
      };
    }
    case "xenroam-killed":
      return {
        onXenroam(e, kill) {
          if (e.event === "prepared" && !result.ok) {
            kill();
            done(true, `xenroam SIGKILLed at its "prepared" log line (migration ${String(e.migration)})`);
          }
        },
        result: get,
      };
    case "control-down":
      return {
        async before() {
          await holdService(lab.stateDir, "xenroam-control", true);
          done(
            true,
            `xenroam-control held (stopped) by the supervisor for the whole migration${controlDownAfterMs > 0 ? ` and ${controlDownAfterMs} ms after it` : ""}`,
          );
        },
        async after() {
          await sleep(controlDownAfterMs);
          await holdService(lab.stateDir, "xenroam-control", false);
        },
        result: get,
      };
    case "xenstored-restarted":
      return {
        onXenroam(e) {
          const trigger = e.event === "phase" && (e.phase === "guest-prepared" || e.phase === "fallback");
          if (!trigger || result.ok) return;
          const name = `xenstored-${from}`;
          const p = serviceProcess(lab, name);
          if (!p) return done(false, `${name} was not running`);
          process.kill(p.pid, "SIGTERM");
          killed = p.pid;
          done(true, `${name} pid ${p.pid} stopped (SIGTERM) at phase ${String(e.phase)}`);
        },
        async after() {
          if (killed !== undefined) await restarted(`xenstored-${from}`, killed);
        },
        result: get,
      };
    case "fail-after-pause": {
      const file = join(lab.stateDir, FAIL_AFTER_PAUSE_FILE);
      return {
        async before() {
          writeFileSync(file, "armed by xenroam-lab soak\n");
        },
        async after() {
          if (existsSync(file)) {
            // The migration never reached the pause: disarm, so the next one is not failed instead.
            rmSync(file, { force: true });
            done(false, "the migration never reached the pause");
          } else done(true, "the restore failed after the pause (fault file taken by the lab toolstack)");
        },
        result: get,
      };
    }
  }
}

/** One `xenroam migrate` on the host the VM is on, with the fault's hooks on its log and the agent's. */
async function runMigration(
  lab: Lab,
  from: string,
  to: string,
  inject: Injector | undefined,
  signal: AbortSignal | undefined,
): Promise<Pick<MigrationRecord, "outcome" | "error" | "method" | "fallback" | "events">> {
  const tail = new LogTail(join(lab.stateDir, "supervisor.log"));
  await inject?.before?.();
  const child: ChildProcess = spawn(
    "ip",
    [
      "netns",
      "exec",
      ns(lab, from),
      ...lab.xenroam,
      "--lab",
      lab.stateDir,
      "--log-json",
      "migrate",
      lab.topology.vm.name,
      to,
      "--json",
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let killed = false;
  const kill = () => {
    killed = true;
    child.kill("SIGKILL");
  };
  const onAbort = () => kill();
  signal?.addEventListener("abort", onAbort, { once: true });
  let stdout = "";
  let stderrRest = "";
  const errors: string[] = [];
  const events: string[] = [];
  child.stdout?.on("data", (c) => {
    stdout += String(c);
  });
  child.stderr?.on("data", (c) => {
    const parts = (stderrRest + String(c)).split("\n");
    stderrRest = parts.pop() ?? "";
    for (const line of parts) {
      const e = parseJsonLine(line);
      if (!e) {
        if (line.trim()) errors.push(line.trim());
        continue;
      }
      if (e.event === "migrate_failed" && typeof e.error === "string") errors.push(e.error);
      if (typeof e.event === "string")
        events.push(e.event === "phase" ? `phase:${String(e.phase)}` : e.event);
      inject?.onXenroam?.(e, kill);
    }
  });
  const exited = new Promise<number | null>((r) => child.on("close", (code) => r(code)));
  const timer = setTimeout(kill, MIGRATION_TIMEOUT_MS);
  const watching = inject?.onAgent !== undefined || inject?.poll !== undefined;
  const poller = watching
    ? setInterval(() => {
        for (const l of tail.lines()) {
          const ev = agentEvent(l);
          if (ev) inject?.onAgent?.(ev);
        }
        inject?.poll?.();
      }, 10)
    : undefined;
  const code = await exited;
  clearTimeout(timer);
  if (poller) clearInterval(poller);
  signal?.removeEventListener("abort", onAbort);
  await inject?.after?.();
  const timedOut = killed && !inject?.result().ok;
  if (code === 0) {
    try {
      const r = JSON.parse(stdout) as { method?: string; fallback?: string };
      return {
        outcome: "migrated",
        ...(r.method ? { method: r.method } : {}),
        ...(r.fallback ? { fallback: r.fallback } : {}),
        events,
      };
    } catch {
      return { outcome: "failed", error: `unreadable report: ${stdout.slice(0, 200)}`, events };
    }
  }
  const error = errors.at(-1) ?? `exit ${String(code)}`;
  if (killed) return { outcome: timedOut ? "timed-out" : "killed", error, events };
  return { outcome: "failed", error, events };
}

async function xenroamStatus(lab: Lab, host: string): Promise<string[]> {
  try {
    const out = await netnsExec(ns(lab, host), [
      ...lab.xenroam,
      "--lab",
      lab.stateDir,
      "--host",
      host,
      "status",
      "--json",
    ]);
    const s = JSON.parse(out) as { repaired?: Array<{ repaired: string; why: string }> };
    return (s.repaired ?? []).map((r) => `${r.repaired} (${r.why})`);
  } catch (err) {
    return [`xenroam status failed: ${(err as Error).message}`];
  }
}

export async function runSoak(options: SoakOptions): Promise<SoakResult> {
  const progress = options.progress ?? (() => {});
  const xenroam = findWorkspaceCommand("xenroam");
  if (!xenroam) throw new Error("the xenroam command is not built in this workspace; run npm run build");
  const topology = parseTopology({ ...DEFAULT_TOPOLOGY, name: options.name }, "the soak's topology");
  const m = topology.mobility;
  if (!m) throw new Error("the default topology has no mobility section");
  const labOptions: LabOptions = {
    progress: () => {},
    ...(options.stateRoot ? { stateRoot: options.stateRoot } : {}),
  };
  const stateDir = stateDirOf(topology.name, labOptions);
  if (readState(stateDir))
    throw new Error(
      `a lab named "${topology.name}" is already up (state in ${stateDir}): the soak makes and removes its own; take that one down (xenroam-lab down --name ${topology.name}${options.stateRoot ? ` --state-root ${options.stateRoot}` : ""}) or give --name another name`,
    );
  const home = topology.vm.host;
  const homeSite = topology.hosts.find((h) => h.name === home)?.site;
  const away = topology.hosts.find((h) => h.site !== homeSite)?.name;
  if (!away) throw new Error("the topology has no host at another site");
  const lab: Lab = {
    topology: topology as Lab["topology"],
    stateDir,
    xenroam,
    ctx: {
      hoa: m.hoa,
      sites: Object.fromEntries(topology.sites.map((s) => [s.name, s.prefix])),
      hostSite: Object.fromEntries(topology.hosts.map((h) => [h.name, h.site])),
      locatorsPerHoa: 2,
    },
  };
  const schedule = faultSchedule(options.migrations, options.faults);
  const settleMs = options.settleMs ?? DEFAULT_SETTLE_MS;
  const started = Date.now();
  const migrations: MigrationRecord[] = [];
  let leaks: LeakRecord[] = [];
  const aborted = () => options.signal?.aborted === true;
  progress(`bringing up lab "${topology.name}" (state in ${stateDir})`);
  try {
    await labUp(topology, labOptions);
    if (aborted()) throw new Error("interrupted");
    const first = await settle(lab, settleMs);
    if (first.paused || !first.hoaReachable || !first.cnReachable)
      throw new Error("the fresh lab's VM is not reachable at its HoA; nothing to soak");
    const baseline = (await stableLeaks(lab, await observe(lab))).obs;
    const baselineLeaks = leaksOf(baseline, baseline, lab.ctx);
    if (baselineLeaks.length > 0)
      progress(`a fresh lab already shows: ${baselineLeaks.map((l) => l.detail).join("; ")} (not counted)`);
    const ignored = new Set(baselineLeaks.map((l) => l.key));
    for (let i = 0; i < schedule.length && !aborted(); i++) {
      const fault = schedule[i] ?? "none";
      const from = readVmLocation(stateDir).host;
      const to = from === home ? away : home;
      const inject = injector(fault, lab, from, options.controlDownAfterMs ?? 0);
      const t0 = Date.now();
      let run: Awaited<ReturnType<typeof runMigration>>;
      try {
        run = await runMigration(lab, from, to, inject, options.signal);
      } catch (err) {
        run = { outcome: "failed", error: `the soak could not run it: ${(err as Error).message}` };
      }
      const durationMs = Date.now() - t0;
      if (aborted()) break;
      const s = await settle(lab, settleMs);
      let measured = await stableLeaks(lab, baseline);
      const first = trackLeaks(
        leaks,
        measured.items.filter((x) => !ignored.has(x.key)),
        i + 1,
        fault,
        "migration",
      );
      leaks = first.records;
      // Something left: the next command (xenroam status on each host, as an admin would run it) reconciles.
      let reconciled: string[] = [];
      let repaired: LeakRecord[] = [];
      let found = first.found;
      if (leaks.some((l) => l.repairedAfter === undefined)) {
        for (const h of [home, away]) reconciled = [...reconciled, ...(await xenroamStatus(lab, h))];
        measured = await stableLeaks(lab, baseline);
        const second = trackLeaks(
          leaks,
          measured.items.filter((x) => !ignored.has(x.key)),
          i + 1,
          fault,
          "reconcile",
        );
        leaks = second.records;
        repaired = second.repaired;
        found = [...found, ...second.found];
      }
      const record: MigrationRecord = {
        index: i + 1,
        fault,
        from,
        to,
        ...(inject ? { injected: inject.result() } : {}),
        ...run,
        durationMs,
        completed: measured.obs.vmHost === to,
        pausedAfter: s.paused,
        hoaReachable: s.hoaReachable,
        cnReachable: s.cnReachable,
        settleMs: s.settleMs,
        leaksFound: found.map((l) => l.detail),
        leaksCleared: first.repaired.map((l) => l.detail),
        leaksRepaired: repaired.map((l) => l.detail),
        reconciled,
      };
      migrations.push(record);
      progress(progressLine(record, schedule.length));
    }
    if (aborted()) throw new Error("interrupted");
    // The end: what an admin would run (xenroam status reconciles on each host), then the last look.
    const repairs: Record<string, string[]> = {};
    for (const h of topology.hosts) repairs[h.name] = await xenroamStatus(lab, h.name);
    const s = await settle(lab, settleMs);
    const measured = await stableLeaks(lab, baseline);
    const last = migrations.at(-1);
    leaks = trackLeaks(
      leaks,
      measured.items.filter((x) => !ignored.has(x.key)),
      last?.index ?? 0,
      last?.fault ?? "none",
      "reconcile",
    ).records;
    const final: FinalCheck = {
      host: measured.obs.vmHost,
      paused: s.paused,
      hoaReachable: s.hoaReachable,
      cnReachable: s.cnReachable,
      repairs,
    };
    return {
      name: topology.name,
      startedAt: new Date(started).toISOString(),
      durationMs: Date.now() - started,
      faults: options.faults,
      migrations,
      leaks,
      baselineLeaks,
      final,
      rows: faultRows(migrations, leaks),
    };
  } finally {
    progress(`taking lab "${topology.name}" down`);
    await labDown(topology.name, labOptions);
  }
}

export function progressLine(r: MigrationRecord, of: number): string {
  const what =
    r.outcome === "migrated"
      ? `${r.method ?? "?"}${r.fallback ? ` (fallback: ${r.fallback})` : ""}`
      : `${r.outcome}${r.error ? `: ${r.error}` : ""}`;
  const inj = r.injected ? ` {${r.injected.ok ? "" : "NOT INJECTED: "}${r.injected.detail}}` : "";
  const after = [
    r.completed ? "on " + r.to : `still on ${r.from}`,
    r.pausedAfter ? "PAUSED" : "running",
    r.hoaReachable ? "HoA ok" : "HoA UNREACHABLE",
    r.cnReachable ? "CN ok" : "CN UNREACHABLE",
    `settled in ${(r.settleMs / 1000).toFixed(1)} s`,
  ].join(", ");
  const leaks = [
    ...(r.leaksCleared.length ? [`cleared by this migration: ${r.leaksCleared.join("; ")}`] : []),
    ...(r.leaksFound.length ? [`LEFT: ${r.leaksFound.join("; ")}`] : []),
    ...(r.reconciled.length ? [`xenroam status repaired: ${r.reconciled.join("; ")}`] : []),
    ...(r.leaksRepaired.length ? [`gone after it: ${r.leaksRepaired.join("; ")}`] : []),
  ];
  return `soak ${r.index}/${of} [${r.fault}] ${r.from} -> ${r.to} in ${(r.durationMs / 1000).toFixed(1)} s: ${what}${inj}; ${after}${leaks.length ? `; ${leaks.join("; ")}` : ""}`;
}

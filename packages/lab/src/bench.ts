// The benchmark: N migrations per scenario with a 10 ms VM→CN echo probe, the method side by side with its
// baselines in one run. Each scenario gets a fresh lab; migrations alternate between its two hosts and are
// driven through the real `xenroam` command, the real guest agent and the lab toolstack.

import { type ChildProcess, execFile, spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import type { MachineFacts } from "./facts.js";
import { findWorkspaceCommand, type LabOptions, labDown, labUp, stateDirOf } from "./lab.js";
import { NsWorker } from "./netns.js";
import { netnsName, planLab } from "./plan.js";
import {
  firstReplyAfter,
  ingestProbeLine,
  ingestTcpLine,
  longestStall,
  newProbeLog,
  newTcpLog,
  outage,
  type ProbeLog,
  type TcpLog,
} from "./probe.js";
import { percentile } from "./stats.js";
import { readVmLocation } from "./toolstack.js";
import { DEFAULT_TOPOLOGY, parseTopology, type Topology, type TopologyInput } from "./topology.js";
import { XAPI_MIGRATION_FILE, XAPI_NETWORK_CONF, xapiXenroamArgs } from "./xapi.js";

const LAB_MAIN = fileURLToPath(new URL("./main.js", import.meta.url));

export interface Scenario {
  readonly name: string;
  readonly description: string;
  readonly hosts: readonly [string, string];
  readonly method: boolean;
  readonly ra: { readonly minIntervalMs: number; readonly maxIntervalMs: number };
  readonly tunedGuest: boolean;
  /** Also probe CN→VM: only where the VM keeps an address the CN can reach (the same subnet, or the HoA). */
  readonly reverse?: boolean;
  /** The mobility layer: the VM keeps its HoA; every probe addresses it; a TCP stream CN←VM runs throughout. */
  readonly mobility?: boolean;
  /**
   * How the lab toolstack restores the VM: "lab" (the default) holds the old primary; "xl" restores it plugged;
   * "xapi" migrates through the lab's XAPI (xapi.ts) with `xenroam --toolstack xapi`, every vif plugged too.
   */
  readonly restore?: "lab" | "xl" | "xapi";
}

const STANDARD_RA = { minIntervalMs: 3000, maxIntervalMs: 4000 };
const FAST_RA = { minIntervalMs: 30, maxIntervalMs: 70 };

const RESTORE_TEXT: Readonly<Record<Topology["toolstack"]["restore"], string>> = {
  lab: "held",
  xl: "xl-shaped (no hold)",
  xapi: "through the lab's XAPI (no hold)",
};

export const SCENARIOS: readonly Scenario[] = [
  {
    name: "same-subnet",
    description: "migration inside site a (hosta <-> hosta2): the reference",
    hosts: ["hosta", "hosta2"],
    method: false,
    ra: STANDARD_RA,
    tunedGuest: false,
    reverse: true,
  },
  {
    name: "slaac-standard",
    description: "across sites, no method, radvd 3-4 s intervals",
    hosts: ["hosta", "hostb"],
    method: false,
    ra: STANDARD_RA,
    tunedGuest: false,
  },
  {
    name: "slaac-fast",
    description: "across sites, no method, radvd 30-70 ms intervals",
    hosts: ["hosta", "hostb"],
    method: false,
    ra: FAST_RA,
    tunedGuest: false,
  },
  {
    name: "slaac-tuned",
    description:
      "across sites, no method, best-tuned guest (RS at once, old route dropped, no DAD), 30-70 ms RAs",
    hosts: ["hosta", "hostb"],
    method: false,
    ra: FAST_RA,
    tunedGuest: true,
  },
  {
    name: "method",
    description: "across sites with xenroam's dual-interface method (site RAs at standard 3-4 s)",
    hosts: ["hosta", "hostb"],
    method: true,
    ra: STANDARD_RA,
    tunedGuest: false,
  },
  {
    name: "method-xl",
    description:
      "the method as xl restores the VM: every vif plugged (no hold), frontends reconnecting after resume",
    hosts: ["hosta", "hostb"],
    method: true,
    ra: STANDARD_RA,
    tunedGuest: false,
    restore: "xl",
  },
  {
    name: "method-xapi",
    description:
      "the method through XAPI across pools: the real xen-api client, VM.migrate_send with a swapping vif_map, xenroam's hooks where xenopsd runs them (the arrival written by vif-hotplug during the memory copy), every vif plugged, frontends reconnecting after resume",
    hosts: ["hosta", "hostb"],
    method: true,
    ra: STANDARD_RA,
    tunedGuest: false,
    restore: "xapi",
  },
  {
    name: "method+hoa",
    description:
      "the method with the mobility layer: the VM keeps its home address; probes and a TCP stream use it",
    hosts: ["hosta", "hostb"],
    method: true,
    ra: STANDARD_RA,
    tunedGuest: false,
    reverse: true,
    mobility: true,
  },
];

export interface RunResult {
  readonly from: string;
  readonly to: string;
  readonly gapMs: number;
  readonly pausedMs: number;
  readonly networkMs: number;
  readonly lost: number;
  readonly method: string;
  /** False when no reply came back within the deadline; gapMs then counts up to the deadline. */
  readonly recovered: boolean;
  /** CN→VM, where measured. */
  readonly reverse?: { readonly gapMs: number; readonly networkMs: number; readonly lost: number };
  /** The TCP stream's longest stall around this migration (method+hoa). */
  readonly tcpStallMs?: number;
  /** Mobility layer: from the pause to the control server's acceptance of the relayed activation. */
  readonly relayMs?: number;
  /** Through the lab's XAPI: whether the vif-hotplug hook had written the arrival before the unpause. */
  readonly arrivalBeforeResume?: boolean;
}

export interface ScenarioResult {
  readonly name: string;
  readonly description: string;
  /** How the lab toolstack restored the VM (the topology's `toolstack`): hold or xl-shaped, reconnect delay. */
  readonly toolstack: Topology["toolstack"];
  readonly runs: number;
  readonly gapMs: { readonly p50: number; readonly p95: number; readonly max: number };
  readonly pausedMs: { readonly p50: number };
  readonly networkMs: { readonly p50: number; readonly p95: number };
  readonly lost: number;
  /** Runs that never recovered within RECOVERY_DEADLINE_MS. */
  readonly unrecovered: number;
  /** The same statistics CN→VM, for scenarios where the VM keeps a reachable address. */
  readonly cnToVm?: {
    readonly gapMs: { readonly p50: number; readonly p95: number; readonly max: number };
    readonly networkMs: { readonly p50: number; readonly p95: number };
    readonly lost: number;
  };
  /** The TCP stream CN←VM to the HoA, kept open through every run (method+hoa). */
  readonly tcp?: {
    readonly longestStallMs: number;
    readonly stallP50Ms: number;
    /** Whether the connection was reset or closed at any point: it must not be. */
    readonly reset: boolean;
  };
  readonly samples: readonly RunResult[];
}

/** A run with no reply this long after the migration returned counts as not recovered. */
export const RECOVERY_DEADLINE_MS = 20_000;

/** Removes what a long stay at the current site would have expired: other sites' addresses and routers. */
async function settleGuest(vm: NsWorker, prefix: string, gateway: string): Promise<void> {
  const nl = vm.netlink;
  const net = prefix.split("::")[0] ?? prefix;
  for (const a of await nl.addresses("eth0")) {
    if (a.scope === "global" && !a.address.startsWith(`${net}:`))
      await nl.deleteAddress("eth0", `${a.address}/${a.prefixLength}`).catch(() => {});
  }
  for (const r of await nl.routes({ dev: "eth0" })) {
    if (r.dst === "default" && r.gateway !== gateway) {
      await nl
        .deleteRoute({
          dst: "default",
          dev: "eth0",
          metric: r.metric,
          ...(r.gateway ? { gateway: r.gateway } : {}),
        })
        .catch(() => {});
    }
  }
}

export interface BenchOptions extends LabOptions {
  readonly runs: number;
  readonly scenarios?: readonly string[];
  readonly labName?: string;
}

function readXapiMigration(
  stateDir: string,
): { pausedMs?: number; vifHotplug?: { beforeUnpause: boolean } } | undefined {
  try {
    return JSON.parse(readFileSync(join(stateDir, XAPI_MIGRATION_FILE), "utf8")) as {
      pausedMs?: number;
      vifHotplug?: { beforeUnpause: boolean };
    };
  } catch {
    return undefined;
  }
}

function runCommand(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(argv[0] ?? "false", argv.slice(1), { maxBuffer: 1 << 22 }, (err, stdout, stderr) =>
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

function startIn(netns: string, args: string[]): ChildProcess {
  return spawn("ip", ["netns", "exec", netns, process.execPath, LAB_MAIN, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
  });
}

async function stop(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 3000);
  await exited;
  clearTimeout(timer);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitUntil(what: string, ms: number, check: () => boolean): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(20);
  }
}

async function runScenario(s: Scenario, options: BenchOptions, xenroam: string[]): Promise<ScenarioResult> {
  const progress = options.progress ?? (() => {});
  const base = structuredClone(DEFAULT_TOPOLOGY) as TopologyInput & { sites: Array<{ ra?: unknown }> };
  const { mobility, ...rest } = base;
  const input = {
    ...rest,
    ...(s.mobility ? { mobility } : {}),
    name: options.labName ?? "xb",
    sites: base.sites.map((site) => ({ ...site, ra: s.ra })),
    toolstack: { ...base.toolstack, restore: s.restore ?? "lab" },
  };
  const topology = parseTopology(input, `scenario ${s.name}`);
  const stateDir = stateDirOf(topology.name, options);
  await labDown(topology.name, { ...options, progress: () => {} });
  await labUp(topology, { ...options, progress: () => {} });
  const children: ChildProcess[] = [];
  const log: ProbeLog = newProbeLog();
  const back: ProbeLog = newProbeLog();
  const tcp: TcpLog = newTcpLog();
  try {
    children.push(startIn(netnsName(topology, topology.correspondent.name), ["probe-echo"]));
    if (s.tunedGuest)
      children.push(startIn(netnsName(topology, topology.vm.name), ["tuned-guest", "--dev", "eth0"]));
    await sleep(300);
    const sender = startIn(netnsName(topology, topology.vm.name), [
      "probe-send",
      "--to",
      topology.correspondent.address,
    ]);
    children.push(sender);
    if (sender.stdout) createInterface({ input: sender.stdout }).on("line", (l) => ingestProbeLine(log, l));
    if (s.reverse) {
      // The VM's address the CN can use: its home address with the mobility layer, else (same subnet) its own.
      if (!topology.mobility && topology.vm.addrGenMode !== 0)
        throw new Error(
          "the bench probes the VM at its EUI-64 address without a HoA: give the VM addrGenMode 0",
        );
      const vmAddress = topology.mobility?.hoa ?? planLab(topology).vms[0]?.primary.expectedAddress ?? "";
      children.push(startIn(netnsName(topology, topology.vm.name), ["probe-echo"]));
      await sleep(300);
      const cn = startIn(netnsName(topology, topology.correspondent.name), ["probe-send", "--to", vmAddress]);
      children.push(cn);
      if (cn.stdout) createInterface({ input: cn.stdout }).on("line", (l) => ingestProbeLine(back, l));
    }
    if (s.mobility && topology.mobility) {
      children.push(startIn(netnsName(topology, topology.vm.name), ["probe-tcp-server"]));
      await sleep(300);
      const client = startIn(netnsName(topology, topology.correspondent.name), [
        "probe-tcp-client",
        "--to",
        topology.mobility.hoa,
      ]);
      children.push(client);
      if (client.stdout) createInterface({ input: client.stdout }).on("line", (l) => ingestTcpLine(tcp, l));
      await waitUntil("the TCP stream to connect", 15_000, () => tcp.connectedAt !== undefined);
    }
    await waitUntil("the probe to get replies", 15_000, () => log.replies.length > 10);
    if (s.reverse) await waitUntil("the CN→VM probe to get replies", 15_000, () => back.replies.length > 10);

    const samples: RunResult[] = [];
    const vmWorker =
      s.method || s.name === "same-subnet"
        ? undefined
        : await NsWorker.start(netnsName(topology, topology.vm.name));
    try {
      for (let i = 0; i < options.runs; i++) {
        const here = readVmLocation(stateDir).host;
        const there = here === s.hosts[0] ? s.hosts[1] : s.hosts[0];
        const t0 = Date.now();
        // Through XAPI, xenroam is configured as on a XAPI host (this pool's XAPI, the other's for a cross-pool
        // move); otherwise it drives the lab's toolstack directly.
        const how =
          s.restore === "xapi" ? xapiXenroamArgs(topology, stateDir, here, there) : ["--lab", stateDir];
        const r = await runCommand([
          "ip",
          "netns",
          "exec",
          netnsName(topology, here),
          // The lab's XAPI hosts are on the Linux bridge backend: their network.conf says so.
          ...(s.restore === "xapi"
            ? ["env", `XENROAM_NETWORK_CONF=${join(stateDir, XAPI_NETWORK_CONF)}`]
            : []),
          ...xenroam,
          ...how,
          "migrate",
          topology.vm.name,
          there,
          "--json",
          ...(s.method ? [] : ["--no-method"]),
        ]);
        const t1 = Date.now();
        if (r.code !== 0) {
          throw new Error(
            `migration ${i + 1} of ${s.name} failed: ${r.stderr.trim().split("\n").at(-1) ?? ""}`,
          );
        }
        const report = JSON.parse(r.stdout) as {
          pausedMs?: number;
          method: string;
          timeline?: Array<{ phase: string; atMs: number }>;
        };
        const phaseAt = (p: string) => report.timeline?.find((m) => m.phase === p)?.atMs;
        const [pausedAt, relayedAt] = [phaseAt("paused"), phaseAt("binding-relayed")];
        const relayMs = pausedAt !== undefined && relayedAt !== undefined ? relayedAt - pausedAt : undefined;
        const deadline = t1 + RECOVERY_DEADLINE_MS;
        while (firstReplyAfter(log, t1) === undefined && Date.now() < deadline) await sleep(20);
        const recoveredAt = firstReplyAfter(log, t1);
        const end = (recoveredAt ?? Date.now()) + 100;
        await sleep(Math.max(0, end - Date.now()));
        const measured = outage(log, t0, end);
        // Without recovery, the silence runs from the last reply before the migration to the deadline.
        const lastBefore = log.replies.filter((x) => x < t0).at(-1) ?? t0;
        const o = recoveredAt === undefined ? { ...measured, gapMs: end - lastBefore } : measured;
        // XAPI does not say how long the VM was paused; the lab's XAPI records it (xapi.ts).
        const xapiRecord = s.restore === "xapi" ? readXapiMigration(stateDir) : undefined;
        const pausedMs = report.pausedMs ?? xapiRecord?.pausedMs ?? 0;
        let reverse: RunResult["reverse"];
        if (s.reverse) {
          while (firstReplyAfter(back, t1) === undefined && Date.now() < deadline) await sleep(20);
          const backEnd = (firstReplyAfter(back, t1) ?? Date.now()) + 100;
          await sleep(Math.max(0, backEnd - Date.now()));
          const b = outage(back, t0, backEnd);
          reverse = { gapMs: b.gapMs, networkMs: Math.max(0, b.gapMs - pausedMs), lost: b.lost };
        }
        let tcpStallMs: number | undefined;
        if (s.mobility) {
          // TCP recovers on its retransmission timer (200 ms at least), after the network does.
          const tcpDeadline = Date.now() + 5000;
          while (!tcp.closed && !tcp.stalls.some(([, e]) => e > t1) && Date.now() < tcpDeadline)
            await sleep(20);
          if (tcp.closed) throw new Error(`the TCP stream to the HoA was closed: ${tcp.closed}`);
          tcpStallMs = longestStall(tcp, t0, Date.now());
        }
        samples.push({
          from: here,
          to: there,
          gapMs: o.gapMs,
          pausedMs,
          networkMs: Math.max(0, o.gapMs - pausedMs),
          lost: o.lost,
          method: report.method,
          recovered: recoveredAt !== undefined,
          ...(reverse ? { reverse } : {}),
          ...(tcpStallMs !== undefined ? { tcpStallMs } : {}),
          ...(relayMs !== undefined ? { relayMs } : {}),
          ...(xapiRecord?.vifHotplug ? { arrivalBeforeResume: xapiRecord.vifHotplug.beforeUnpause } : {}),
        });
        progress(
          `${s.name} ${i + 1}/${options.runs}: ${here} -> ${there} gap ${o.gapMs} ms (paused ${pausedMs} ms)${recoveredAt === undefined ? " NOT RECOVERED" : ""}`,
        );
        if (vmWorker) {
          // Baselines start each run from a clean steady state, as if the VM had lived at its site for days:
          // the other site's address and router are gone. This favours the baselines.
          const site = topology.sites.find(
            (x) => x.name === topology.hosts.find((h) => h.name === there)?.site,
          );
          if (site) await settleGuest(vmWorker, site.prefix, site.gateway.linkLocal);
          await sleep(1500);
        } else {
          await sleep(300);
        }
      }
    } finally {
      await vmWorker?.close();
    }
    const gaps = samples.map((x) => x.gapMs);
    const nets = samples.map((x) => x.networkMs);
    return {
      name: s.name,
      description: s.description,
      toolstack: topology.toolstack,
      runs: samples.length,
      gapMs: { p50: percentile(gaps, 50), p95: percentile(gaps, 95), max: Math.max(...gaps) },
      pausedMs: {
        p50: percentile(
          samples.map((x) => x.pausedMs),
          50,
        ),
      },
      networkMs: { p50: percentile(nets, 50), p95: percentile(nets, 95) },
      lost: samples.reduce((n, x) => n + x.lost, 0),
      unrecovered: samples.filter((x) => !x.recovered).length,
      ...(s.reverse ? { cnToVm: reverseStats(samples) } : {}),
      ...(s.mobility ? { tcp: tcpStats(samples, tcp) } : {}),
      samples,
    };
  } finally {
    for (const c of children.reverse()) await stop(c);
    await labDown(topology.name, { ...options, progress: () => {} });
  }
}

function tcpStats(samples: readonly RunResult[], log: TcpLog): NonNullable<ScenarioResult["tcp"]> {
  const stalls = samples.map((x) => x.tcpStallMs ?? 0);
  return {
    longestStallMs: Math.max(0, ...stalls),
    stallP50Ms: percentile(stalls, 50),
    reset: log.closed !== undefined,
  };
}

function reverseStats(samples: readonly RunResult[]): NonNullable<ScenarioResult["cnToVm"]> {
  const r = samples.flatMap((x) => (x.reverse ? [x.reverse] : []));
  const gaps = r.map((x) => x.gapMs);
  const nets = r.map((x) => x.networkMs);
  return {
    gapMs: { p50: percentile(gaps, 50), p95: percentile(gaps, 95), max: Math.max(...gaps) },
    networkMs: { p50: percentile(nets, 50), p95: percentile(nets, 95) },
    lost: r.reduce((n, x) => n + x.lost, 0),
  };
}

export function markdownTable(results: readonly ScenarioResult[]): string {
  const rows = results.flatMap((r) => [
    row(r),
    ...(r.cnToVm
      ? [
          `| ${r.name} (CN→VM) | ${r.runs} | ${r.cnToVm.gapMs.p50} | ${r.cnToVm.gapMs.p95} | ${r.cnToVm.gapMs.max} | ${r.pausedMs.p50} | ${r.cnToVm.networkMs.p50} | ${r.cnToVm.networkMs.p95} | ${r.cnToVm.lost} | |`,
        ]
      : []),
  ]);
  const tcp = results.flatMap((r) =>
    r.tcp
      ? [
          `- TCP stream CN←VM to the HoA through ${r.runs} migrations (${r.name}): longest stall ${r.tcp.longestStallMs} ms, p50 ${r.tcp.stallP50Ms} ms, ${r.tcp.reset ? "RESET" : "never reset"}`,
        ]
      : [],
  );
  const relay = results.flatMap((r) => {
    const ms = r.samples.flatMap((x) => (x.relayMs === undefined ? [] : [x.relayMs]));
    return ms.length > 0
      ? [
          `- Relayed activation (${r.name}): accepted by the control server ${percentile(ms, 50)} ms after the pause at p50, ${Math.max(...ms)} ms at most (${ms.length} of ${r.runs} runs)`,
        ]
      : [];
  });
  const arrival = results.flatMap((r) => {
    const seen = r.samples.filter((x) => x.arrivalBeforeResume !== undefined);
    return seen.length > 0
      ? [
          `- Arrival written by the vif-hotplug hook before the unpause (${r.name}): ${seen.filter((x) => x.arrivalBeforeResume).length} of ${seen.length} runs`,
        ]
      : [];
  });
  const shapes = [...new Set(results.map((r) => `${r.toolstack.reconnectMs}`))];
  return [
    `Frontends reconnect ${shapes.join("/")} ms after resume in every scenario; restore: ${results.map((r) => `${r.name} ${RESTORE_TEXT[r.toolstack.restore]}`).join(", ")}.`,
    "",
    "| scenario | runs | gap p50 (ms) | gap p95 | gap max | paused p50 | network p50 | network p95 | lost | not recovered |",
    "|---|---|---|---|---|---|---|---|---|---|",
    ...rows,
    ...(tcp.length + relay.length + arrival.length > 0 ? ["", ...tcp, ...relay, ...arrival] : []),
  ].join("\n");
}

function row(r: ScenarioResult): string {
  return `| ${r.name} | ${r.runs} | ${r.gapMs.p50} | ${r.gapMs.p95} | ${r.gapMs.max} | ${r.pausedMs.p50} | ${r.networkMs.p50} | ${r.networkMs.p95} | ${r.lost} | ${r.unrecovered} |`;
}

export async function runBench(options: BenchOptions): Promise<ScenarioResult[]> {
  const xenroam = findWorkspaceCommand("xenroam");
  if (!xenroam) throw new Error("the xenroam command is not installed in this workspace; run npm run setup");
  const wanted = options.scenarios ?? SCENARIOS.map((s) => s.name);
  const unknown = wanted.filter((w) => !SCENARIOS.some((s) => s.name === w));
  if (unknown.length > 0) {
    throw new Error(
      `unknown scenario(s) ${unknown.join(", ")}; scenarios: ${SCENARIOS.map((s) => s.name).join(", ")}`,
    );
  }
  const results: ScenarioResult[] = [];
  for (const s of SCENARIOS.filter((x) => wanted.includes(x.name))) {
    options.progress?.(`scenario ${s.name}: ${s.description}`);
    results.push(await runScenario(s, options, xenroam));
  }
  return results;
}

export function writeBenchJson(
  file: string,
  results: readonly ScenarioResult[],
  machine: MachineFacts,
): void {
  writeFileSync(
    file,
    `${JSON.stringify({ generatedAt: new Date().toISOString(), machine, scenarios: results }, null, 2)}\n`,
  );
}

/** The machine's facts as one line under the table. */
export function machineLine(machine: MachineFacts): string {
  return `Machine: ${Object.entries(machine)
    .map(([k, v]) => `${k} ${v}`)
    .join(", ")}.`;
}

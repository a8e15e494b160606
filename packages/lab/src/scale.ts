// `xenroam-lab scale`: the figures at scale, in the namespace lab, through the real xenroam, guest agents,
// radvd, control server and correspondent. (a) the fan-out of an activation to many watching correspondents,
// SQLite and etcd side by side (fanout.ts, in namespaces of its own). (b) one host preparing N VMs at once, in
// one xenroam process: the time each VM took to prepare, that process's peak RSS, the radvd processes per
// staged site. (c) an evacuation of N VMs with a 10 ms probe in every VM: each VM's network downtime (the
// probe's longest silence less the pause) beside a single migration's, measured in the same lab with the same
// load.

import { type ChildProcess, execFile, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { type FailoverFigure, failoverMarkdown, measureFailover } from "./failover.js";
import { type FanoutFigure, fanoutMarkdown, type FanoutStore, measureFanout, stopChild } from "./fanout.js";
import { findWorkspaceCommand, type LabOptions, labDown, labUp, stateDirOf } from "./lab.js";
import { netnsName } from "./plan.js";
import { firstReplyAfter, ingestProbeLine, newProbeLog, outage, type ProbeLog } from "./probe.js";
import { percentile } from "./stats.js";
import { processesIn } from "./system.js";
import { readVmLocation } from "./toolstack.js";
import { DEFAULT_TOPOLOGY, labVms, parseTopology, type Topology, withVmCount } from "./topology.js";

const LAB_MAIN = fileURLToPath(new URL("./main.js", import.meta.url));

export interface ScaleOptions extends LabOptions {
  /** Watcher counts for (a), the fan-out. */
  readonly fanout: readonly number[];
  /** The control server's stores (a) runs on, one after the other. */
  readonly stores: readonly FanoutStore[];
  /** (a): activations per count and store (default 20), and real correspondent agents beside (default 3). */
  readonly activations?: number;
  readonly correspondents?: number;
  /** VM counts for (b), the prepare of many VMs at once. */
  readonly prepare: readonly number[];
  /** VM counts for (c), the evacuation. */
  readonly evacuate: readonly number[];
  /** evacuate --parallel. */
  readonly parallel: number;
  /** Single migrations measured for the evacuation's baseline (there and back, so an even number). */
  readonly singleRuns: number;
  /** (d): migrations under control-plane faults (replicas on etcd); 0 skips it. */
  readonly failover?: number;
  /** The lab's name (namespace prefix). */
  readonly labName?: string;
}

export interface PrepareFigure {
  readonly vms: number;
  readonly prepared: number;
  readonly failed: number;
  /** Each VM's prepare, from the moment the one process began it to its answer. */
  readonly p50Ms: number;
  readonly p95Ms: number;
  readonly maxMs: number;
  /** The whole command, all VMs. */
  readonly wallMs: number;
  /** The xenroam process's peak resident set (getrusage ru_maxrss). */
  readonly peakRssMb: number;
  /** radvd instances on the source host while every VM was prepared, and staging bridges there. */
  readonly radvd: number;
  readonly stagingBridges: number;
  readonly errors: readonly string[];
}

export interface EvacuationVm {
  readonly vm: string;
  readonly to: string;
  readonly outcome: string;
  readonly pausedMs: number;
  readonly gapMs: number;
  readonly networkMs: number;
}

export interface EvacuationFigure {
  readonly vms: number;
  readonly parallel: number;
  /** A single migration's network downtime, same lab, same load, one sample per run. */
  readonly single: { readonly networkMs: readonly number[]; readonly p50Ms: number };
  /** Every VM of both evacuations (there, and back). */
  readonly rows: readonly EvacuationVm[];
  readonly p50Ms: number;
  readonly p95Ms: number;
  /** Evacuation p50 less the single migration's p50. */
  readonly deltaP50Ms: number;
  readonly method: number;
  readonly wallMs: readonly number[];
}

export interface ScaleResult {
  readonly fanout: readonly FanoutFigure[];
  readonly prepare: readonly PrepareFigure[];
  readonly evacuation: readonly EvacuationFigure[];
  /** (d) the control plane's failover under migrations, when run. */
  readonly failover?: FailoverFigure;
  /** What was not measured here, and why. */
  readonly notMeasured: readonly string[];
}

interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

function runCommand(argv: readonly string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(argv[0] as string, argv.slice(1), { maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) =>
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

function startIn(netns: string, args: string[]): ChildProcess {
  return spawn("ip", ["netns", "exec", netns, process.execPath, LAB_MAIN, ...args], {
    stdio: ["ignore", "pipe", "ignore"],
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function xenroamCommand(): string[] {
  const x = findWorkspaceCommand("xenroam");
  if (!x) throw new Error("no xenroam in this workspace; run `npm run build`");
  return x;
}

function topologyWith(name: string, vms: number): Topology {
  return parseTopology(withVmCount({ ...DEFAULT_TOPOLOGY, name }, vms), `the scale lab with ${vms} VMs`);
}

async function withLab<T>(
  topology: Topology,
  options: ScaleOptions,
  work: (stateDir: string) => Promise<T>,
): Promise<T> {
  const quiet = { ...options, progress: () => {} };
  await labDown(topology.name, { ...quiet, force: true });
  await labUp(topology, quiet);
  try {
    return await work(stateDirOf(topology.name, options));
  } finally {
    await labDown(topology.name, { ...quiet, force: true });
  }
}

/** (b): every VM of the lab prepared for hostb at once by one `xenroam prepare` on hosta. */
export async function measurePrepare(vms: number, options: ScaleOptions): Promise<PrepareFigure> {
  const progress = options.progress ?? (() => {});
  const topology = topologyWith(options.labName ?? "xs", vms);
  const names = labVms(topology).map((v) => v.name);
  const xenroam = xenroamCommand();
  progress(`prepare ×${vms}: building a lab with ${vms} VMs`);
  return withLab(topology, options, async (stateDir) => {
    const hosta = netnsName(topology, "hosta");
    const base = ["ip", "netns", "exec", hosta, ...xenroam, "--lab", stateDir];
    progress(`prepare ×${vms}: one xenroam prepares all ${vms} for hostb`);
    const began = Date.now();
    const r = await runCommand([
      ...base,
      "prepare",
      ...names,
      "--to",
      "hostb",
      "--json",
      "--timeout",
      "60000",
    ]);
    const wallMs = Date.now() - began;
    let out: {
      vms: Array<{ vm: string; kind: string; ms: number; error?: string }>;
      peakRssBytes: number;
    };
    try {
      out = JSON.parse(r.stdout) as typeof out;
    } catch {
      throw new Error(
        `xenroam prepare printed no report (exit ${r.code}): ${r.stderr.trim().split("\n").at(-1)}`,
      );
    }
    const procs = await processesIn(hosta);
    const { stdout: links } = await runCommand(["ip", "-n", hosta, "-o", "link", "show", "type", "bridge"]);
    const ok = out.vms.filter((v) => v.kind === "prepared");
    const ms = ok.map((v) => v.ms);
    const figure: PrepareFigure = {
      vms,
      prepared: ok.length,
      failed: out.vms.length - ok.length,
      p50Ms: percentile(ms, 50),
      p95Ms: percentile(ms, 95),
      maxMs: Math.max(...ms),
      wallMs,
      peakRssMb: Math.round((out.peakRssBytes / 2 ** 20) * 10) / 10,
      // radvd runs as two processes (its privilege-separated child): an instance is one whose parent is not one.
      radvd: (() => {
        const radvd = procs.filter((p) => p.comm === "radvd");
        const pids = new Set(radvd.map((p) => p.pid));
        return radvd.filter((p) => !pids.has(p.ppid)).length;
      })(),
      stagingBridges: links.split("\n").filter((l) => /: xr-[a-z0-9]+[:@]/.test(l)).length,
      errors: out.vms.flatMap((v) => (v.error ? [`${v.vm}: ${v.error}`] : [])).slice(0, 5),
    };
    progress(
      `prepare ×${vms}: ${figure.prepared} prepared, p50 ${figure.p50Ms} ms, p95 ${figure.p95Ms} ms, peak RSS ${figure.peakRssMb} MB, radvd ${figure.radvd}`,
    );
    await runCommand([...base, "abort", ...names]);
    return figure;
  });
}

/** Each VM's probe: it sends to the correspondent's echo server every 10 ms from inside the VM. */
async function startProbes(topology: Topology, children: ChildProcess[]): Promise<Map<string, ProbeLog>> {
  children.push(startIn(netnsName(topology, topology.correspondent.name), ["probe-echo"]));
  await sleep(300);
  const logs = new Map<string, ProbeLog>();
  for (const vm of labVms(topology)) {
    const log = newProbeLog();
    logs.set(vm.name, log);
    const sender = startIn(netnsName(topology, vm.name), [
      "probe-send",
      "--to",
      topology.correspondent.address,
    ]);
    children.push(sender);
    if (sender.stdout) createInterface({ input: sender.stdout }).on("line", (l) => ingestProbeLine(log, l));
  }
  const deadline = Date.now() + 30_000 + 200 * logs.size;
  while ([...logs.values()].some((l) => l.replies.length < 10)) {
    if (Date.now() > deadline) throw new Error("the VMs' probes got no replies from the correspondent");
    await sleep(50);
  }
  return logs;
}

/** Waits until every log has a reply after `after` (or the deadline), then 100 ms more. */
async function recovered(logs: readonly ProbeLog[], after: number, deadlineMs = 10_000): Promise<number> {
  const deadline = Date.now() + deadlineMs;
  while (logs.some((l) => firstReplyAfter(l, after) === undefined) && Date.now() < deadline) await sleep(20);
  const end = Date.now() + 100;
  await sleep(100);
  return end;
}

/** (c): single migrations of the first VM, then every VM evacuated from hosta to site b and back. */
export async function measureEvacuation(vms: number, options: ScaleOptions): Promise<EvacuationFigure> {
  const progress = options.progress ?? (() => {});
  const topology = topologyWith(options.labName ?? "xs", vms);
  const xenroam = xenroamCommand();
  progress(`evacuate ×${vms}: building a lab with ${vms} VMs, a probe in each`);
  return withLab(topology, options, async (stateDir) => {
    const children: ChildProcess[] = [];
    try {
      const logs = await startProbes(topology, children);
      const on = (host: string) => [
        "ip",
        "netns",
        "exec",
        netnsName(topology, host),
        ...xenroam,
        "--lab",
        stateDir,
      ];
      const single: number[] = [];
      const first = topology.vm.name;
      const firstLog = logs.get(first) as ProbeLog;
      for (let i = 0; i < options.singleRuns; i++) {
        const here = readVmLocation(stateDir, first).host;
        const there = here === "hosta" ? "hostb" : "hosta";
        const t0 = Date.now();
        const r = await runCommand([...on(here), "migrate", first, there, "--json"]);
        if (r.code !== 0)
          throw new Error(`single migration ${i + 1} failed: ${r.stderr.trim().split("\n").at(-1)}`);
        const report = JSON.parse(r.stdout) as { pausedMs?: number };
        const end = await recovered([firstLog], Date.now());
        const { gapMs } = outage(firstLog, t0, end);
        single.push(Math.max(0, gapMs - (report.pausedMs ?? 0)));
        progress(
          `evacuate ×${vms}: single migration ${i + 1}/${options.singleRuns}: network ${single.at(-1)} ms`,
        );
        await sleep(300);
      }
      if (readVmLocation(stateDir, first).host !== "hosta") {
        const r = await runCommand([...on("hostb"), "migrate", first, "hosta", "--json"]);
        if (r.code !== 0)
          throw new Error(`moving ${first} back failed: ${r.stderr.trim().split("\n").at(-1)}`);
        await recovered([firstLog], Date.now());
      }
      const rows: EvacuationVm[] = [];
      const wallMs: number[] = [];
      for (const [from, site] of [
        ["hosta", "b"],
        ["hostb", "a"],
      ] as const) {
        const t0 = Date.now();
        const r = await runCommand([
          ...on(from),
          "evacuate",
          from,
          "--to",
          site,
          "--parallel",
          String(options.parallel),
          "--json",
        ]);
        wallMs.push(Date.now() - t0);
        let summary: { rows: Array<{ vm: string; to: string; outcome: string; downtimeMs?: number }> };
        try {
          summary = JSON.parse(r.stdout) as typeof summary;
        } catch {
          throw new Error(
            `xenroam evacuate printed no summary (exit ${r.code}): ${r.stderr.trim().split("\n").at(-1)}`,
          );
        }
        const end = await recovered([...logs.values()], Date.now());
        for (const row of summary.rows) {
          const log = logs.get(row.vm);
          if (!log) continue;
          const { gapMs } = outage(log, t0, end);
          const pausedMs = row.downtimeMs ?? 0;
          rows.push({
            vm: row.vm,
            to: row.to,
            outcome: row.outcome,
            pausedMs,
            gapMs,
            networkMs: Math.max(0, gapMs - pausedMs),
          });
        }
        progress(
          `evacuate ×${vms}: ${from} -> site ${site} in ${wallMs.at(-1)} ms; network p50 ${percentile(
            rows.slice(-summary.rows.length).map((x) => x.networkMs),
            50,
          )} ms`,
        );
        await sleep(500);
      }
      const network = rows.map((r) => r.networkMs);
      const singleP50 = percentile(single, 50);
      const p50Ms = percentile(network, 50);
      return {
        vms,
        parallel: options.parallel,
        single: { networkMs: single, p50Ms: singleP50 },
        rows,
        p50Ms,
        p95Ms: percentile(network, 95),
        deltaP50Ms: p50Ms - singleP50,
        method: rows.filter((r) => r.outcome === "method").length,
        wallMs,
      };
    } finally {
      await Promise.all(children.map(stopChild));
    }
  });
}

export async function runScale(options: ScaleOptions): Promise<ScaleResult> {
  const fanout = await measureFanout({
    counts: options.fanout,
    stores: options.stores,
    labName: options.labName ?? "xs",
    ...(options.activations !== undefined ? { activations: options.activations } : {}),
    ...(options.correspondents !== undefined ? { correspondents: options.correspondents } : {}),
    ...(options.stateRoot !== undefined ? { stateRoot: options.stateRoot } : {}),
    ...(options.progress !== undefined ? { progress: options.progress } : {}),
  });
  const prepare: PrepareFigure[] = [];
  for (const n of options.prepare) prepare.push(await measurePrepare(n, options));
  const evacuation: EvacuationFigure[] = [];
  for (const n of options.evacuate) evacuation.push(await measureEvacuation(n, options));
  // A failure here is reported with the other parts' figures, not instead of them.
  let failoverError: string | undefined;
  const failover = options.failover
    ? await measureFailover({
        ...options,
        migrations: options.failover,
        labName: `${(options.labName ?? "xs").slice(0, 5)}f`,
        say: (line) => options.progress?.(`failover: ${line}`),
      }).catch((err: unknown) => {
        failoverError = (err as Error).message;
        return undefined;
      })
    : undefined;
  const notMeasured = [
    ...(failoverError ? [`failover: the run failed (${failoverError})`] : []),
    ...(options.prepare.length === 0 || options.prepare.some((n) => n >= 1000)
      ? []
      : [
          "prepare ×1,000: a lab VM is a namespace with its own guest agent (Node.js, ~50 MB): 1,000 need ~50 GB, this machine has 24 GB; the lab stops at 128",
        ]),
  ];
  return { fanout, prepare, evacuation, ...(failover ? { failover } : {}), notMeasured };
}

const cell = (n: number) => (Number.isFinite(n) ? String(Math.round(n)) : "-");

/** The tables the README shows. */
export function scaleMarkdown(r: ScaleResult): string {
  const lines: string[] = [];
  if (r.fanout.length > 0) lines.push(fanoutMarkdown(r.fanout), "");
  if (r.prepare.length > 0) {
    lines.push(
      "| VMs prepared at once (one host) | prepared | prepare p50 | p95 | max | all, wall | xenroam peak RSS | radvd on the host |",
      "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
      ...r.prepare.map(
        (p) =>
          `| ${p.vms} | ${p.prepared} | ${cell(p.p50Ms)} ms | ${cell(p.p95Ms)} ms | ${cell(p.maxMs)} ms | ${(p.wallMs / 1000).toFixed(1)} s | ${p.peakRssMb} MB | ${p.radvd} (${p.stagingBridges} staging bridge) |`,
      ),
      "",
    );
  }
  if (r.evacuation.length > 0) {
    lines.push(
      "| VMs evacuated (there and back) | parallel | with the method | network p50 | p95 | single migration's p50 | difference |",
      "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
      ...r.evacuation.map(
        (e) =>
          `| ${e.vms} | ${e.parallel} | ${e.method} of ${e.rows.length} | ${cell(e.p50Ms)} ms | ${cell(e.p95Ms)} ms | ${cell(e.single.p50Ms)} ms (${e.single.networkMs.length} runs) | ${e.deltaP50Ms >= 0 ? "+" : ""}${cell(e.deltaP50Ms)} ms |`,
      ),
      "",
    );
  }
  if (r.failover) lines.push(failoverMarkdown(r.failover), "");
  for (const n of r.notMeasured) lines.push(`Not measured: ${n}.`);
  return lines.join("\n").trimEnd();
}

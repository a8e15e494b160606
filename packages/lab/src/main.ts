#!/usr/bin/env node
// xenroam-lab: the paper's testbed in network namespaces on one Linux machine. Wires the adapters to the
// lab operations; human output on stdout/stderr, --json for machines.

import { spawn } from "node:child_process";
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { connect, createServer as createNetServer } from "node:net";
import { dirname, join } from "node:path";
import { Command, Option } from "commander";
import {
  findWorkspaceCommand,
  LabError,
  type LabOptions,
  type LabStatus,
  labDown,
  labStatus,
  labUp,
  readState,
  stateDirOf,
} from "./lab.js";
import { controlUrl } from "./mobility.js";
import { netnsName, routerAddressOf } from "./present.js";
import { machineLine, markdownTable, runBench, SCENARIOS, writeBenchJson } from "./bench.js";
import { machineFacts } from "./facts.js";
import { runEchoServer, runProbeSender, runTcpStreamClient, runTcpStreamServer } from "./probe.js";
import {
  DEFAULT_SETTLE_MS,
  FAULT_TEXT,
  FAULTS,
  type Fault,
  isFault,
  leakLines,
  runSoak,
  soakExitCode,
  soakTable,
  writeSoakJson,
} from "./soak.js";
import { FANOUT_STORES, type FanoutStore } from "./fanout.js";
import { runScale, scaleMarkdown } from "./scale.js";
import {
  parseScaleFile,
  type ScaleFile,
  ScaleFigureError,
  scaleFigureOf,
  scaleFigureSpec,
  ScaleFileError,
  type ScaleSource,
} from "./scalefigure.js";
import { runSupervisor } from "./supervisor.js";
import { runTunedGuest } from "./tuned.js";
import { LabXapi, XAPI_PASSWORD_FILE, type XapiLog } from "./xapi.js";
import { parseXe, runXe } from "./xe.js";
import {
  DEFAULT_TOPOLOGY,
  hoaOf,
  labVms,
  MAX_LAB_VMS,
  parseTopology,
  type Topology,
  TopologyError,
  type TopologyInput,
  withVmCount,
} from "./topology.js";

class UsageError extends Error {}

/** `up --control-replicas N`: the topology's control server as N replicas on the lab's etcd cluster. */
function withReplicas(t: Topology, text: string): Topology {
  const n = Number(text);
  if (!/^[1-3]$/.test(text))
    throw new UsageError(
      `--control-replicas ${text}: give 1, 2 or 3 (each replica is a xenroam-control process)`,
    );
  if (!t.mobility)
    throw new UsageError(
      "--control-replicas: this topology has no mobility layer (no control server to replicate)",
    );
  return parseTopology(
    { ...t, mobility: { ...t.mobility, store: "etcd", replicas: n } },
    `--control-replicas ${n}`,
  );
}

function loadTopology(file: string | undefined, vms?: string): Topology {
  if (vms !== undefined) {
    const n = Number(vms);
    if (!/^[0-9]+$/.test(vms) || n < 1 || n > MAX_LAB_VMS)
      throw new UsageError(
        `--vms ${vms}: give a VM count from 1 to ${MAX_LAB_VMS} (the lab's first VM included)`,
      );
    const base = file ? (loadTopology(file) as TopologyInput) : DEFAULT_TOPOLOGY;
    return parseTopology(
      withVmCount(base, n),
      file ? `${file} with --vms ${n}` : `the default topology with --vms ${n}`,
    );
  }
  if (!file) return parseTopology(DEFAULT_TOPOLOGY, "the default topology");
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new UsageError(`cannot read topology file ${file}: ${(err as Error).message}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new UsageError(`${file} is not valid JSON: ${(err as Error).message}`);
  }
  return parseTopology(value, file);
}

const progress = (line: string) => process.stderr.write(`xenroam-lab: ${line}\n`);

function labOptions(opts: { stateRoot?: string }): LabOptions {
  return { progress, ...(opts.stateRoot ? { stateRoot: opts.stateRoot } : {}) };
}

function labName(opts: { name?: string; topology?: string }): string {
  return opts.name ?? loadTopology(opts.topology).name;
}

function printStatus(s: LabStatus): void {
  if (s.phase === "absent") {
    console.log(`lab "${s.name}": not up (no state in ${s.stateDir}). Start it with: xenroam-lab up`);
    return;
  }
  console.log(`lab "${s.name}": ${s.phase}   state: ${s.stateDir}   supervisor: ${s.supervisor}`);
  console.log("nodes:");
  for (const n of s.nodes) {
    const present = s.namespaces.find((x) => x.name === n.netns)?.present ? "present" : "MISSING";
    console.log(`  ${n.node.padEnd(9)} ${n.role.padEnd(13)} netns ${n.netns.padEnd(12)} ${present}`);
  }
  const vms = s.vms ?? (s.vm ? [s.vm] : []);
  if (vms.length === 1 && s.vm)
    console.log(`the VM: ${s.vm.name} runs on ${s.vm.host} as domid ${s.vm.domid}`);
  else if (vms.length > 1) {
    console.log(`the VMs (${vms.length}):`);
    for (const v of vms) console.log(`  ${v.name.padEnd(9)} on ${v.host.padEnd(8)} domid ${v.domid}`);
  }
  console.log("services:");
  for (const svc of s.services)
    console.log(`  ${svc.name.padEnd(18)} ${svc.state}${svc.pid ? ` (pid ${svc.pid})` : ""}`);
}

function describe(t: Topology): string {
  const lines = [`topology "${t.name}" (the paper's Figure 3):`];
  lines.push(`  ${t.correspondent.name}: ${t.correspondent.address} on ${t.correspondent.prefix}`);
  lines.push(
    `  ${t.router.name}: one LAN per site, gateway link-local and MAC per LAN, radvd on each site LAN`,
  );
  for (const s of t.sites) {
    const hosts = t.hosts.filter((h) => h.site === s.name).map((h) => `${h.name} (${h.address})`);
    lines.push(
      `  site ${s.name}: ${s.prefix}, gateway ${s.gateway.linkLocal} ${s.gateway.mac}, RA every ${s.ra.minIntervalMs}-${s.ra.maxIntervalMs} ms; hosts: ${hosts.join(", ")}`,
    );
  }
  for (const vm of labVms(t)) {
    lines.push(
      `  ${vm.name} (domid ${vm.domid}) on ${vm.host}: eth0 ${vm.primaryMac} -> vif${vm.domid}.0 on ${t.bridges.real}; eth1 ${vm.secondaryMac} -> vif${vm.domid}.1 on ${t.bridges.parking}`,
    );
  }
  if (t.mobility) {
    const m = t.mobility;
    const homes = labVms(t).map((vm) => `${vm.name} keeps home address ${hoaOf(t, vm) ?? m.hoa}`);
    lines.push(
      `  mobility: ${homes.join(", ")}; ${m.replicas > 1 ? `${m.replicas} control server replicas` : "control server"} on ${t.router.name} at ${controlUrl(t, m)} (TLS, the lab's own CA; ${m.store === "etcd" ? "a three-member etcd cluster there" : "SQLite"}); correspondent agent on ${t.correspondent.name}`,
    );
  }
  return lines.join("\n");
}

function run(cmd: string, args: string[]): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: "inherit" });
    child.on("exit", (code, signal) => resolve(code ?? (signal ? 128 : 1)));
    child.on("error", (err) => {
      progress(`${cmd}: ${err.message}`);
      resolve(127);
    });
  });
}

const program = new Command("xenroam-lab")
  .description(
    "The xenroam lab: the paper's testbed (correspondent, IPv6 router with one LAN per site, Xen-like hosts with xenbr0 and a parking bridge, a VM with two vifs) built from network namespaces, veth pairs and bridges, with radvd on the router and a xenstored per host. Needs root.",
  )
  .enablePositionalOptions()
  .showHelpAfterError("(run with --help for usage)")
  .addHelpText(
    "after",
    [
      "",
      "Examples:",
      "  xenroam-lab up                      build the default lab (sites a and b, hosts hosta, hosta2, hostb)",
      "  xenroam-lab exec vm -- ping -6 -c 3 2001:db8:c::100",
      "  xenroam-lab exec hosta -- xenroam --lab /run/xenroam-lab/xr migrate vm hostb",
      "  xenroam-lab status",
      "  xenroam-lab down                    remove everything the lab made",
      "  xenroam-lab topology > my.json      start your own topology from the default one",
      "  xenroam-lab bench --runs 10 --json bench.json",
      "  xenroam-lab soak --migrations 100 --faults --json soak.json",
      "  xenroam-lab scale --json scale.json --svg scale.svg",
      "  xenroam-lab plot-scale --scale scale.json --svg scale.svg   redraw the figure, nothing run",
      "",
    ].join("\n"),
  );

const stateRootOption = () =>
  new Option("--state-root <dir>", "where lab state lives").default(undefined, "/run/xenroam-lab");

program
  .command("up")
  .description("build the lab (idempotent: an identical lab already up is left alone)")
  .option("--topology <file>", "a topology JSON file (default: the built-in Figure 3 topology)")
  .option(
    "--vms <n>",
    "run N VMs in all (the topology's VM and N-1 more beside it: vm2, vm3, …, each with its own MACs and home address)",
  )
  .option(
    "--control-replicas <n>",
    "run N control server replicas (1-3) sharing a three-member etcd cluster (Debian's etcd-server, under the lab's supervisor) instead of one server on a SQLite file; every client is given all N",
  )
  .addOption(stateRootOption())
  .option("--json", "print the resulting status as JSON")
  .action(
    async (opts: {
      topology?: string;
      vms?: string;
      controlReplicas?: string;
      stateRoot?: string;
      json?: boolean;
    }) => {
      const topology = loadTopology(opts.topology, opts.vms);
      const status = await labUp(
        opts.controlReplicas === undefined ? topology : withReplicas(topology, opts.controlReplicas),
        labOptions(opts),
      );
      if (opts.json) console.log(JSON.stringify(status, null, 2));
      else printStatus(status);
    },
  );

program
  .command("down")
  .description("stop the lab's processes and remove its namespaces and state, even after a crash")
  .option("--name <name>", "the lab's name (default: the default topology's)")
  .option("--topology <file>", "take the name from this topology file")
  .addOption(stateRootOption())
  .option(
    "--force",
    "also when the lab's state is lost or unreadable: remove every namespace named <name>-* and what runs in it",
  )
  .action(async (opts: { name?: string; topology?: string; stateRoot?: string; force?: boolean }) => {
    await labDown(labName(opts), { ...labOptions(opts), ...(opts.force ? { force: true } : {}) });
  });

program
  .command("status")
  .description("show the lab's namespaces and services")
  .option("--name <name>", "the lab's name")
  .option("--topology <file>", "take the name from this topology file")
  .addOption(stateRootOption())
  .option("--json", "print JSON")
  .action(async (opts: { name?: string; topology?: string; stateRoot?: string; json?: boolean }) => {
    const status = await labStatus(labName(opts), labOptions(opts));
    if (opts.json) console.log(JSON.stringify(status, null, 2));
    else printStatus(status);
  });

program
  .command("exec")
  .description("run a command inside a lab node's namespace, e.g. exec vm -- ip -6 addr")
  .argument("<node>", "a node name: the correspondent, the router, a host, or a VM")
  .argument("<command...>", "the command and its arguments (put -- before it)")
  .option("--name <name>", "the lab's name")
  .addOption(stateRootOption())
  .passThroughOptions()
  .action(async (node: string, command: string[], opts: { name?: string; stateRoot?: string }) => {
    const name = opts.name ?? loadTopology(undefined).name;
    const state = readState(stateDirOf(name, labOptions(opts)));
    if (!state) throw new UsageError(`lab "${name}" is not up; start it with: xenroam-lab up`);
    const nodes = [
      state.topology.router.name,
      state.topology.correspondent.name,
      ...labVms(state.topology).map((v) => v.name),
      ...state.topology.hosts.map((h) => h.name),
    ];
    if (!nodes.includes(node))
      throw new UsageError(`no node "${node}" in lab "${name}"; nodes: ${nodes.join(", ")}`);
    const argv = command[0] === "--" ? command.slice(1) : command;
    if (argv.length === 0)
      throw new UsageError("give a command to run, e.g. xenroam-lab exec vm -- ip -6 addr");
    process.exitCode = await run("ip", ["netns", "exec", netnsName(state.topology, node), ...argv]);
  });

program
  .command("topology")
  .description("print a topology (the default one, or a file's) after validation, as JSON")
  .option("--topology <file>", "validate this file instead")
  .option("--vms <n>", "with N VMs in all (as `up --vms`)")
  .option("--describe", "describe it in words instead of JSON")
  .action((opts: { topology?: string; vms?: string; describe?: boolean }) => {
    const t = loadTopology(opts.topology, opts.vms);
    console.log(opts.describe ? describe(t) : JSON.stringify(t, null, 2));
  });

program
  .command("demo")
  .description(
    "bring the lab up, ping the correspondent from the VM, migrate the VM to the other site and back with xenroam (printing each migration's timeline), ping after each move, take the lab down",
  )
  .option("--topology <file>", "a topology JSON file")
  .option("--keep", "leave the lab up afterwards")
  .addOption(stateRootOption())
  .action(async (opts: { topology?: string; keep?: boolean; stateRoot?: string }) => {
    const topology = loadTopology(opts.topology);
    console.log(describe(topology));
    const options = labOptions(opts);
    const stateDir = stateDirOf(topology.name, options);
    const target = topology.correspondent.address;
    /** Three pings from a node's namespace. */
    const pingFrom = (node: string, to: string) =>
      run("ip", [
        "netns",
        "exec",
        netnsName(topology, node),
        "ping",
        "-6",
        "-c",
        "3",
        "-i",
        "0.2",
        "-W",
        "2",
        to,
      ]);
    const ping = () => pingFrom(topology.vm.name, target);
    let code = 1;
    try {
      printStatus(await labUp(topology, options));
      console.log(
        `\nping from ${topology.vm.name} (via ${topology.vm.host}'s ${topology.bridges.real} and the router ${routerAddressOf(topology)}) to ${topology.correspondent.name} ${target}:`,
      );
      code = await ping();
      const hoa = topology.mobility?.hoa;
      const pingHoa = () => pingFrom(topology.correspondent.name, hoa ?? "");
      if (code === 0 && hoa) {
        console.log(`ping from ${topology.correspondent.name} to the VM's home address ${hoa}:`);
        code = await pingHoa();
      }
      const xenroam = findWorkspaceCommand("xenroam");
      const home = topology.vm.host;
      const homeSite = topology.hosts.find((h) => h.name === home)?.site;
      const away = topology.hosts.find((h) => h.site !== homeSite)?.name;
      if (code === 0 && xenroam && away) {
        for (const [from, to] of [
          [home, away],
          [away, home],
        ] as const) {
          console.log(
            `\nxenroam migrate ${topology.vm.name} ${to}   (on ${from}; the dual-interface method)`,
          );
          code = await run("ip", [
            "netns",
            "exec",
            netnsName(topology, from),
            ...xenroam,
            "--lab",
            stateDir,
            "migrate",
            topology.vm.name,
            to,
          ]);
          if (code !== 0) break;
          console.log(`ping from ${topology.vm.name}, now on ${to}:`);
          code = await ping();
          if (code !== 0) break;
          if (hoa) {
            console.log(`ping from ${topology.correspondent.name} to the VM's home address ${hoa}:`);
            code = await pingHoa();
            if (code !== 0) break;
          }
        }
      } else if (!xenroam) {
        console.log("\n(xenroam is not built in this workspace: skipping the migrations; run npm run setup)");
      }
      console.log(
        code !== 0
          ? "\ndemo failed."
          : topology.mobility
            ? `\ndemo done: the VM kept reaching the correspondent across sites, and the correspondent kept reaching the VM at its home address ${topology.mobility.hoa}.`
            : "\ndemo done: the VM kept reaching the correspondent across sites.",
      );
    } finally {
      if (!opts.keep) await labDown(topology.name, options);
      else console.log("\nthe lab is still up; remove it with: xenroam-lab down");
    }
    process.exitCode = code;
  });

program
  .command("bench")
  .description("run N migrations per scenario with a 10 ms echo probe; the method beside its baselines")
  .option(
    "--runs <n>",
    "migrations per scenario",
    (v) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1 || n > 1000)
        throw new UsageError("--runs takes a whole number from 1 to 1000");
      return n;
    },
    10,
  )
  .option("--json <file>", "write the results as JSON to FILE")
  .option("--scenarios <list>", `comma-separated subset of: ${SCENARIOS.map((s) => s.name).join(", ")}`)
  .option(
    "--lab-name <name>",
    "the bench's lab name (namespace prefix), so two benches or a bench and a lab can run side by side",
    (v) => {
      if (!/^[a-z][a-z0-9]{0,5}$/.test(v))
        throw new UsageError("--lab-name takes 1-6 characters: a lower-case letter, then letters or digits");
      return v;
    },
    "xb",
  )
  .addOption(stateRootOption())
  .action(
    async (opts: {
      runs: number;
      json?: string;
      scenarios?: string;
      labName: string;
      stateRoot?: string;
    }) => {
      const results = await runBench({
        ...labOptions(opts),
        runs: opts.runs,
        labName: opts.labName,
        ...(opts.scenarios ? { scenarios: opts.scenarios.split(",").map((s) => s.trim()) } : {}),
      });
      const machine = await machineFacts();
      if (opts.json) writeBenchJson(opts.json, results, machine);
      console.log(`${markdownTable(results)}\n\n${machineLine(machine)}`);
    },
  );

const labNameOption = (what: string, fallback: string) =>
  new Option("--name <name>", `the ${what}'s lab name (namespace prefix), so it runs beside another lab`)
    .argParser((v) => {
      if (!/^[a-z][a-z0-9]{0,5}$/.test(v))
        throw new UsageError("--name takes 1-6 characters: a lower-case letter, then letters or digits");
      return v;
    })
    .default(fallback);

const countList =
  (flag: string, max: number, what = "VM counts") =>
  (v: string) => {
    const list = v.split(",").map((x) => x.trim());
    if (v.trim() === "") return [];
    const ns = list.map(Number);
    if (ns.some((n) => !Number.isInteger(n) || n < 1 || n > max))
      throw new UsageError(
        `${flag} takes comma-separated ${what} from 1 to ${max}, e.g. 10,100 (or "" for none)`,
      );
    return ns;
  };

const storeList = (v: string): FanoutStore[] => {
  const list = v
    .split(",")
    .map((x) => x.trim())
    .filter(Boolean);
  const unknown = list.filter((x) => !(FANOUT_STORES as readonly string[]).includes(x));
  if (unknown.length > 0 || list.length === 0)
    throw new UsageError(`--stores takes ${FANOUT_STORES.join(", ")} or both, comma-separated`);
  return [...new Set(list)] as FanoutStore[];
};

/** Refuses an output file whose folder does not exist, before a long run rather than after it. */
function outputFile(flag: string) {
  return (v: string) => {
    const dir = dirname(v);
    if (v.trim() === "" || !existsSync(dir) || !statSync(dir).isDirectory())
      throw new UsageError(`${flag} ${v}: no folder ${dir} to write it in`);
    return v;
  };
}

function readScaleFile(flag: string, file: string): ScaleSource {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new UsageError(`${flag}: cannot read ${file}: ${(err as Error).message}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new UsageError(`${flag}: ${file} is not valid JSON: ${(err as Error).message}`);
  }
  return { file, run: parseScaleFile(value, file) };
}

/** Draws the figure of one or two scale results to `svg` (vega loaded only here: no other command pays for it). */
async function writeScaleSvg(svg: string, scale: ScaleSource | undefined, fanout?: ScaleSource) {
  const { data, caption } = scaleFigureOf(scale, fanout);
  const spec = scaleFigureSpec(data, caption);
  const { renderSvg } = await import("./plot.js");
  const text = await renderSvg(spec);
  try {
    writeFileSync(svg, `${text}\n`);
  } catch (err) {
    throw new UsageError(`--svg: cannot write ${svg}: ${(err as Error).message}`);
  }
  progress(`wrote ${svg}`);
}

program
  .command("scale")
  .description(
    "the figures at scale: the fan-out of an activation to many correspondents watching the control server (simulated watchers, a few real agents applying nftables; SQLite and etcd side by side), one host preparing many VMs at once (prepare time per VM, xenroam's peak RSS, radvd per site), an evacuation of many VMs with a probe in each (each VM's network downtime beside a single migration's), and migrations while the control plane fails (two replicas on a three-member etcd: the replica a correspondent watches and etcd members killed mid-migration; each activation's delay to the correspondent, none missed)",
  )
  .option(
    "--fanout <counts>",
    "correspondents watching, for the fan-out",
    countList("--fanout", 5000, "watcher counts"),
    [10, 100, 1000],
  )
  .option("--stores <list>", "the fan-out's stores: sqlite, etcd", storeList, [...FANOUT_STORES])
  .option("--prepare <counts>", "VM counts prepared at once", countList("--prepare", MAX_LAB_VMS), [10, 100])
  .option("--evacuate <counts>", "VM counts evacuated", countList("--evacuate", 64), [10, 20])
  .option(
    "--parallel <n>",
    "evacuate --parallel",
    (v) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1 || n > 64) throw new UsageError("--parallel takes 1 to 64");
      return n;
    },
    4,
  )
  .option(
    "--single-runs <n>",
    "single migrations for the evacuation's baseline",
    (v) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 2 || n > 100 || n % 2 !== 0)
        throw new UsageError("--single-runs takes an even number from 2 to 100 (there and back)");
      return n;
    },
    6,
  )
  .option(
    "--failover <migrations>",
    "migrations under control-plane faults (two replicas on etcd: the watched replica and etcd members killed mid-migration); 0 skips it",
    (v) => {
      const n = Number(v);
      if (!/^[0-9]+$/.test(v) || n > 200) throw new UsageError("--failover takes 0 to 200 migrations");
      return n;
    },
    16,
  )
  .option("--json <file>", "write the results as JSON to FILE")
  .option(
    "--svg <file>",
    "also draw them as one SVG figure to FILE (redraw it later from the JSON with plot-scale)",
    outputFile("--svg"),
  )
  .addOption(labNameOption("scale run", "xs"))
  .addOption(stateRootOption())
  .action(
    async (opts: {
      fanout: number[];
      stores: FanoutStore[];
      prepare: number[];
      evacuate: number[];
      parallel: number;
      singleRuns: number;
      failover: number;
      json?: string;
      svg?: string;
      name: string;
      stateRoot?: string;
    }) => {
      if (opts.svg && opts.fanout.length + opts.prepare.length + opts.evacuate.length === 0)
        throw new UsageError("--svg: nothing to draw with --fanout '' --prepare '' --evacuate ''");
      const result = await runScale({
        ...labOptions(opts),
        fanout: opts.fanout,
        stores: opts.stores,
        prepare: opts.prepare,
        evacuate: opts.evacuate,
        parallel: opts.parallel,
        singleRuns: opts.singleRuns,
        failover: opts.failover,
        labName: opts.name,
      });
      const machine = await machineFacts();
      const run: ScaleFile = { ...result, machine, at: new Date().toISOString() };
      if (opts.json) writeFileSync(opts.json, `${JSON.stringify(run, null, 2)}\n`);
      console.log(`${scaleMarkdown(result)}\n\n${machineLine(machine)}`);
      if (opts.svg) await writeScaleSvg(opts.svg, { ...(opts.json ? { file: opts.json } : {}), run });
    },
  );

program
  .command("plot-scale")
  .description(
    "draw the figures at scale as one SVG figure from kept `xenroam-lab scale --json` results, without running anything (no root needed): (a) the fan-out's p50/p95 against the watchers, SQLite and etcd, with the 100 ms target; (b) each VM's prepare p50/p95 against the VMs prepared at once, xenroam's peak RSS, with the 3 s target; (c) each VM's network downtime in the evacuations beside the single migrations'",
  )
  .option("--scale <file>", "a `scale --json` result: every part it measured")
  .option(
    "--fanout <file>",
    "a `scale --json` result to take the fan-out from instead (one run with --prepare '' --evacuate '')",
  )
  .requiredOption("--svg <file>", "write the figure to FILE", outputFile("--svg"))
  .addHelpText(
    "after",
    [
      "",
      "A panel is drawn for each part with figures: a result without a fan-out (run with --fanout '') has no",
      "panel (a) unless --fanout gives one. The caption names each file, when it ran and on what machine.",
      "`xenroam-lab scale --svg FILE` draws the same figure right after a run.",
      "",
      "Examples:",
      "  xenroam-lab plot-scale --scale scale.json --svg scale.svg",
      "  xenroam-lab plot-scale --scale docs/bench/scale-lab-2026-12-05.json \\",
      "      --fanout docs/bench/fanout-lab-2026-12-05.json --svg docs/bench/scale-lab-2026-12-05.svg",
      "",
    ].join("\n"),
  )
  .action(async (opts: { scale?: string; fanout?: string; svg: string }) => {
    if (!opts.scale && !opts.fanout)
      throw new UsageError(
        "plot-scale: give --scale FILE, --fanout FILE or both (what `xenroam-lab scale --json` wrote)",
      );
    await writeScaleSvg(
      opts.svg,
      opts.scale ? readScaleFile("--scale", opts.scale) : undefined,
      opts.fanout ? readScaleFile("--fanout", opts.fanout) : undefined,
    );
  });

program
  .command("soak")
  .description(
    "ping-pong migrations of the VM between sites through the real xenroam, optionally injecting faults; after each, once settled, whether the VM runs unpaused and reachable at its HoA, and what was left behind: repaired by the next command's reconcile, cleared by the next migration, or leaked",
  )
  .option(
    "--migrations <n>",
    "how many migrations",
    (v) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1 || n > 10_000)
        throw new UsageError("--migrations takes a whole number from 1 to 10000");
      return n;
    },
    12,
  )
  .option(
    "--faults [list]",
    `inject faults, every other migration, in turn (default: all of them): a comma-separated subset of ${FAULTS.join(", ")}`,
  )
  .option(
    "--settle <ms>",
    "how long to wait after a migration for the VM to run and answer at its HoA",
    (v) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1000 || n > 600_000)
        throw new UsageError("--settle takes milliseconds, a whole number from 1000 to 600000");
      return n;
    },
    DEFAULT_SETTLE_MS,
  )
  .option(
    "--control-down-after <ms>",
    "control-down: keep the control server down this long after the migration has returned, too",
    (v) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 0 || n > 600_000)
        throw new UsageError("--control-down-after takes milliseconds, a whole number from 0 to 600000");
      return n;
    },
    0,
  )
  .option("--json <file>", "also write every migration, leak and repair as JSON to FILE")
  .addOption(labNameOption("soak", "xsoak"))
  .addOption(stateRootOption())
  .addHelpText(
    "after",
    [
      "",
      "The soak brings up its own lab (the default topology under --name), always takes it down at the end,",
      "also on SIGINT/SIGTERM, and prints one line per migration on stderr and the table on stdout. It exits",
      "non-zero when a leak remains at the end or the VM was ever left paused or unreachable once settled.",
      "",
      "Migration 1 is clean; with --faults, every even one injects the next fault and the one after it is",
      "clean, so each fault's aftermath meets the next command (and its reconcile). The faults:",
      ...FAULTS.map((f) => `  ${f.padEnd(20)} ${FAULT_TEXT[f]}`),
      "",
      "Leaks, against a baseline taken right after the lab came up: staging bridges and radvd with no prepared",
      "VM, xenroam state records, routes, processes, nftables tables and map elements beyond the baseline's,",
      "addresses on the VM outside the method's, lab services down. When a migration left any, xenroam status",
      "runs on both hosts (every xenroam command first reconciles what a crash left): what that takes away is",
      "'repaired by reconcile', what only the next migration takes away 'cleared by next migration', and what",
      "is still there at the end a leak.",
      "",
      "Examples:",
      "  xenroam-lab soak --migrations 12 --faults",
      "  xenroam-lab soak --migrations 100 --faults --json soak.json",
      "  xenroam-lab soak --migrations 20 --faults xenroam-killed,control-down --state-root /tmp/soak",
      "",
    ].join("\n"),
  )
  .action(
    async (opts: {
      migrations: number;
      faults?: string | boolean;
      settle: number;
      controlDownAfter: number;
      json?: string;
      name: string;
      stateRoot?: string;
    }) => {
      let faults: Fault[] = [];
      if (opts.faults === true) faults = [...FAULTS];
      else if (typeof opts.faults === "string") {
        const names = opts.faults
          .split(",")
          .map((f) => f.trim())
          .filter(Boolean);
        const unknown = names.filter((f) => !isFault(f));
        if (unknown.length > 0 || names.length === 0)
          throw new UsageError(
            `--faults: unknown fault(s) ${unknown.join(", ") || "(none given)"}; faults: ${FAULTS.join(", ")}`,
          );
        faults = names.filter(isFault);
      }
      const controller = new AbortController();
      const interrupt = (signal: string) => {
        progress(`${signal}: stopping the soak; the lab is taken down`);
        controller.abort();
        process.exitCode = signal === "SIGINT" ? 130 : 143;
      };
      process.once("SIGINT", () => interrupt("SIGINT"));
      process.once("SIGTERM", () => interrupt("SIGTERM"));
      let result: Awaited<ReturnType<typeof runSoak>>;
      try {
        result = await runSoak({
          ...labOptions(opts),
          migrations: opts.migrations,
          faults,
          name: opts.name,
          settleMs: opts.settle,
          controlDownAfterMs: opts.controlDownAfter,
          signal: controller.signal,
        });
      } catch (err) {
        if (!controller.signal.aborted) throw err;
        progress("interrupted: the lab is down, no table");
        return;
      }
      const machine = await machineFacts();
      if (opts.json) writeSoakJson(opts.json, result, machine);
      const f = result.final;
      console.log(
        [
          soakTable(result.rows),
          "",
          ...leakLines(result.leaks),
          `- at the end: the VM on ${f.host}, ${f.paused ? "PAUSED" : "running"}, HoA ${f.hoaReachable ? "reachable" : "UNREACHABLE"} from the CN, the CN ${f.cnReachable ? "reachable" : "UNREACHABLE"} from the VM; xenroam status repaired: ${Object.values(f.repairs).flat().join("; ") || "nothing"}`,
          `- ${result.migrations.length} migrations in ${Math.round(result.durationMs / 1000)} s`,
          "",
          machineLine(machine),
        ].join("\n"),
      );
      process.exitCode = soakExitCode(result.rows, result.final);
    },
  );

program.command("probe-echo", { hidden: true }).action(() => runEchoServer());

program
  .command("probe-send", { hidden: true })
  .requiredOption("--to <address>")
  .action((opts: { to: string }) => runProbeSender(opts.to));

program.command("probe-tcp-server", { hidden: true }).action(() => runTcpStreamServer());

program
  .command("probe-tcp-client", { hidden: true })
  .requiredOption("--to <address>")
  .action((opts: { to: string }) => runTcpStreamClient(opts.to));

program
  .command("tuned-guest", { hidden: true })
  .requiredOption("--dev <ifname>")
  .action((opts: { dev: string }) => runTunedGuest(opts.dev));

program
  .command("xapi-serve", { hidden: true })
  .description("the lab's XAPI: one JSON-RPC socket per pool (run by the supervisor)")
  .requiredOption("--state-dir <dir>")
  .action(async (opts: { stateDir: string }) => {
    const state = readState(opts.stateDir);
    if (!state) throw new UsageError(`no lab state in ${opts.stateDir}`);
    const log: XapiLog = (event, fields = {}) =>
      process.stderr.write(
        `${JSON.stringify({ ts: new Date().toISOString(), component: "lab-xapi", event, ...fields })}\n`,
      );
    const xapi = new LabXapi({
      stateDir: opts.stateDir,
      topology: state.topology,
      password: readFileSync(join(opts.stateDir, XAPI_PASSWORD_FILE), "utf8").trim(),
      log,
    });
    await xapi.listen();
    const stop = () => {
      log("stopping");
      void xapi.close().finally(() => process.exit(0));
    };
    process.once("SIGTERM", stop);
    process.once("SIGINT", stop);
  });

program
  .command("xe", { hidden: true })
  .description("the lab's xe, for xenroam's XAPI hooks (vm-param-get, vm-param-remove)")
  .allowUnknownOption()
  .argument("[args...]")
  .action(async (args: string[]) => {
    const socket = process.env.XENROAM_LAB_XAPI;
    const password = process.env.XENROAM_LAB_XAPI_PASSWORD_FILE;
    if (!socket || !password)
      throw new UsageError("xe: XENROAM_LAB_XAPI and XENROAM_LAB_XAPI_PASSWORD_FILE are not set");
    try {
      const out = await runXe(parseXe(args), socket, password);
      if (out !== "") process.stdout.write(`${out}\n`);
    } catch (err) {
      process.stderr.write(`${(err as Error).message}\n`);
      process.exitCode = 1;
    }
  });

program
  .command("forward", { hidden: true })
  .description("TCP port -> unix socket, in this namespace (the lab's XAPI port on each host)")
  .requiredOption("--port <n>", "TCP port on every address of this namespace", Number)
  .requiredOption("--socket <path>", "unix socket to forward to")
  .action((opts: { port: number; socket: string }) => {
    const server = createNetServer((c) => {
      const u = connect(opts.socket);
      c.pipe(u).pipe(c);
      const drop = () => {
        c.destroy();
        u.destroy();
      };
      c.on("error", drop);
      u.on("error", drop);
    });
    server.listen({ port: opts.port, host: "::" });
    const stop = () => server.close(() => process.exit(0));
    process.once("SIGTERM", stop);
    process.once("SIGINT", stop);
  });

program
  .command("supervise", { hidden: true })
  .requiredOption("--state-dir <dir>")
  .action((opts: { stateDir: string }) => runSupervisor(opts.stateDir));

program.parseAsync().catch((err: unknown) => {
  if (
    err instanceof TopologyError ||
    err instanceof LabError ||
    err instanceof UsageError ||
    err instanceof ScaleFileError ||
    err instanceof ScaleFigureError
  ) {
    process.stderr.write(`xenroam-lab: ${err.message}\n`);
  } else {
    process.stderr.write(
      `xenroam-lab: unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
    );
  }
  process.exitCode = 1;
});

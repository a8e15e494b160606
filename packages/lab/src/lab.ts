// Bringing the namespace lab up and down. `up` records what it is about to make before making it, so `down`
// removes everything even after a crash; `down` stops processes by recorded identity, never by name.

import { execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { renderRadvdConf } from "@xenroam/core";
import { createNetlink } from "@xenroam/netlink";
import { XenstoreClient } from "@xenroam/xenstore";
import { NsWorker } from "./netns.js";
import { guestSocketFile, type LabPlan, netnsName, planLab } from "./plan.js";
import { XAPI_HOOKS_ROOT, XAPI_NETWORK_CONF, XAPI_PASSWORD_FILE, XAPI_XE, xapiSocketFile } from "./xapi.js";
import {
  attestLocator,
  cnLocators,
  controlServices,
  controlUrl,
  etcdServices,
  correspondentService,
  initControl,
  mobileAgentArgs,
  provision,
} from "./mobility.js";
import { SERVICES_FILE, type ServiceSpec, SUPERVISOR_FILE, type SupervisorState } from "./supervisor.js";
import {
  identify,
  isRunning,
  netnsAdd,
  netnsDel,
  netnsList,
  netnsPids,
  type ProcessId,
  stopProcess,
} from "./system.js";
import { claimDomid, readVmLocation, writeVmLocation } from "./toolstack.js";
import { hoaOf, labVms, parseTopology, type Topology, vmOf } from "./topology.js";

/** The host plugin's sites file for this lab: sites, gateways, and which host is where. */
export function sitesFileOf(t: Topology) {
  return {
    sites: t.sites.map((s) => ({
      name: s.name,
      prefix: s.prefix,
      gateway: s.gateway,
      ra: { minIntervalMs: 30, maxIntervalMs: 70 },
      ...(s.advertise ? { advertise: s.advertise } : {}),
    })),
    hosts: t.hosts.map((h) => ({ name: h.name, site: h.site, address: h.address })),
  };
}

export const DEFAULT_STATE_ROOT = "/run/xenroam-lab";
const STATE_FILE = "state.json";

export class LabError extends Error {
  override readonly name = "LabError";
}

export interface LabOptions {
  /** Where each lab keeps its state directory; /run/xenroam-lab by default. */
  readonly stateRoot?: string;
  /** Progress lines for people (to stderr in the CLI). */
  readonly progress?: (line: string) => void;
  /** down only: with no readable state, remove every namespace named "<name>-*" and what runs in it. */
  readonly force?: boolean;
  /** up only: the guest agent's command ([node, script]); found in the workspace by default; false for none. */
  readonly guestAgent?: readonly string[] | false;
}

export interface LabState {
  readonly version: 1;
  readonly name: string;
  readonly topology: Topology;
  readonly phase: "creating" | "up";
  readonly createdAt: string;
  readonly namespaces: readonly string[];
  readonly supervisor?: ProcessId;
}

export interface LabStatus {
  readonly name: string;
  readonly stateDir: string;
  readonly phase: LabState["phase"] | "absent";
  readonly namespaces: ReadonlyArray<{ readonly name: string; readonly present: boolean }>;
  readonly supervisor: "running" | "stopped" | "absent";
  readonly services: ReadonlyArray<{ readonly name: string; readonly state: string; readonly pid?: number }>;
  readonly nodes: ReadonlyArray<{ readonly node: string; readonly netns: string; readonly role: string }>;
  /** Where the VM runs now (it moves with every migration): the topology's first VM. */
  readonly vm?: { readonly name: string; readonly host: string; readonly domid: number };
  /** Where every VM runs now, the first first. */
  readonly vms?: ReadonlyArray<{ readonly name: string; readonly host: string; readonly domid: number }>;
}

export const stateDirOf = (name: string, options: LabOptions = {}) =>
  join(options.stateRoot ?? DEFAULT_STATE_ROOT, name);

export function readState(stateDir: string): LabState | undefined {
  const file = join(stateDir, STATE_FILE);
  if (!existsSync(file)) return undefined;
  let state: Partial<LabState>;
  try {
    state = JSON.parse(readFileSync(file, "utf8")) as Partial<LabState>;
  } catch (err) {
    throw new LabError(
      `${file} is unreadable (${(err as Error).message}); remove the lab with \`xenroam-lab down --force\``,
    );
  }
  if (state.version !== 1 || typeof state.name !== "string" || !Array.isArray(state.namespaces)) {
    throw new LabError(
      `${file} is not a lab state this version of xenroam-lab wrote; remove the lab with \`xenroam-lab down --force\``,
    );
  }
  return state as LabState;
}

function writeState(stateDir: string, state: LabState): void {
  writeFileSync(join(stateDir, `${STATE_FILE}.tmp`), JSON.stringify(state, null, 2));
  // rename is atomic: a crash leaves the old state or the new one, never half of one.
  renameSync(join(stateDir, `${STATE_FILE}.tmp`), join(stateDir, STATE_FILE));
}

function readSupervisor(stateDir: string): SupervisorState | undefined {
  try {
    return JSON.parse(readFileSync(join(stateDir, SUPERVISOR_FILE), "utf8")) as SupervisorState;
  } catch {
    return undefined;
  }
}

const XENSTORED_MAIN = fileURLToPath(new URL("./main.js", import.meta.resolve("@xenroam/xenstore")));
const LAB_MAIN = fileURLToPath(new URL("./main.js", import.meta.url));

/**
 * A command of this checkout's workspace as [node, script], found through the `bin` fields of the
 * @xenroam/* packages (their bin links are made by npm only if the build came first), without importing
 * the app (packages never import the apps). Undefined when no workspace package provides it.
 */
export function findWorkspaceCommand(name: string): string[] | undefined {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const scope = join(dir, "node_modules", "@xenroam");
    if (existsSync(scope)) {
      for (const pkg of readdirSync(scope)) {
        const root = realpathSync(join(scope, pkg));
        try {
          const manifest = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as {
            bin?: Record<string, string>;
          };
          const script = manifest.bin?.[name];
          if (script && existsSync(join(root, script))) return [process.execPath, join(root, script)];
        } catch {
          /* not a package */
        }
      }
    }
    const up = dirname(dir);
    if (up === dir) return undefined;
    dir = up;
  }
}

/**
 * The agent as a DomU runs it, when XENROAM_LAB_AGENT_BUNDLE names a bundle made by `node scripts/package.mjs
 * agent` (its own runtime, the agent as one file, and the launcher a DomU runs): the VM's agent only, not the
 * correspondent's (a server's). Undefined when it is unset.
 */
export function bundledAgent(dir = process.env.XENROAM_LAB_AGENT_BUNDLE): string[] | undefined {
  if (!dir) return undefined;
  const launcher = join(dir, "bin", "xenroam-agent");
  if (!existsSync(launcher) || !existsSync(join(dir, "lib", "agent", "agent.mjs")))
    throw new LabError(
      `XENROAM_LAB_AGENT_BUNDLE=${dir} is not a guest agent bundle (it needs bin/xenroam-agent and ` +
        "lib/agent/agent.mjs); make one with `node scripts/package.mjs agent`, or unset the variable",
    );
  return [launcher];
}

/**
 * The guest agent (with the mobility options when the topology has a HoA) and the correspondent agent.
 * Started after the base services: with mobility they need the tokens the control server issues.
 */
export function agentServicesOf(
  plan: LabPlan,
  topology: Topology,
  stateDir: string,
  agent: readonly string[],
  correspondent: readonly string[] = agent,
): ServiceSpec[] {
  const m = topology.mobility;
  const guests = plan.vms.map((v) => {
    const vm = vmOf(topology, v.name);
    return {
      name: agentServiceName(topology, vm.name),
      netns: v.primary.netns,
      argv: [
        ...agent,
        "--xenstore",
        join(stateDir, guestSocketFile(vm.name)),
        "--channel",
        topology.toolstack.restore === "xapi" ? "xapi" : "xl",
        ...(m ? mobileAgentArgs(topology, m, stateDir, vm) : []),
      ],
    };
  });
  return [...guests, ...(m ? [correspondentService(topology, m, stateDir, correspondent)] : [])];
}

/** The supervisor's name for a VM's guest agent: xenroam-agent for the first VM, xenroam-agent-NAME after. */
export const agentServiceName = (t: Topology, vm: string) =>
  vm === t.vm.name ? "xenroam-agent" : `xenroam-agent-${vm}`;

/** Where a host's xenstored leaves its store for the next start when it is stopped. */
export const xenstoredStateFile = (host: string) => `xenstored-${host}.state.json`;

/**
 * radvd on the router, a xenstored per host, and with mobility the control server's replicas (and the etcd
 * members they share, with mobility.store "etcd").
 */
export function servicesOf(
  plan: LabPlan,
  stateDir: string,
  topology?: Topology,
  control?: readonly string[],
): ServiceSpec[] {
  const m = topology?.mobility;
  return [
    ...(topology && m?.store === "etcd" && control ? etcdServices(topology, stateDir) : []),
    ...(topology && m && control ? controlServices(topology, m, stateDir, control) : []),
    {
      name: "radvd",
      netns: plan.radvd.netns,
      argv: [
        "radvd",
        "--nodaemon",
        "-C",
        join(stateDir, "radvd.conf"),
        "-p",
        join(stateDir, "radvd.pid"),
        "-m",
        "stderr",
      ],
    },
    ...(topology?.toolstack.restore === "xapi" ? xapiServicesOf(topology, plan, stateDir) : []),
    ...plan.xenstored.map((x) => ({
      name: `xenstored-${x.host}`,
      netns: x.netns,
      argv: [
        process.execPath,
        XENSTORED_MAIN,
        "--socket",
        join(stateDir, x.dom0Socket),
        ...x.guests.flatMap((g) => ["--guest", `${g.domid}:${join(stateDir, g.socket)}`]),
        ...(x.guests.length > 0 ? ["--introduce"] : []),
        // A restart (the supervisor's, or the soak's fault) keeps the store and the guest sockets it served.
        "--state-file",
        join(stateDir, xenstoredStateFile(x.host)),
      ],
    })),
  ];
}

/**
 * The lab's XAPI (xapi.ts: one process, a unix socket per pool, in the router's namespace where nothing
 * else listens) and, in each host's namespace, port 80 forwarded to its pool's socket — XAPI's HTTP port,
 * where the xen-api client finds it (it speaks TCP only).
 */
function xapiServicesOf(topology: Topology, plan: LabPlan, stateDir: string): ServiceSpec[] {
  return [
    {
      name: "xapi",
      netns: plan.radvd.netns,
      argv: [process.execPath, LAB_MAIN, "xapi-serve", "--state-dir", stateDir],
    },
    ...topology.hosts.map((h) => ({
      name: `xapi-port-${h.name}`,
      netns: netnsName(topology, h.name),
      argv: [
        process.execPath,
        LAB_MAIN,
        "forward",
        "--port",
        "80",
        "--socket",
        join(stateDir, xapiSocketFile(h.site)),
      ],
    })),
  ];
}

/** What the lab's XAPI hosts need beside the services: a password, xe, network.conf, xenroam's hooks. */
function prepareXapi(stateDir: string): void {
  const xenroam = findWorkspaceCommand("xenroam");
  if (!xenroam) throw new LabError("no xenroam in this workspace for the XAPI hooks; run `npm run build`");
  writeFileSync(join(stateDir, XAPI_PASSWORD_FILE), `${randomBytes(12).toString("hex")}\n`, { mode: 0o600 });
  mkdirSync(dirname(join(stateDir, XAPI_XE)), { recursive: true });
  writeFileSync(
    join(stateDir, XAPI_XE),
    `#!/bin/sh\n# The lab's xe (packages/lab/src/xe.ts): what xenroam's XAPI hooks run, against the lab's XAPI.\nexec '${process.execPath}' '${LAB_MAIN}' xe "$@"\n`,
    { mode: 0o755 },
  );
  // The lab's hosts are XAPI hosts on the Linux bridge backend (/etc/xensource/network.conf).
  writeFileSync(join(stateDir, XAPI_NETWORK_CONF), "bridge\n");
  execFileSync(
    xenroam[0] as string,
    [...xenroam.slice(1), "install-xapi", "--root", join(stateDir, XAPI_HOOKS_ROOT)],
    {
      stdio: ["ignore", "ignore", "inherit"],
    },
  );
}

async function waitFor(
  what: string,
  timeoutMs: number,
  check: () => boolean | Promise<boolean>,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new LabError(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

function requireRoot(): void {
  if (process.getuid?.() !== 0) {
    throw new LabError(
      "the lab needs root (it creates network namespaces, bridges and runs radvd); run it with sudo",
    );
  }
}

/** Builds the lab. Idempotent: a lab already up with the same topology is left as it is. */
export async function labUp(topology: Topology, options: LabOptions = {}): Promise<LabStatus> {
  requireRoot();
  const progress = options.progress ?? (() => {});
  const stateDir = stateDirOf(topology.name, options);
  const existing = readState(stateDir);
  if (existing) {
    if (existing.phase === "up" && JSON.stringify(existing.topology) === JSON.stringify(topology)) {
      progress(`lab "${topology.name}" is already up`);
      return labStatus(topology.name, options);
    }
    throw new LabError(
      `a lab named "${topology.name}" is already ${existing.phase === "up" ? "up with another topology" : "half-built"}; run \`xenroam-lab down\` first`,
    );
  }
  const plan = planLab(topology);
  const namespaces = plan.namespaces.map((n) => n.netns);
  const clash = (await netnsList()).filter((n) => namespaces.includes(n));
  if (clash.length > 0) {
    throw new LabError(
      `network namespace(s) ${clash.join(", ")} already exist but no lab state records them; remove them (ip netns del NAME) or pick another topology name`,
    );
  }

  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  let state: LabState = {
    version: 1,
    name: topology.name,
    topology,
    phase: "creating",
    createdAt: new Date().toISOString(),
    namespaces,
  };
  writeState(stateDir, state);

  const workers: NsWorker[] = [];
  try {
    progress(`creating ${namespaces.length} network namespaces: ${namespaces.join(", ")}`);
    for (const ns of namespaces) await netnsAdd(ns);

    progress(`wiring ${plan.veths.length} veth pairs`);
    const root = createNetlink();
    try {
      for (const v of plan.veths) {
        await root.createVeth(v.name, v.peer, {
          netns: { name: v.netns },
          peerNetns: { name: v.peerNetns },
          mtu: v.mtu,
          ...(v.mac ? { mac: v.mac } : {}),
          ...(v.peerMac ? { peerMac: v.peerMac } : {}),
        });
      }
    } finally {
      root.close();
    }

    progress("configuring bridges, addresses and routes in each namespace");
    const byNs = new Map<string, NsWorker>();
    await Promise.all(
      plan.namespaces.map(async (n) => {
        const w = await NsWorker.start(n.netns);
        workers.push(w);
        byNs.set(n.netns, w);
        await w.apply(n.ops);
      }),
    );

    progress("starting the supervisor (radvd on the router, a xenstored per host)");
    writeFileSync(join(stateDir, "radvd.conf"), renderRadvdConf(plan.radvd.interfaces));
    writeFileSync(join(stateDir, "sites.json"), JSON.stringify(sitesFileOf(topology), null, 2));
    const vms = labVms(topology);
    const lastDomid = Math.max(...vms.map((v) => v.domid));
    vms.forEach((vm, i) => {
      claimDomid(stateDir, vm.domid);
      writeVmLocation(
        stateDir,
        { vm: vm.name, host: vm.host, domid: vm.domid, nextDomid: lastDomid + 1 },
        i === 0,
      );
    });
    const agent =
      options.guestAgent === false
        ? undefined
        : (options.guestAgent ?? bundledAgent() ?? findWorkspaceCommand("xenroam-agent"));
    if (!agent) progress("no xenroam-agent in this workspace: the VM runs without the guest agent");
    const mobility = agent ? topology.mobility : undefined;
    const control = mobility ? findWorkspaceCommand("xenroam-control") : undefined;
    if (mobility && !control) throw new LabError("no xenroam-control in this workspace; run `npm run build`");
    if (mobility && control) await initControl(topology, stateDir, control);
    if (topology.toolstack.restore === "xapi") {
      progress(
        "installing xenroam's XAPI hooks for the lab's XAPI (vm-pre-migrate, vif-hotplug, vm-post-migrate)",
      );
      prepareXapi(stateDir);
    }
    const services = servicesOf(plan, stateDir, topology, control);
    writeFileSync(join(stateDir, SERVICES_FILE), JSON.stringify(services, null, 2));
    const logFd = openSync(join(stateDir, "supervisor.log"), "a");
    const child = spawn(process.execPath, [LAB_MAIN, "supervise", "--state-dir", stateDir], {
      detached: true,
      stdio: ["ignore", logFd, logFd],
    });
    closeSync(logFd);
    child.unref();
    const supervisor = child.pid === undefined ? undefined : identify(child.pid);
    if (!supervisor)
      throw new LabError(`the supervisor did not start; see ${join(stateDir, "supervisor.log")}`);
    state = { ...state, supervisor };
    writeState(stateDir, state);

    await waitFor("radvd and every xenstored to run", 10_000, () => {
      const s = readSupervisor(stateDir);
      const running = services.every((svc) => s?.services[svc.name]?.state === "running");
      const sockets = plan.xenstored.every(
        (x) =>
          existsSync(join(stateDir, x.dom0Socket)) &&
          x.guests.every((g) => existsSync(join(stateDir, g.socket))),
      );
      const xapi =
        topology.toolstack.restore !== "xapi" ||
        topology.hosts.every((h) => existsSync(join(stateDir, xapiSocketFile(h.site))));
      return running && sockets && xapi && existsSync(join(stateDir, "radvd.pid"));
    });

    for (const vm of plan.vms) {
      const host = plan.xenstored.find((x) => x.host === vm.host);
      if (!host) throw new LabError(`internal: no xenstored for host ${vm.host}`);
      const xs = await XenstoreClient.connect(join(stateDir, host.dom0Socket));
      try {
        for (const [path, value] of Object.entries(vm.xenstore)) await xs.write(path, value);
      } finally {
        xs.close();
      }
    }

    const counted =
      plan.vms.length === 1 ? "the VM's primary interface" : `${plan.vms.length} VMs' primary interfaces`;
    progress(
      `bringing up ${counted}; waiting for SLAAC addresses (${plan.vms.map((v) => `${v.name} in ${v.primary.prefix}, addr_gen_mode ${vmOf(topology, v.name).addrGenMode}`).join("; ")})`,
    );
    const vmAddresses = new Map<string, string>();
    await Promise.all(
      plan.vms.map(async (v) => {
        const w = byNs.get(v.primary.netns);
        if (!w) throw new LabError(`internal: no worker for the namespace of VM ${v.name}`);
        await w.netlink.setLink(v.primary.ifname, { up: true });
        const { address } = await w.netlink.waitAddressIn(v.primary.ifname, v.primary.prefix, {
          timeoutMs: 20_000 + 100 * plan.vms.length,
        });
        vmAddresses.set(v.name, address);
      }),
    );

    if (agent) {
      if (mobility && control) {
        progress(
          `control server on the router at ${controlUrl(topology, mobility)}: registering sites, the VM and the CN`,
        );
        // On etcd, a replica that found no quorum yet exits and the supervisor starts it again.
        await provision(topology, mobility, stateDir, control, mobility.store === "etcd" ? 30_000 : 10_000);
      }
      // A bundle is the DomU's agent: the correspondent, a server's, stays this workspace's (Node.js).
      const correspondent = options.guestAgent || findWorkspaceCommand("xenroam-agent") || agent;
      const agents = agentServicesOf(plan, topology, stateDir, agent, correspondent);
      writeFileSync(join(stateDir, SERVICES_FILE), JSON.stringify([...services, ...agents], null, 2));
      process.kill(supervisor.pid, "SIGHUP");
      progress(`starting ${agents.map((a) => a.name).join(" and ")}`);
      // Node.js starts in ~0.3 s of CPU: many agents at once take their time on a small machine.
      await waitFor("the agents to run", 10_000 + 400 * agents.length, () => {
        const s = readSupervisor(stateDir);
        return agents.every((a) => s?.services[a.name]?.state === "running");
      });
      if (mobility && control) {
        for (const vm of vms.filter((v) => v.addrGenMode !== 0)) {
          // Its MACs do not prove an address the kernel made with stable-privacy or random identifiers: the
          // first locator waits for a word from the admin, which the lab is (a site's "host" locator proof).
          const address = vmAddresses.get(vm.name) ?? "";
          progress(
            `${vm.name}'s first locator ${address} is not made from its MAC: attesting it as the admin`,
          );
          await attestLocator(topology, mobility, stateDir, control, address, vm.name);
        }
      }
      if (mobility) {
        progress(
          `waiting for the correspondent to map the home address${vms.length > 1 ? "es" : ""} ${vms.map((v) => hoaOf(topology, v)).join(", ")}`,
        );
        await waitFor(
          "the correspondent to learn every VM's binding",
          15_000 + 500 * vms.length,
          async () => {
            const map = await cnLocators(topology);
            return vms.every((v) => map.get(hoaOf(topology, v) ?? "") === vmAddresses.get(v.name));
          },
        );
      }
    }

    state = { ...state, phase: "up" };
    writeState(stateDir, state);
    progress(`lab "${topology.name}" is up`);
  } catch (err) {
    progress(`bringing the lab up failed: ${(err as Error).message}; removing what was made`);
    await Promise.all(workers.map((w) => w.close().catch(() => {})));
    await labDown(topology.name, options).catch(() => {});
    throw err;
  } finally {
    await Promise.all(workers.map((w) => w.close().catch(() => {})));
  }
  return labStatus(topology.name, options);
}

export interface DownResult {
  readonly removedNamespaces: readonly string[];
  readonly stoppedProcesses: number;
  readonly hadState: boolean;
}

/** Removes everything the lab made: processes (by recorded identity), namespaces, the state directory. */
export async function labDown(name: string, options: LabOptions = {}): Promise<DownResult> {
  requireRoot();
  const progress = options.progress ?? (() => {});
  const stateDir = stateDirOf(name, options);
  let state: LabState | undefined;
  try {
    state = readState(stateDir);
  } catch (err) {
    if (!options.force) throw err;
  }
  if (!state) {
    const strays = (await netnsList()).filter((n) => n.startsWith(`${name}-`));
    if (!options.force) {
      if (existsSync(stateDir)) rmSync(stateDir, { recursive: true, force: true });
      progress(
        strays.length > 0
          ? `no lab named "${name}" is recorded, but namespaces ${strays.join(", ")} exist; remove them with \`xenroam-lab down --force\``
          : `no lab named "${name}" is recorded; nothing to do`,
      );
      return { removedNamespaces: [], stoppedProcesses: 0, hadState: false };
    }
    state = {
      version: 1,
      name,
      topology: undefined as never,
      phase: "creating",
      createdAt: "",
      namespaces: strays,
    };
    progress(`--force: removing namespaces ${strays.join(", ") || "(none)"} and everything running in them`);
  }
  let stopped = 0;
  if (state.supervisor && isRunning(state.supervisor)) {
    progress(`stopping the supervisor (pid ${state.supervisor.pid})`);
    await stopProcess(state.supervisor, 5000);
    stopped++;
  }
  // Children the supervisor may not have stopped (it crashed, or was killed).
  const orphans = Object.values(readSupervisor(stateDir)?.services ?? {}).flatMap((s) =>
    s.process ? [s.process] : [],
  );
  stopped += (await Promise.all(orphans.map((p) => stopProcess(p)))).filter((r) => r !== "gone").length;
  const present = new Set(await netnsList());
  const removed: string[] = [];
  for (const ns of state.namespaces) {
    if (!present.has(ns)) continue;
    const ids = (await netnsPids(ns)).flatMap((pid) => identify(pid) ?? []);
    stopped += (await Promise.all(ids.map((id) => stopProcess(id)))).filter((r) => r !== "gone").length;
    await netnsDel(ns);
    removed.push(ns);
  }
  rmSync(stateDir, { recursive: true, force: true });
  progress(`removed ${removed.length} namespaces, stopped ${stopped} processes, deleted ${stateDir}`);
  return { removedNamespaces: removed, stoppedProcesses: stopped, hadState: true };
}

function vmLocations(stateDir: string, t: Topology): Pick<LabStatus, "vm" | "vms"> {
  const vms = labVms(t).flatMap((v) => {
    try {
      const loc = readVmLocation(stateDir, v.name);
      return [{ name: loc.vm, host: loc.host, domid: loc.domid }];
    } catch {
      return [];
    }
  });
  const first = vms.find((v) => v.name === t.vm.name);
  return { ...(first ? { vm: first } : {}), ...(vms.length > 0 ? { vms } : {}) };
}

export async function labStatus(name: string, options: LabOptions = {}): Promise<LabStatus> {
  const stateDir = stateDirOf(name, options);
  const state = readState(stateDir);
  if (!state) {
    return { name, stateDir, phase: "absent", namespaces: [], supervisor: "absent", services: [], nodes: [] };
  }
  const present = new Set(await netnsList());
  const sup = readSupervisor(stateDir);
  const topology = parseTopology(state.topology, join(stateDir, STATE_FILE));
  const plan = planLab(topology);
  return {
    name,
    stateDir,
    phase: state.phase,
    namespaces: state.namespaces.map((n) => ({ name: n, present: present.has(n) })),
    supervisor: state.supervisor ? (isRunning(state.supervisor) ? "running" : "stopped") : "absent",
    services: Object.entries(sup?.services ?? {}).map(([svc, s]) => ({
      name: svc,
      state:
        s.process && isRunning(s.process)
          ? s.state
          : s.state === "failed" || s.state === "held"
            ? s.state
            : "stopped",
      ...(s.process ? { pid: s.process.pid } : {}),
    })),
    nodes: plan.namespaces.map((n) => ({ node: n.node, netns: n.netns, role: n.role })),
    ...vmLocations(stateDir, topology),
  };
}

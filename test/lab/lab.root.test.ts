// Root-only: the namespace lab against the real kernel, radvd and the lab xenstored. Each test uses its own
// lab name and state root, and asserts that `down` leaves no namespace, process or file behind.
import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import {
  DEFAULT_TOPOLOGY,
  identify,
  isRunning,
  LabError,
  labDown,
  labStatus,
  labUp,
  netnsList,
  type ProcessId,
  parseTopology,
  type Topology,
} from "@xenroam/lab";
import test, { type ExecutionContext } from "ava";

const run = promisify(execFile);
const LAB_MAIN = fileURLToPath(new URL("../../../packages/lab/dist/src/main.js", import.meta.url));

function fresh(t: { teardown(fn: () => Promise<void> | void): void }): {
  topology: Topology;
  stateRoot: string;
} {
  const name = `t${randomBytes(2).toString("hex")}`;
  const stateRoot = mkdtempSync(join(tmpdir(), "xr-lab-"));
  const topology = parseTopology({ ...DEFAULT_TOPOLOGY, name });
  t.teardown(async () => {
    await labDown(name, { stateRoot, force: true }).catch(() => {});
    rmSync(stateRoot, { recursive: true, force: true });
  });
  return { topology, stateRoot };
}

function recordedProcesses(stateDir: string): ProcessId[] {
  const state = JSON.parse(readFileSync(join(stateDir, "state.json"), "utf8")) as { supervisor: ProcessId };
  const sup = JSON.parse(readFileSync(join(stateDir, "supervisor.json"), "utf8")) as {
    services: Record<string, { process?: ProcessId }>;
  };
  return [state.supervisor, ...Object.values(sup.services).flatMap((s) => (s.process ? [s.process] : []))];
}

async function assertNothingLeft(t: ExecutionContext, name: string, stateRoot: string, procs: ProcessId[]) {
  t.deepEqual(
    (await netnsList()).filter((n) => n.startsWith(`${name}-`)),
    [],
    "no namespace left",
  );
  t.deepEqual(procs.filter(isRunning), [], "no process left");
  t.deepEqual(readdirSync(stateRoot), [], "no file left");
}

test("up, ping the correspondent from the VM across the router, down leaves nothing", async (t) => {
  const { topology, stateRoot } = fresh(t);
  const status = await labUp(topology, { stateRoot });
  t.is(status.phase, "up");
  t.true(status.namespaces.every((n) => n.present));
  t.deepEqual(
    status.services.map((s) => [s.name, s.state]),
    [
      ["xenroam-control", "running"],
      ["radvd", "running"],
      ["xenstored-hosta", "running"],
      ["xenstored-hosta2", "running"],
      ["xenstored-hostb", "running"],
      ["xenroam-agent", "running"],
      ["xenroam-correspondent", "running"],
    ],
  );
  const vm = `${topology.name}-vm`;
  const ping = await run("ip", [
    "netns",
    "exec",
    vm,
    "ping",
    "-6",
    "-c",
    "2",
    "-i",
    "0.2",
    "-W",
    "2",
    "2001:db8:c::100",
  ]);
  t.regex(ping.stdout, /2 received/);

  // The VM learned site A's gateway: its link-local and its MAC, the two things the method copies.
  const neigh = JSON.parse(
    (await run("ip", ["-n", vm, "-j", "-6", "neigh", "show", "dev", "eth0"])).stdout,
  ) as Array<{
    dst: string;
    lladdr: string;
  }>;
  t.truthy(neigh.find((n) => n.dst === "fe80::a:1" && n.lladdr === "02:00:00:00:0a:01"));
  const routes = JSON.parse(
    (await run("ip", ["-n", vm, "-j", "-6", "route", "show", "default"])).stdout,
  ) as Array<{
    gateway: string;
    protocol: string;
    prefsrc?: string;
  }>;
  // The router learnt by RA; with a home address the agent adopted that route, preferring the HoA as source.
  t.deepEqual(
    routes.map((r) => [r.gateway, r.protocol, r.prefsrc]),
    [topology.mobility ? ["fe80::a:1", "static", topology.mobility.hoa] : ["fe80::a:1", "ra", undefined]],
  );
  // The secondary waits, down, on the parking bridge.
  const eth1 = JSON.parse((await run("ip", ["-n", vm, "-j", "link", "show", "eth1"])).stdout) as Array<{
    flags: string[];
  }>;
  t.false(eth1[0]?.flags.includes("UP"));
  const vif1 = JSON.parse(
    (await run("ip", ["-n", `${topology.name}-hosta`, "-j", "link", "show", "vif5.1"])).stdout,
  ) as Array<{
    master: string;
  }>;
  t.is(vif1[0]?.master, "xrpark0");

  // Idempotent: the same lab again is left alone; another lab under the same name is refused.
  t.is((await labUp(topology, { stateRoot })).phase, "up");
  const other = parseTopology({ ...DEFAULT_TOPOLOGY, name: topology.name, mtu: 1400 });
  await t.throwsAsync(labUp(other, { stateRoot }), {
    instanceOf: LabError,
    message: /already up with another topology.*down/,
  });

  const procs = recordedProcesses(join(stateRoot, topology.name));
  t.true(procs.every(isRunning));
  const down = await labDown(topology.name, { stateRoot });
  t.is(down.removedNamespaces.length, 6);
  await assertNothingLeft(t, topology.name, stateRoot, procs);
  t.is((await labStatus(topology.name, { stateRoot })).phase, "absent");
  t.false((await labDown(topology.name, { stateRoot })).hadState, "down again is a no-op");
});

test("down cleans up after a crash: supervisor killed, radvd and xenstored orphaned", async (t) => {
  const { topology, stateRoot } = fresh(t);
  await labUp(topology, { stateRoot });
  const stateDir = join(stateRoot, topology.name);
  const procs = recordedProcesses(stateDir);
  const [supervisor, ...children] = procs;
  if (!supervisor) throw new Error("no supervisor recorded");
  process.kill(supervisor.pid, "SIGKILL");
  await new Promise((r) => setTimeout(r, 200));
  t.false(isRunning(supervisor));
  t.true(children.every(isRunning), "children outlive the crashed supervisor");
  t.is((await labStatus(topology.name, { stateRoot })).supervisor, "stopped");

  // The CLI's exec reaches the namespaces by node name.
  const out = await run(process.execPath, [
    LAB_MAIN,
    "exec",
    "--state-root",
    stateRoot,
    "--name",
    topology.name,
    "cn",
    "--",
    "ip",
    "-6",
    "addr",
    "show",
    "eth0",
  ]);
  t.regex(out.stdout, /2001:db8:c::100\/64/);

  await labDown(topology.name, { stateRoot });
  await assertNothingLeft(t, topology.name, stateRoot, procs);
});

test("the supervisor restarts a service that dies", async (t) => {
  const { topology, stateRoot } = fresh(t);
  await labUp(topology, { stateRoot });
  const stateDir = join(stateRoot, topology.name);
  const sup = () =>
    JSON.parse(readFileSync(join(stateDir, "supervisor.json"), "utf8")) as {
      services: Record<string, { process?: ProcessId; restarts: number; state: string }>;
    };
  const before = sup().services["xenstored-hostb"]?.process;
  if (!before) throw new Error("xenstored-hostb not recorded");
  process.kill(before.pid, "SIGKILL");
  let after: ProcessId | undefined;
  for (let i = 0; i < 60; i++) {
    await new Promise((r) => setTimeout(r, 100));
    const s = sup().services["xenstored-hostb"];
    if (
      s?.state === "running" &&
      s.process &&
      s.process.pid !== before.pid &&
      existsSync(join(stateDir, "xs-hostb.sock"))
    ) {
      after = s.process;
      break;
    }
  }
  t.truthy(after, "restarted");
  t.is(sup().services["xenstored-hostb"]?.restarts, 1);
  const log = readFileSync(join(stateDir, "supervisor.log"), "utf8");
  t.regex(log, /"event":"service_exited","service":"xenstored-hostb"/);
  const procs = recordedProcesses(stateDir);
  await labDown(topology.name, { stateRoot });
  await assertNothingLeft(t, topology.name, stateRoot, [before, ...procs]);
});

test("down --force removes a lab whose state was lost, and what runs in its namespaces", async (t) => {
  const { topology, stateRoot } = fresh(t);
  const name = topology.name;
  for (const n of ["x", "y"]) await run("ip", ["netns", "add", `${name}-${n}`]);
  const sleeper = spawn("ip", ["netns", "exec", `${name}-x`, "sleep", "60"], { stdio: "ignore" });
  await new Promise((r) => setTimeout(r, 100));
  const id = identify(sleeper.pid ?? 0);
  if (!id) throw new Error("sleeper did not start");
  const lines: string[] = [];
  const plain = await labDown(name, { stateRoot, progress: (l) => lines.push(l) });
  t.false(plain.hadState);
  t.regex(lines.join("\n"), /namespaces .*-[xy], .*-[xy] exist; remove them with `xenroam-lab down --force`/);
  t.is(
    (await netnsList()).filter((n) => n.startsWith(`${name}-`)).length,
    2,
    "without --force nothing is touched",
  );
  const forced = await labDown(name, { stateRoot, force: true });
  t.deepEqual([...forced.removedNamespaces].sort(), [`${name}-x`, `${name}-y`]);
  await assertNothingLeft(t, name, stateRoot, [id]);
});

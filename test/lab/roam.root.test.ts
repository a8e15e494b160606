// Root-only: a guest with a home address converges on its own after a move the method did not make — a plain
// migration with the agent running, and one with the agent frozen through the prepare (so the migration falls
// back to plain) and restarted after the move. The real guest agent, the real kernel's SLAAC and radvd, the
// real control server and correspondent agent. Budget: the destination site's maximum RA interval + 1 s.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import test, { type ExecutionContext } from "ava";
import { cnLocatorOf, DEFAULT_TOPOLOGY, labDown, labUp, parseTopology, type Topology } from "@xenroam/lab";
import { migrate, type MigrationReport } from "./support.js";

const run = promisify(execFile);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function fresh(t: ExecutionContext) {
  const name = `r${randomBytes(2).toString("hex")}`;
  const stateRoot = mkdtempSync(join(tmpdir(), "xr-roam-"));
  const topology = parseTopology({ ...DEFAULT_TOPOLOGY, name });
  const m = topology.mobility;
  if (!m) throw new Error("the default topology has no mobility section");
  t.teardown(async () => {
    await labDown(name, { stateRoot, force: true }).catch(() => {});
    rmSync(stateRoot, { recursive: true, force: true });
  });
  return { topology, m, stateRoot, stateDir: join(stateRoot, name) };
}

const ns = (t: Topology, node: string) => `${t.name}-${node}`;

async function pings(netns: string, to: string): Promise<boolean> {
  try {
    await run("ip", ["netns", "exec", netns, "ping", "-6", "-n", "-c", "1", "-W", "0.25", to]);
    return true;
  } catch {
    return false;
  }
}

/** When the VM ran at the destination (ms since the epoch), from the report's timeline. */
function arrivedAt(r: MigrationReport): number {
  const at = r.timeline.find((p) => p.phase === "running-on-destination")?.atMs;
  if (at === undefined) throw new Error(`no running-on-destination in ${JSON.stringify(r.timeline)}`);
  return r.startedAt + at;
}

/** Polls both directions (CN→HoA, VM→CN from the HoA) until both answer; ms from `since`, or undefined. */
async function bothWays(topology: Topology, hoa: string, since: number, deadlineMs: number) {
  const cn = topology.correspondent;
  for (;;) {
    const [toVm, toCn] = await Promise.all([
      pings(ns(topology, cn.name), hoa),
      pings(ns(topology, topology.vm.name), cn.address),
    ]);
    if (toVm && toCn) return Date.now() - since;
    if (Date.now() - since > deadlineMs) return undefined;
    await sleep(50);
  }
}

const agentPid = (stateDir: string) =>
  (
    JSON.parse(readFileSync(join(stateDir, "supervisor.json"), "utf8")) as {
      services: Record<string, { process?: { pid: number }; state: string }>;
    }
  ).services["xenroam-agent"];

/** The site's address the VM's primary has now (its SLAAC address in that prefix). */
async function addressIn(topology: Topology, prefix: string): Promise<string | undefined> {
  const { stdout } = await run("ip", [
    "-n",
    ns(topology, topology.vm.name),
    "-j",
    "-6",
    "addr",
    "show",
    "dev",
    "eth0",
  ]);
  const stem = prefix.replace(/::\/64$/, ":");
  const [link] = JSON.parse(stdout) as Array<{ addr_info: Array<{ local: string; scope: string }> }>;
  return link?.addr_info.find((a) => a.scope === "global" && a.local.startsWith(stem))?.local;
}

for (const agentDuringMove of ["running", "frozen through the prepare, restarted after the move"] as const) {
  test(`a plain migration, agent ${agentDuringMove}: the HoA works both ways within the RA interval + 1 s`, async (t) => {
    const { topology, m, stateRoot, stateDir } = fresh(t);
    await labUp(topology, { stateRoot });
    const siteB = topology.sites.find((s) => s.name === topology.hosts.find((h) => h.name === "hostb")?.site);
    if (!siteB) throw new Error("no site for hostb");
    const budget = siteB.ra.maxIntervalMs + 1000;
    let report: MigrationReport;
    if (agentDuringMove === "running") {
      report = await migrate(topology, stateDir, "hostb", ["--no-method"]);
      t.is(report.method, "plain");
    } else {
      const before = agentPid(stateDir)?.process?.pid;
      if (!before) throw new Error("no agent recorded");
      process.kill(before, "SIGSTOP");
      t.teardown(() => {
        try {
          process.kill(before, "SIGKILL");
        } catch {
          /* gone */
        }
      });
      report = await migrate(topology, stateDir, "hostb", ["--timeout", "1500"]);
      t.is(report.method, "plain", "the frozen agent cannot prepare: the migration falls back");
      // Started again after the move: the supervisor restarts the agent it finds dead.
      process.kill(before, "SIGKILL");
      for (let i = 0; i < 100 && agentPid(stateDir)?.process?.pid === before; i++) await sleep(20);
      t.not(agentPid(stateDir)?.process?.pid, before, "a new agent runs");
    }
    const since = arrivedAt(report);
    const ms = await bothWays(topology, m.hoa, since, budget + 10_000);
    t.truthy(ms, "the HoA answers both ways again");
    t.log(`HoA reachable both ways ${ms} ms after the VM ran at the destination (budget ${budget} ms)`);
    t.true((ms ?? Infinity) <= budget, `${ms} ms > ${budget} ms`);
    const b = await addressIn(topology, siteB.prefix);
    t.truthy(b, "the VM took an address of site b");
    t.is(await cnLocatorOf(topology, m), b, "the correspondent maps the HoA to the VM's site-b address");
  });
}

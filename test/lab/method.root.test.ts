// Root-only: the dual-interface method end to end in the namespace lab — the real xenroam command, the real
// guest agent, the lab toolstack. Slow by nature (50 migrations); each test has its own lab.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import test, { type ExecutionContext } from "ava";
import {
  DEFAULT_TOPOLOGY,
  findWorkspaceCommand,
  labDown,
  labUp,
  type LabOptions,
  netnsPids,
  parseTopology,
  type Topology,
} from "@xenroam/lab";
import { migrate, prepare } from "./support.js";

const run = promisify(execFile);
const XENROAM = findWorkspaceCommand("xenroam");

function fresh(t: ExecutionContext): { topology: Topology; stateRoot: string; stateDir: string } {
  const name = `m${randomBytes(2).toString("hex")}`;
  const stateRoot = mkdtempSync(join(tmpdir(), "xr-method-"));
  const topology = parseTopology({ ...DEFAULT_TOPOLOGY, name });
  t.teardown(async () => {
    await labDown(name, { stateRoot, force: true }).catch(() => {});
    rmSync(stateRoot, { recursive: true, force: true });
  });
  return { topology, stateRoot, stateDir: join(stateRoot, name) };
}

const json = async (ns: string, ...args: string[]) =>
  JSON.parse((await run("ip", ["-n", ns, "-j", ...args])).stdout || "[]") as Array<Record<string, unknown>>;

/** What a host may not keep once no migration is under way: staging bridges, radvd, prepare state. */
async function hostLeftovers(topology: Topology, stateDir: string, host: string): Promise<string[]> {
  const ns = `${topology.name}-${host}`;
  const out: string[] = [];
  for (const l of await json(ns, "link", "show", "type", "bridge")) {
    if (String(l.ifname).startsWith("xr-")) out.push(`${host}: staging bridge ${String(l.ifname)}`);
  }
  for (const pid of await netnsPids(ns)) {
    let comm = "";
    try {
      comm = readFileSync(`/proc/${pid}/comm`, "utf8").trim();
    } catch {
      continue;
    }
    if (comm === "radvd") out.push(`${host}: radvd pid ${pid}`);
  }
  // radvd's config, pid file and log go with the staging bridge.
  const hostDir = join(stateDir, `host-${host}`);
  if (existsSync(hostDir)) {
    for (const f of readdirSync(hostDir)) if (f.startsWith("radvd-")) out.push(`${host}: file ${f}`);
  }
  try {
    const st = JSON.parse(readFileSync(join(stateDir, `host-${host}`, "host-state.json"), "utf8")) as {
      staging: object;
      vms: object;
    };
    if (Object.keys(st.staging).length + Object.keys(st.vms).length > 0)
      out.push(`${host}: state ${JSON.stringify(st)}`);
  } catch {
    /* never ran there */
  }
  return out;
}

async function pingCn(topology: Topology): Promise<boolean> {
  try {
    await run("ip", [
      "netns",
      "exec",
      `${topology.name}-vm`,
      "ping",
      "-6",
      "-c",
      "1",
      "-W",
      "2",
      topology.correspondent.address,
    ]);
    return true;
  } catch {
    return false;
  }
}

test("50 consecutive method migrations A→B→A…: all complete, nothing left behind", async (t) => {
  t.timeout(15 * 60_000);
  const { topology, stateRoot, stateDir } = fresh(t);
  await labUp(topology, { stateRoot } satisfies LabOptions);
  for (let i = 0; i < 50; i++) {
    const to = i % 2 === 0 ? "hostb" : "hosta";
    const started = Date.now();
    const r = await migrate(topology, stateDir, to);
    // Not a benchmark: a hang check. A migration takes ~2 s here; nothing may keep the command alive.
    t.true(Date.now() - started < 8000, `migration ${i + 1} took ${Date.now() - started} ms`);
    t.is(r.method, "dual-interface", `migration ${i + 1} used the method (${r.fallback ?? ""})`);
    if (i % 10 === 9) t.true(await pingCn(topology), `the CN is reachable after migration ${i + 1}`);
  }
  await new Promise((r) => setTimeout(r, 300));
  t.true(await pingCn(topology));
  t.deepEqual(
    [
      ...(await hostLeftovers(topology, stateDir, "hosta")),
      ...(await hostLeftovers(topology, stateDir, "hostb")),
    ],
    [],
  );
  // The guest: back on site a, one global address (the primary's), one default route, the secondary down.
  const vm = `${topology.name}-vm`;
  const addrs = (await json(vm, "-6", "addr", "show", "scope", "global")).flatMap((l) =>
    ((l.addr_info as Array<{ local?: string }>) ?? []).flatMap((a) =>
      a.local ? [`${String(l.ifname)} ${a.local}`] : [],
    ),
  );
  // The home address stays on lo (the default topology has the mobility layer); one locator on the NICs.
  const onNics = addrs.filter((a) => !a.startsWith("lo "));
  t.is(onNics.length, 1, addrs.join(", "));
  t.true(onNics[0]?.includes("2001:db8:a:"), addrs.join(", "));
  t.deepEqual(
    addrs.filter((a) => a.startsWith("lo ")),
    topology.mobility ? [`lo ${topology.mobility.hoa}`] : [],
  );
  const routes = await json(vm, "-6", "route", "show", "default");
  t.is(routes.length, 1, JSON.stringify(routes));
  t.is(routes[0]?.gateway, "fe80::a:1");
  const up = (await json(vm, "link", "show")).filter(
    (l) => (l.flags as string[]).includes("UP") && l.ifname !== "lo",
  );
  t.is(up.length, 1, "only the primary is up");
});

test("guest agent absent: plain migration within 3 s of the deadline, no prepare state left", async (t) => {
  const { topology, stateRoot, stateDir } = fresh(t);
  await labUp(topology, { stateRoot, guestAgent: false });
  const started = Date.now();
  const r = await migrate(topology, stateDir, "hostb", ["--timeout", "1500"]);
  const took = Date.now() - started;
  t.is(r.method, "plain");
  t.regex(r.fallback ?? "", /did not answer within 1500 ms/);
  t.true(took < 1500 + 3000, `took ${took} ms`);
  t.deepEqual(await hostLeftovers(topology, stateDir, "hosta"), []);
  const vif = (await json(`${topology.name}-hostb`, "link", "show")).find((l) =>
    String(l.ifname).endsWith(".1"),
  );
  t.is(vif?.master, "xrpark0", "the secondary stays parked: nothing was swapped");
});

test("the guest agent killed after prepare: its restart converges and the migration still uses the method", async (t) => {
  const { topology, stateRoot, stateDir } = fresh(t);
  await labUp(topology, { stateRoot });
  if (!XENROAM) throw new Error("xenroam is not installed in this workspace");
  const prep = await prepare(topology, stateDir, "hostb");
  t.regex(prep, /prepared for site b: MoA 2001:db8:b:/);
  const sup = () =>
    JSON.parse(readFileSync(join(stateDir, "supervisor.json"), "utf8")) as {
      services: Record<string, { process?: { pid: number }; state: string }>;
    };
  const before = sup().services["xenroam-agent"]?.process?.pid;
  if (!before) throw new Error("no agent recorded");
  process.kill(before, "SIGKILL");
  for (let i = 0; i < 100; i++) {
    const now = sup().services["xenroam-agent"];
    if (now?.state === "running" && now.process?.pid !== before) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  await new Promise((r) => setTimeout(r, 500));
  const r = await migrate(topology, stateDir, "hostb");
  t.is(r.method, "dual-interface", r.fallback ?? "");
  await new Promise((res) => setTimeout(res, 300));
  t.true(await pingCn(topology));
  const routes = await json(`${topology.name}-vm`, "-6", "route", "show", "default");
  t.deepEqual(
    routes.map((x) => [x.dev, x.gateway]),
    [["eth1", "fe80::b:1"]],
  );
});

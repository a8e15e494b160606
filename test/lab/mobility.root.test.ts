// Root-only: the mobility layer in the namespace lab — the control server on the router, the guest agent with
// the VM's home address, the correspondent agent on the CN. A TCP connection to the HoA must survive every
// migration; forged datagrams must change nothing; agent shutdown must leave no nftables table.
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { promisify } from "node:util";
import test, { type ExecutionContext } from "ava";
import { generateSigningKeys, signBinding } from "@xenroam/control";
import {
  cnLocatorOf,
  DEFAULT_TOPOLOGY,
  findWorkspaceCommand,
  ingestTcpLine,
  labDown,
  labUp,
  newTcpLog,
  parseTopology,
  readState,
  stopProcess,
  type Topology,
} from "@xenroam/lab";
import { migrate } from "./support.js";

const run = promisify(execFile);
const LAB = findWorkspaceCommand("xenroam-lab");

function fresh(t: ExecutionContext): {
  topology: Topology & { mobility: object };
  stateRoot: string;
  stateDir: string;
} {
  const name = `h${randomBytes(2).toString("hex")}`;
  const stateRoot = mkdtempSync(join(tmpdir(), "xr-mob-"));
  const topology = parseTopology({ ...DEFAULT_TOPOLOGY, name });
  if (!topology.mobility) throw new Error("the default topology has no mobility section");
  t.teardown(async () => {
    await labDown(name, { stateRoot, force: true }).catch(() => {});
    rmSync(stateRoot, { recursive: true, force: true });
  });
  return {
    topology: topology as Topology & { mobility: object },
    stateRoot,
    stateDir: join(stateRoot, name),
  };
}

function startIn(t: ExecutionContext, netns: string, args: string[]): ChildProcess {
  if (!LAB) throw new Error("xenroam-lab is not installed in this workspace");
  const child = spawn("ip", ["netns", "exec", netns, ...LAB, ...args], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  t.teardown(() => {
    if (child.exitCode === null) child.kill("SIGTERM");
  });
  return child;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test("a TCP connection from the CN to the VM's HoA carries data through 20 migrations A→B→A… and is never reset", async (t) => {
  const { topology, stateRoot, stateDir } = fresh(t);
  const hoa = topology.mobility?.hoa ?? "";
  await labUp(topology, { stateRoot });
  const vmNs = `${topology.name}-${topology.vm.name}`;
  const cnNs = `${topology.name}-${topology.correspondent.name}`;
  startIn(t, vmNs, ["probe-tcp-server"]);
  await sleep(300);
  const client = startIn(t, cnNs, ["probe-tcp-client", "--to", hoa]);
  const tcp = newTcpLog();
  createInterface({ input: client.stdout as NodeJS.ReadableStream }).on("line", (l) => ingestTcpLine(tcp, l));
  for (let i = 0; i < 100 && tcp.connectedAt === undefined; i++) await sleep(50);
  t.truthy(tcp.connectedAt, "the CN connected to the HoA");

  const stalls: number[] = [];
  for (let i = 0; i < 20; i++) {
    const to = i % 2 === 0 ? "hostb" : "hosta";
    const t0 = Date.now();
    const report = await migrate(topology, stateDir, to);
    t.is(report.method, "dual-interface", `migration ${i + 1} used the method`);
    // Data flows again: a stall that ended after the migration started (the pause at least).
    for (let w = 0; w < 250 && !tcp.closed && !tcp.stalls.some(([, end]) => end > t0); w++) await sleep(20);
    t.is(tcp.closed, undefined, `the connection is still open after migration ${i + 1}`);
    const stall = Math.max(0, ...tcp.stalls.filter(([, end]) => end > t0).map(([ms]) => ms));
    t.true(stall > 0, `data resumed after migration ${i + 1}`);
    stalls.push(stall);
    // The switch itself is an override rule; the canonical map follows within a second or so.
    let mapped: string | undefined;
    for (let w = 0; w < 60 && mapped !== report.moa; w++) {
      mapped = await cnLocatorOf(topology, topology.mobility);
      if (mapped !== report.moa) await sleep(50);
    }
    t.is(mapped, report.moa, `the correspondent maps the HoA to the new MoA after migration ${i + 1}`);
  }
  t.log(
    `longest TCP stall over 20 migrations: ${Math.max(...stalls)} ms (p50 ${stalls.sort((a, b) => a - b)[10]} ms)`,
  );
  const ping = await run("ip", ["netns", "exec", cnNs, "ping", "-c", "2", "-i", "0.2", "-W", "2", hoa]);
  t.regex(ping.stdout, /2 received/);
});

test("forged and malformed bindings sent to the correspondent over UDP change nothing; agent shutdown removes every table", async (t) => {
  const { topology, stateRoot, stateDir } = fresh(t);
  const m = topology.mobility;
  await labUp(topology, { stateRoot });
  const active = await cnLocatorOf(topology, m);
  t.truthy(active);
  const intruder = generateSigningKeys();
  const datagrams = [
    signBinding(intruder.privateKey, {
      vm: topology.vm.name,
      hoa: m.hoa,
      locator: "2001:db8:66::1",
      seq: 99,
      expiresAt: Date.now() + 60_000,
    }),
    {
      vm: topology.vm.name,
      hoa: m.hoa,
      locator: "2001:db8:66::1",
      seq: 100,
      expiresAt: Date.now() + 60_000,
      sig: "AAAA",
    },
    "not json at all",
  ];
  const sender = `const s=require("dgram").createSocket("udp6");const msgs=${JSON.stringify(
    datagrams.map((d) => (typeof d === "string" ? d : JSON.stringify(d))),
  )};let n=0;for(const x of msgs)s.send(x,${m.bindingPort},"${topology.correspondent.address}",()=>{if(++n===msgs.length)s.close()});`;
  await run("ip", ["netns", "exec", `${topology.name}-${topology.vm.name}`, process.execPath, "-e", sender]);
  await sleep(300);
  t.is(await cnLocatorOf(topology, m), active, "the correspondent's map is unchanged");

  // Stopping the supervisor stops the agents the way systemd would (SIGTERM): their tables go with them.
  const state = readState(stateDir);
  if (!state?.supervisor) throw new Error("no supervisor recorded");
  await stopProcess(state.supervisor, 5000);
  for (const node of [topology.vm.name, topology.correspondent.name]) {
    const { stdout } = await run("ip", [
      "netns",
      "exec",
      `${topology.name}-${node}`,
      "/usr/sbin/nft",
      "list",
      "tables",
    ]);
    t.false(stdout.includes("xenroam"), `no xenroam table left in ${node}`);
  }
});

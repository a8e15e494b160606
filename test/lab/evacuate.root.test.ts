// Root-only: `xenroam evacuate` in the namespace lab with three VMs on one host (issue 13 item 3): the real
// xenroam, guest agents, staging bridge and radvd, the control server and the correspondent. Two guests answer
// and move with the method; the third guest's agent is stopped, so it falls back to a plain migration and is
// reported, without holding the other two up. Progress per VM on stderr, a summary at the end.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import test from "ava";
import {
  agentServiceName,
  DEFAULT_TOPOLOGY,
  findWorkspaceCommand,
  hoaOf,
  holdService,
  labDown,
  labUp,
  parseTopology,
  readVmLocation,
  vmOf,
  withVmCount,
} from "@xenroam/lab";
import { pings } from "./support.js";

const run = promisify(execFile);
const XENROAM = findWorkspaceCommand("xenroam");

interface Row {
  vm: string;
  to: string;
  outcome: string;
  why?: string;
  downtimeMs?: number;
  elapsedMs: number;
}

test("evacuate: three VMs off a host to a site; two with the method, the silent one falls back and is reported", async (t) => {
  if (!XENROAM) throw new Error("xenroam is not installed in this workspace");
  const name = `e${randomBytes(2).toString("hex")}`;
  const stateRoot = mkdtempSync(join(tmpdir(), "xr-evac-"));
  const topology = parseTopology(withVmCount({ ...DEFAULT_TOPOLOGY, name }, 3));
  t.teardown(async () => {
    await labDown(name, { stateRoot, force: true }).catch(() => {});
    rmSync(stateRoot, { recursive: true, force: true });
  });
  await labUp(topology, { stateRoot });
  const stateDir = join(stateRoot, name);
  // vm3's guest agent is down: it cannot prepare.
  await holdService(stateDir, agentServiceName(topology, "vm3"), true);
  const timeoutMs = 2000;
  const { stdout, stderr } = await run("ip", [
    "netns",
    "exec",
    `${name}-hosta`,
    ...XENROAM,
    "--lab",
    stateDir,
    "evacuate",
    "hosta",
    "--to",
    "b",
    "--parallel",
    "3",
    "--timeout",
    String(timeoutMs),
    "--json",
  ]);
  const summary = JSON.parse(stdout) as { rows: Row[]; destinations: string[] };
  const rows = new Map(summary.rows.map((r) => [r.vm, r]));
  t.deepEqual(summary.destinations, ["hostb"]);
  t.deepEqual([...rows.keys()], ["vm", "vm2", "vm3"]);
  for (const vm of ["vm", "vm2"]) {
    const r = rows.get(vm);
    t.is(r?.outcome, "method", `${vm}: ${r?.why ?? ""}`);
    t.true((r?.downtimeMs ?? Infinity) < 1000, `${vm} paused ${r?.downtimeMs} ms`);
    t.true(
      (r?.elapsedMs ?? Infinity) < timeoutMs,
      `${vm} took ${r?.elapsedMs} ms: held up by vm3's silence?`,
    );
  }
  t.is(rows.get("vm3")?.outcome, "fallback");
  t.regex(rows.get("vm3")?.why ?? "", /did not answer within 2000 ms/);
  // Progress: a line as each VM starts and one as it ends.
  t.regex(stderr, /evacuating 3 VMs from hosta to site b \(hostb\), 3 at a time/);
  for (const vm of ["vm", "vm2", "vm3"]) t.regex(stderr, new RegExp(`\\[\\d/3\\] ${vm} -> hostb: `));
  // Every VM runs on hostb; the two that moved with the method keep their home addresses both ways.
  for (const vm of ["vm", "vm2", "vm3"]) t.is(readVmLocation(stateDir, vm).host, "hostb", vm);
  const cnNs = `${name}-${topology.correspondent.name}`;
  for (const vm of ["vm", "vm2"]) {
    t.true(await pings(`${name}-${vm}`, topology.correspondent.address), `${vm} -> CN`);
    t.true(await pings(cnNs, hoaOf(topology, vmOf(topology, vm)) ?? ""), `CN -> ${vm}'s HoA`);
  }
  // Nothing is left on hosta: no VM, no staging bridge.
  const { stdout: links } = await run("ip", ["netns", "exec", `${name}-hosta`, "ip", "-o", "link", "show"]);
  t.notRegex(links, /\bxr-b\b/);
  t.notRegex(links, /\bvif\d+\.\d\b/);
});

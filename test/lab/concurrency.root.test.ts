// Root-only: Dom0 under two operations at once (issue 12 item 4), in the namespace lab with the real
// xenroam processes, their locks (Unix sockets the kernel releases), radvd and the guest agent. The same VM
// migrated twice at the same moment: one migrates with the method, the other is refused at once, naming the
// holder, and nothing of the first is undone (its staging bridge and radvd stay until its own cleanup).
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import test from "ava";
import {
  DEFAULT_TOPOLOGY,
  findWorkspaceCommand,
  labDown,
  labUp,
  parseTopology,
  readVmLocation,
} from "@xenroam/lab";
import { pings, type MigrationReport } from "./support.js";

const run = promisify(execFile);
const XENROAM = findWorkspaceCommand("xenroam");

test("the same VM migrated twice at once: one migrates with the method, the other is refused and undoes nothing", async (t) => {
  if (!XENROAM) throw new Error("xenroam is not installed in this workspace");
  const name = `c${randomBytes(2).toString("hex")}`;
  const stateRoot = mkdtempSync(join(tmpdir(), "xr-conc-"));
  const topology = parseTopology({ ...DEFAULT_TOPOLOGY, name });
  t.teardown(async () => {
    await labDown(name, { stateRoot, force: true }).catch(() => {});
    rmSync(stateRoot, { recursive: true, force: true });
  });
  await labUp(topology, { stateRoot });
  const stateDir = join(stateRoot, name);
  const from = readVmLocation(stateDir).host;
  const attempt = () =>
    run("ip", [
      "netns",
      "exec",
      `${name}-${from}`,
      ...XENROAM,
      "--lab",
      stateDir,
      "migrate",
      topology.vm.name,
      "hostb",
      "--json",
    ]).then(
      (r) => ({ ok: true as const, report: JSON.parse(r.stdout) as MigrationReport }),
      (err: { code?: number; stderr?: string }) => ({
        ok: false as const,
        code: err.code,
        stderr: String(err.stderr),
      }),
    );
  const [a, b] = await Promise.all([attempt(), attempt()]);
  const won = [a, b].filter((r) => r.ok);
  const lost = [a, b].filter((r) => !r.ok);
  t.is(won.length, 1, JSON.stringify([a, b]));
  t.is(lost.length, 1);
  const winner = won[0];
  const loser = lost[0];
  if (!winner?.ok || !loser || loser.ok) return;
  t.is(winner.report.method, "dual-interface", winner.report.fallback ?? "");
  t.regex(loser.stderr, /another xenroam operation is at work on .*nothing was changed/);
  t.not(loser.code, 0);
  t.is(readVmLocation(stateDir).host, "hostb");
  const vmNs = `${name}-${topology.vm.name}`;
  const cnNs = `${name}-${topology.correspondent.name}`;
  t.true(await pings(vmNs, topology.correspondent.address), "VM -> CN after the move");
  if (topology.mobility) t.true(await pings(cnNs, topology.mobility.hoa), "CN -> HoA after the move");
  // The VM goes back with the method: the loser left nothing that gets in the way.
  const back = await run("ip", [
    "netns",
    "exec",
    `${name}-hostb`,
    ...XENROAM,
    "--lab",
    stateDir,
    "migrate",
    topology.vm.name,
    "hosta",
    "--json",
  ]);
  t.is((JSON.parse(back.stdout) as MigrationReport).method, "dual-interface");
});

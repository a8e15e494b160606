// Shared by the lab's root tests: run `xenroam migrate` on the host the VM is on now.
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { findWorkspaceCommand, readVmLocation, type Topology } from "@xenroam/lab";

const run = promisify(execFile);
const XENROAM = findWorkspaceCommand("xenroam");

export interface MigrationReport {
  method: string;
  fallback?: string;
  moa?: string;
  domid: number;
  /** When the migration started (ms since the epoch); the timeline counts from it. */
  startedAt: number;
  timeline: Array<{ phase: string; atMs: number }>;
}

export function migrate(
  topology: Topology,
  stateDir: string,
  to: string,
  extra: string[] = [],
): Promise<MigrationReport> {
  return migrateVm(topology, stateDir, topology.vm.name, to, extra);
}

/** `xenroam migrate VM TO --json` for any VM of the lab, on the host it runs on now. */
export async function migrateVm(
  topology: Topology,
  stateDir: string,
  vm: string,
  to: string,
  extra: string[] = [],
): Promise<MigrationReport> {
  if (!XENROAM) throw new Error("xenroam is not installed in this workspace");
  const from = readVmLocation(stateDir, vm).host;
  const { stdout } = await run("ip", [
    "netns",
    "exec",
    `${topology.name}-${from}`,
    ...XENROAM,
    "--lab",
    stateDir,
    "migrate",
    vm,
    to,
    "--json",
    ...extra,
  ]);
  return JSON.parse(stdout) as MigrationReport;
}

/** `xenroam prepare` (step 1 alone) on the host the VM is on now; returns what it printed. */
export async function prepare(topology: Topology, stateDir: string, to: string): Promise<string> {
  if (!XENROAM) throw new Error("xenroam is not installed in this workspace");
  const from = readVmLocation(stateDir).host;
  const { stdout } = await run("ip", [
    "netns",
    "exec",
    `${topology.name}-${from}`,
    ...XENROAM,
    "--lab",
    stateDir,
    "prepare",
    topology.vm.name,
    "--to",
    to,
  ]);
  return stdout;
}

/** Whether `to` answers a ping from `netns` within `tries` attempts (0.3 s each, 0.1 s apart). */
export async function pings(netns: string, to: string, tries = 20): Promise<boolean> {
  for (let i = 0; i < tries; i++) {
    try {
      await run("ip", ["netns", "exec", netns, "ping", "-6", "-n", "-c", "1", "-W", "0.3", to]);
      return true;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return false;
}

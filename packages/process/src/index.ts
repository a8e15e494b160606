// Process identity that survives PID reuse (the PID plus its start time), and stopping a process only if it
// is still the one recorded — never by name. Used by the lab (its supervisor and down) and the host plugin
// (the radvd it starts, its state file). Reads /proc. And which program runs for a command name (binaries.ts).
// A real etcd cluster on loopback (tests, the lab's bench) is @xenroam/process/etcd-cluster, apart: what loads
// this module (the agents, the host plugin) never loads it.

import { readFileSync } from "node:fs";

export * from "./binaries.js";

/** A process identity that survives PID reuse: the PID plus its start time in clock ticks since boot. */
export interface ProcessId {
  readonly pid: number;
  readonly startTime: number;
}

export function processStartTime(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Field 2 (comm) may contain spaces and parentheses; fields after the last ')' are fixed.
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // A zombie (Z) or dead (X) process has finished; only its parent's wait() is missing.
    if (rest[0] === "Z" || rest[0] === "X") return undefined;
    const start = Number(rest[19]);
    return Number.isFinite(start) ? start : undefined;
  } catch {
    return undefined;
  }
}

export function identify(pid: number): ProcessId | undefined {
  const startTime = processStartTime(pid);
  return startTime === undefined ? undefined : { pid, startTime };
}

export function isRunning(p: ProcessId): boolean {
  return processStartTime(p.pid) === p.startTime;
}

/** Sends SIGTERM, waits, then SIGKILL; only if the PID still names the same process. */
export async function stopProcess(p: ProcessId, graceMs = 3000): Promise<"gone" | "stopped" | "killed"> {
  if (!isRunning(p)) return "gone";
  try {
    process.kill(p.pid, "SIGTERM");
  } catch {
    return "gone";
  }
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline) {
    if (!isRunning(p)) return "stopped";
    await new Promise((r) => setTimeout(r, 25));
  }
  if (!isRunning(p)) return "stopped";
  try {
    process.kill(p.pid, "SIGKILL");
  } catch {
    return "stopped";
  }
  for (let i = 0; i < 40 && isRunning(p); i++) await new Promise((r) => setTimeout(r, 25));
  return "killed";
}

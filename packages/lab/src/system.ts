// The lab's one adapter to the host system: iproute2 for named network namespaces (there is no netlink call
// that creates one), and process identity checks so nothing is ever killed by name or by a recycled PID.

import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { promisify } from "node:util";

const execFileAsync = promisify(execFile);

export class SystemError extends Error {
  override readonly name = "SystemError";
}

async function ip(...args: string[]): Promise<string> {
  try {
    const { stdout } = await execFileAsync("ip", args, { encoding: "utf8" });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; code?: string | number };
    if (e.code === "ENOENT")
      throw new SystemError("`ip` not found: install iproute2 (apt-get install iproute2)");
    throw new SystemError(`ip ${args.join(" ")}: ${(e.stderr ?? String(err)).trim()}`);
  }
}

export async function netnsList(): Promise<string[]> {
  const out = (await ip("-j", "netns", "list")).trim();
  if (!out) return [];
  return (JSON.parse(out) as Array<{ name: string }>).map((n) => n.name);
}

export async function netnsAdd(name: string): Promise<void> {
  await ip("netns", "add", name);
}

/** Runs a command inside a namespace and returns its stdout; fails with its stderr. */
export async function netnsExec(name: string, argv: readonly string[]): Promise<string> {
  return ip("netns", "exec", name, ...argv);
}

export async function netnsDel(name: string): Promise<void> {
  await ip("netns", "del", name);
}

/** PIDs of every process whose network namespace is `name`. */
export async function netnsPids(name: string): Promise<number[]> {
  return (await ip("netns", "pids", name))
    .split(/\s+/)
    .filter(Boolean)
    .map(Number)
    .filter((p) => Number.isInteger(p) && p > 0);
}

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

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

/** `ip -j` inside a namespace (`ip -n NAME -j ARGS…`), parsed; an empty answer is an empty list. */
export async function ipJson(name: string, args: readonly string[]): Promise<unknown> {
  const out = (await ip("-n", name, "-j", ...args)).trim();
  return out ? (JSON.parse(out) as unknown) : [];
}

export interface ProcessState {
  readonly pid: number;
  /** /proc/PID/comm: the program's name, as ps shows it. */
  readonly comm: string;
  /** /proc/PID/stat's state letter: R, S, D, T (stopped: a paused VM's processes), Z… */
  readonly state: string;
  /** The parent's PID. */
  readonly ppid: number;
  /** /proc/PID/cmdline, arguments joined by spaces. */
  readonly cmdline: string;
}

/** What runs in a namespace, from /proc (processes that exit while being read are left out). */
export async function processesIn(name: string): Promise<ProcessState[]> {
  const out: ProcessState[] = [];
  for (const pid of await netnsPids(name)) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const comm = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      const [state = "?", ppid] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ").trim();
      out.push({ pid, comm, state, ppid: Number(ppid), cmdline });
    } catch {
      /* exited meanwhile */
    }
  }
  return out;
}

// Process identity lives in @xenroam/process (the host plugin uses it too); re-exported for the lab's users.
export { identify, isRunning, type ProcessId, processStartTime, stopProcess } from "@xenroam/process";

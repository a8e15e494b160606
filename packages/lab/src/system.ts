// The lab's one adapter to the host system: iproute2 for named network namespaces (there is no netlink call
// that creates one), and process identity checks so nothing is ever killed by name or by a recycled PID.

import { execFile } from "node:child_process";
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

// Process identity lives in @xenroam/process (the host plugin uses it too); re-exported for the lab's users.
export { identify, isRunning, type ProcessId, processStartTime, stopProcess } from "@xenroam/process";

// Starts the carrier hold's releaser (`xenroam hold-release`) detached from `xenroam receive`: receive's
// stdio is the migration transport, which must close as soon as the domain runs (the source's ssh waits for
// it), while the releaser waits up to the hold's timeout for the guest's switch. Its JSON log lines are
// appended to hold-release.log in the state directory.
//
// receive starts it when the migration begins, long before the domain runs: Node.js starting in Dom0 then
// shares the CPU with the incoming memory stream, not with the guest resuming. It waits on a pipe for the
// domain and the vifs held ("<domid> <devid,...>\n"); a pipe closed without them means nothing was held.

import { spawn } from "node:child_process";
import { mkdirSync, openSync, closeSync } from "node:fs";
import { join } from "node:path";

export interface HoldRelease {
  readonly vm: string;
  readonly devids: readonly number[];
  readonly migration: string;
}

/** A releaser started ahead of the hold. */
export interface PendingRelease {
  readonly pid: number | undefined;
  /** Hands it the domain and the vifs now held; false when it is gone (then nobody would release them). */
  engage(domid: number, devids: readonly number[]): boolean;
  /** Nothing was held (or will be): it exits. A no-op after engage. */
  cancel(): void;
}

/** Spawns the releaser in its own session with no tie to our stdio but the pipe it waits on. */
export function spawnPendingRelease(
  r: HoldRelease,
  options: { readonly stateDir: string; readonly xenstore?: string },
): PendingRelease {
  mkdirSync(options.stateDir, { recursive: true, mode: 0o700 });
  const logFd = openSync(join(options.stateDir, "hold-release.log"), "a", 0o600);
  try {
    const script = process.argv[1];
    if (!script) throw new Error("cannot tell which script runs xenroam (process.argv[1] is empty)");
    const child = spawn(
      process.execPath,
      [
        script,
        ...(options.xenstore ? ["--xenstore", options.xenstore] : []),
        "hold-release",
        r.vm,
        "--devids",
        r.devids.join(","),
        "--migration",
        r.migration,
        "--domid-from-stdin",
      ],
      { detached: true, stdio: ["pipe", logFd, logFd] },
    );
    child.unref();
    const stdin = child.stdin;
    if (!stdin) throw new Error("the releaser has no stdin pipe");
    // A releaser that failed to start or died while the memory arrived: engage says so, and receive then
    // releases the vifs itself at once rather than leave them held.
    let alive = true;
    child.on("error", () => (alive = false));
    child.on("exit", () => (alive = false));
    stdin.on("error", () => (alive = false));
    let done = false;
    return {
      pid: child.pid,
      engage(domid, devids) {
        if (done || !alive || child.pid === undefined) return false;
        done = true;
        stdin.end(`${domid} ${devids.join(",")}\n`);
        return true;
      },
      cancel() {
        if (done) return;
        done = true;
        stdin.end();
      },
    };
  } finally {
    closeSync(logFd);
  }
}

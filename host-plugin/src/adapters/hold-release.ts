// Starts the carrier hold's releaser (`xenroam hold-release`) detached from `xenroam receive`: receive's
// stdio is the migration transport, which must close as soon as the domain runs (the source's ssh waits for
// it), while the releaser waits up to the hold's timeout for the guest's switch. Its JSON log lines are
// appended to hold-release.log in the state directory.

import { spawn } from "node:child_process";
import { mkdirSync, openSync, closeSync } from "node:fs";
import { join } from "node:path";

export interface HoldRelease {
  readonly vm: string;
  readonly domid: number;
  readonly devids: readonly number[];
  readonly migration: string;
}

/** Spawns the releaser in its own session with no tie to our stdio; returns its PID. */
export function spawnHoldRelease(
  r: HoldRelease,
  options: { readonly stateDir: string; readonly xenstore?: string },
): number | undefined {
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
        "--domid",
        String(r.domid),
        "--devids",
        r.devids.join(","),
        "--migration",
        r.migration,
      ],
      { detached: true, stdio: ["ignore", logFd, logFd] },
    );
    child.unref();
    return child.pid;
  } finally {
    closeSync(logFd);
  }
}

// RadvdControl: the only code in the host plugin that starts radvd. One detached radvd per staging bridge,
// its config, pid file and log in the state directory while it runs (removed when it is stopped; the log of one
// that had died on its own stays), stopped by recorded identity (PID + start time), never by name.
import { spawn } from "node:child_process";
import { closeSync, openSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { binaryPath, identify, isRunning, stopProcess } from "@xenroam/process";
import type { ProcessRef, RadvdControl } from "../ports.js";

/** `binary`: radvd's path; by default XENROAM_RADVD or the system's (@xenroam/process's resolver, as doctor reports). */
export function createRadvdControl(stateDir: string, binary?: string): RadvdControl {
  const files = (name: string) => ({
    conf: join(stateDir, `radvd-${name}.conf`),
    pid: join(stateDir, `radvd-${name}.pid`),
    log: join(stateDir, `radvd-${name}.log`),
  });
  return {
    async start(name, config) {
      const { conf, pid, log } = files(name);
      const program = binary ?? binaryPath("radvd");
      writeFileSync(conf, config);
      const logFd = openSync(log, "a");
      const child = spawn(program, ["--nodaemon", "-C", conf, "-p", pid, "-m", "stderr"], {
        detached: true,
        stdio: ["ignore", logFd, logFd],
      });
      closeSync(logFd);
      const failed = new Promise<Error>((resolve) => child.once("error", resolve));
      child.unref();
      const ref = child.pid === undefined ? undefined : identify(child.pid);
      if (!ref) {
        // Not started (no radvd binary, say): nothing of it stays, the error says why.
        for (const f of [conf, pid, log]) rmSync(f, { force: true });
        throw await failed;
      }
      return ref;
    },
    async stop(name, ref) {
      // A radvd that exited on its own is a fault worth reading about: its log stays.
      const died = !isRunning(ref);
      await stopProcess(ref);
      const { conf, pid, log } = files(name);
      for (const f of died ? [conf, pid] : [conf, pid, log]) rmSync(f, { force: true });
    },
    running: (ref: ProcessRef) => isRunning(ref),
  };
}

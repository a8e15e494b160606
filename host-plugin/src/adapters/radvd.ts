// RadvdControl: the only code in the host plugin that starts radvd. One detached radvd per staging bridge,
// its config and log in the state directory, stopped by recorded identity (PID + start time), never by name.
import { spawn } from "node:child_process";
import { closeSync, openSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { identify, isRunning, stopProcess } from "@xenroam/process";
import type { ProcessRef, RadvdControl } from "../ports.js";

export function createRadvdControl(stateDir: string, binary = "radvd"): RadvdControl {
  return {
    async start(name, config) {
      const conf = join(stateDir, `radvd-${name}.conf`);
      const pid = join(stateDir, `radvd-${name}.pid`);
      writeFileSync(conf, config);
      const logFd = openSync(join(stateDir, `radvd-${name}.log`), "a");
      const child = spawn(binary, ["--nodaemon", "-C", conf, "-p", pid, "-m", "stderr"], {
        detached: true,
        stdio: ["ignore", logFd, logFd],
      });
      closeSync(logFd);
      const failed = new Promise<Error>((resolve) => child.once("error", resolve));
      child.unref();
      const ref = child.pid === undefined ? undefined : identify(child.pid);
      if (!ref) throw await failed;
      return ref;
    },
    async stop(ref) {
      await stopProcess(ref);
    },
    running: (ref: ProcessRef) => isRunning(ref),
  };
}

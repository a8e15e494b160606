// StateStore on disk: one JSON file, replaced atomically, changed under an exclusive lock file (stale locks
// of dead processes are taken over).
import {
  closeSync,
  existsSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import { identify, isRunning } from "@xenroam/process";
import { EMPTY_STATE, type HostState, type StateStore } from "../ports.js";

export function createStateStore(stateDir: string): StateStore {
  const file = join(stateDir, "host-state.json");
  const lock = join(stateDir, "host-state.lock");
  const read = (): HostState =>
    existsSync(file) ? (JSON.parse(readFileSync(file, "utf8")) as HostState) : EMPTY_STATE;
  const acquire = async () => {
    for (let i = 0; i < 400; i++) {
      try {
        const fd = openSync(lock, "wx");
        writeSync(fd, JSON.stringify(identify(process.pid)));
        closeSync(fd);
        return;
      } catch {
        try {
          const holder = JSON.parse(readFileSync(lock, "utf8")) as { pid: number; startTime: number } | null;
          if (!holder || !isRunning(holder)) rmSync(lock, { force: true });
        } catch {
          rmSync(lock, { force: true });
        }
        await new Promise((r) => setTimeout(r, 25));
      }
    }
    throw new Error(`could not lock ${lock} within 10 s`);
  };
  return {
    read: async () => read(),
    async update(fn) {
      await acquire();
      try {
        const { state, result } = fn(read());
        writeFileSync(`${file}.tmp`, JSON.stringify(state, null, 2));
        renameSync(`${file}.tmp`, file);
        return result;
      } finally {
        rmSync(lock, { force: true });
      }
    },
  };
}

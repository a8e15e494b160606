// StateStore on disk: one JSON file, replaced atomically, changed under a lock the kernel releases when its
// holder dies (adapters/locks.ts): no lock file to find stale, take over, or catch half-written.
import { existsSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { EMPTY_STATE, type HostState, type Locks, type StateStore } from "../ports.js";
import { createLocks } from "./locks.js";

/** How long an update waits for another process's (each holds it for one read and one write). */
const STATE_LOCK_MS = 10_000;

export function createStateStore(stateDir: string, locks: Locks = createLocks(stateDir)): StateStore {
  const file = join(stateDir, "host-state.json");
  const read = (): HostState =>
    existsSync(file) ? (JSON.parse(readFileSync(file, "utf8")) as HostState) : EMPTY_STATE;
  return {
    read: async () => read(),
    async update(fn) {
      const held = await locks.acquire("state", "a state update", STATE_LOCK_MS);
      try {
        const { state, result } = fn(read());
        writeFileSync(`${file}.tmp`, JSON.stringify(state, null, 2));
        renameSync(`${file}.tmp`, file);
        return result;
      } finally {
        await held.release();
      }
    },
  };
}

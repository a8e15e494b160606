// StateStore on disk: one JSON file, replaced atomically, changed under a lock the kernel releases when its
// holder dies (adapters/locks.ts): no lock file to find stale, take over, or catch half-written.
import { existsSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { EMPTY_STATE, type HostState, type Locks, type StateStore } from "../ports.js";
import { createLocks } from "./locks.js";

/** How long an update waits for another process's (each holds it for one read and one write). */
const STATE_LOCK_MS = 10_000;

interface Pending {
  readonly fn: (s: HostState) => { state: HostState; result: unknown };
  readonly resolve: (v: unknown) => void;
  readonly reject: (e: unknown) => void;
}

export function createStateStore(stateDir: string, locks: Locks = createLocks(stateDir)): StateStore {
  const file = join(stateDir, "host-state.json");
  const read = (): HostState =>
    existsSync(file) ? (JSON.parse(readFileSync(file, "utf8")) as HostState) : EMPTY_STATE;
  // Updates asked for while one is written are applied together, in order, under one lock and one write
  // (group commit): a hundred prepares at once in one process (evacuate, prepare of many VMs) wrote the
  // whole file a hundred times over, one after another. Each still sees the state every earlier one left.
  let queue: Pending[] = [];
  let draining: Promise<void> | undefined;
  const drain = async (): Promise<void> => {
    while (queue.length > 0) {
      let batch: Pending[] = [];
      try {
        const held = await locks.acquire("state", "a state update", STATE_LOCK_MS);
        batch = queue;
        queue = [];
        const outcomes: Array<{ ok: true; result: unknown } | { ok: false; error: unknown }> = [];
        try {
          let state = read();
          for (const p of batch) {
            try {
              const r = p.fn(state);
              state = r.state;
              outcomes.push({ ok: true, result: r.result });
            } catch (error) {
              // This one changes nothing; the others go on from the state as it was before it.
              outcomes.push({ ok: false, error });
            }
          }
          writeFileSync(`${file}.tmp`, JSON.stringify(state, null, 2));
          renameSync(`${file}.tmp`, file);
        } finally {
          await held.release();
        }
        batch.forEach((p, i) => {
          const o = outcomes[i];
          if (o?.ok) p.resolve(o.result);
          else p.reject(o?.error);
        });
      } catch (err) {
        // The lock or the write failed: none of this batch took effect (those still queued try again).
        const failed = batch.length > 0 ? batch : queue.splice(0);
        for (const p of failed) p.reject(err);
      }
    }
  };
  const kick = (): void => {
    if (draining) return;
    draining = (async () => {
      try {
        await drain();
      } finally {
        draining = undefined;
        // Updates asked for by the callers just answered (their continuations ran before this) go now.
        if (queue.length > 0) kick();
      }
    })();
  };
  return {
    read: async () => read(),
    update<T>(fn: (s: HostState) => { state: HostState; result: T }): Promise<T> {
      return new Promise<T>((resolve, reject) => {
        queue.push({ fn, resolve: resolve as (v: unknown) => void, reject });
        kick();
      });
    },
  };
}

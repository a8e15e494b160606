// Locks within one process (the engine's default, and the tests'): the same contract as the kernel-released
// ones between processes (adapters/locks.ts). Pure.
import type { Held, LockHolder, Locks } from "./ports.js";

export class MemoryLocks implements Locks {
  private readonly held = new Map<string, LockHolder>();

  async tryAcquire(key: string, what: string): Promise<{ held: Held } | { holder: LockHolder }> {
    const holder = this.held.get(key);
    if (holder) return { holder };
    const mine: LockHolder = { pid: 0, what, since: new Date().toISOString() };
    this.held.set(key, mine);
    return {
      held: {
        release: async () => {
          if (this.held.get(key) === mine) this.held.delete(key);
        },
      },
    };
  }

  async acquire(key: string, what: string, timeoutMs: number): Promise<Held> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const r = await this.tryAcquire(key, what);
      if ("held" in r) return r.held;
      if (Date.now() >= until)
        throw new Error(`${key} is held (${r.holder.what}) for more than ${timeoutMs} ms`);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }
}

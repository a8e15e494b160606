// Locks between xenroam processes on one Dom0 that the kernel releases when their holder dies, as flock(2)
// locks are (Node.js has no flock): a Unix socket bound to a name in Linux's abstract namespace. Binding it
// is exclusive (EADDRINUSE while anyone holds it); it is no file, so nothing stale is left after a crash and
// nothing is caught half-written; the name goes with the last descriptor, when the holder exits or is killed.
// Whoever finds it taken connects and reads who holds it (pid, operation, since). Abstract names belong to a
// network namespace — one per Dom0, one per host of the lab — and the state directory is part of the name.
import { createHash } from "node:crypto";
import { connect, createServer, type Server } from "node:net";
import type { Held, LockHolder, Locks } from "../ports.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function nameOf(stateDir: string, key: string): string {
  const scope = createHash("sha256").update(stateDir).digest("hex").slice(0, 16);
  return `\0xenroam:${scope}:${key}`;
}

function listen(name: string, holder: LockHolder): Promise<Server | undefined> {
  return new Promise((resolve, reject) => {
    const server = createServer((c) => {
      c.on("error", () => {});
      c.end(JSON.stringify(holder));
    });
    server.once("error", (err: NodeJS.ErrnoException) => {
      if (err.code === "EADDRINUSE") resolve(undefined);
      else reject(err);
    });
    server.listen({ path: name }, () => {
      server.unref(); // a held lock alone does not keep the process alive
      resolve(server);
    });
  });
}

/** Who holds `name`, or undefined when nobody answers (the holder just let go, or died). */
function holderOf(name: string): Promise<LockHolder | undefined> {
  return new Promise((resolve) => {
    let text = "";
    const c = connect({ path: name });
    const done = (h: LockHolder | undefined) => {
      clearTimeout(timer);
      c.destroy();
      resolve(h);
    };
    const timer = setTimeout(() => done(undefined), 1000);
    c.on("data", (d: Buffer) => (text += d.toString()));
    c.on("end", () => {
      try {
        done(JSON.parse(text) as LockHolder);
      } catch {
        done(undefined);
      }
    });
    c.on("error", () => done(undefined));
  });
}

export function createLocks(stateDir: string): Locks {
  const tryAcquire = async (key: string, what: string): Promise<{ held: Held } | { holder: LockHolder }> => {
    const name = nameOf(stateDir, key);
    for (let i = 0; i < 20; i++) {
      const holder: LockHolder = { pid: process.pid, what, since: new Date().toISOString() };
      const server = await listen(name, holder);
      if (server) {
        const held: Held = {
          release: () => new Promise<void>((resolve) => server.close(() => resolve())),
        };
        return { held };
      }
      const other = await holderOf(name);
      if (other) return { holder: other };
      // Let go between our bind and our look: try again.
    }
    throw new Error(`lock ${key}: taken and let go 20 times in a row`);
  };
  return {
    tryAcquire,
    async acquire(key: string, what: string, timeoutMs: number): Promise<Held> {
      const until = Date.now() + timeoutMs;
      let wait = 5;
      for (;;) {
        wait = Math.min(100, wait * 2);
        const r = await tryAcquire(key, what);
        if ("held" in r) return r.held;
        if (Date.now() + wait > until) {
          throw new Error(
            `${key} is held by process ${r.holder.pid} (${r.holder.what}, since ${r.holder.since}) for more than ${timeoutMs} ms`,
          );
        }
        await sleep(wait);
      }
    },
  };
}

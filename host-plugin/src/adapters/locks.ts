// Locks between xenroam processes on one Dom0 that the kernel releases when their holder dies, as flock(2)
// locks are (Node.js has no flock): a Unix socket bound to a name in Linux's abstract namespace. Binding it
// is exclusive (EADDRINUSE while anyone holds it); it is no file, so nothing stale is left after a crash and
// nothing is caught half-written; the name goes with the last descriptor, when the holder exits or is killed.
// Whoever finds it taken connects and reads who holds it (pid, operation, since). Abstract names belong to a
// network namespace — one per Dom0, one per host of the lab — and the state directory is part of the name.
// They have no permissions: every process in Dom0's network namespace is trusted here, as with the state
// directory itself (a process that took a name first would only make xenroam refuse, never act).
import { createHash } from "node:crypto";
import { realpathSync } from "node:fs";
import { connect, createServer, type Server, type Socket } from "node:net";
import type { Held, LockHolder, Locks } from "../ports.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function nameOf(stateDir: string, key: string): string {
  // One directory, one scope, however it is written (/run/xenroam, /run/xenroam/, a symlink to it).
  let dir = stateDir;
  try {
    dir = realpathSync(stateDir);
  } catch {
    // not made yet: as given
  }
  const scope = createHash("sha256").update(dir).digest("hex").slice(0, 16);
  return `\0xenroam:${scope}:${key}`;
}

function listen(
  name: string,
  holder: LockHolder,
): Promise<{ server: Server; clients: Set<Socket> } | undefined> {
  return new Promise((resolve, reject) => {
    // Whoever asks is told and let go; release() cuts anyone still connected (a client that never reads must
    // not keep the lock's release, or the name, waiting).
    const clients = new Set<Socket>();
    const server = createServer((c) => {
      clients.add(c);
      c.on("close", () => clients.delete(c));
      c.on("error", () => {});
      c.end(JSON.stringify(holder));
    });
    server.once("error", (err: NodeJS.ErrnoException) => {
      if (err.code === "EADDRINUSE") resolve(undefined);
      else reject(err);
    });
    server.listen({ path: name }, () => {
      server.unref(); // a held lock alone does not keep the process alive
      resolve({ server, clients });
    });
  });
}

/** A holder that holds the name but does not say who it is (stopped with ^Z, say): still a holder. */
const SILENT = (): LockHolder => ({ pid: 0, what: "a process that does not answer", since: "?" });

/** Who holds `name`; undefined when nobody is there any more (the holder just let go, or died). */
function holderOf(name: string): Promise<LockHolder | undefined> {
  return new Promise((resolve) => {
    let text = "";
    const c = connect({ path: name });
    const done = (h: LockHolder | undefined) => {
      clearTimeout(timer);
      c.destroy();
      resolve(h);
    };
    const timer = setTimeout(() => done(SILENT()), 1000);
    c.on("data", (d: Buffer) => (text += d.toString()));
    c.on("end", () => {
      try {
        done(JSON.parse(text) as LockHolder);
      } catch {
        done(SILENT());
      }
    });
    // ECONNREFUSED: the name went between our bind and our connect; anything else, someone is there.
    c.on("error", (err: NodeJS.ErrnoException) => done(err.code === "ECONNREFUSED" ? undefined : SILENT()));
  });
}

export function createLocks(stateDir: string): Locks {
  const tryAcquire = async (key: string, what: string): Promise<{ held: Held } | { holder: LockHolder }> => {
    const name = nameOf(stateDir, key);
    for (let i = 0; i < 20; i++) {
      const holder: LockHolder = { pid: process.pid, what, since: new Date().toISOString() };
      const bound = await listen(name, holder);
      if (bound) {
        const held: Held = {
          release: () =>
            new Promise<void>((resolve) => {
              bound.server.close(() => resolve());
              for (const c of bound.clients) c.destroy();
            }),
        };
        return { held };
      }
      const other = await holderOf(name);
      if (other) return { holder: other };
      // Let go between our bind and our look: try again.
    }
    throw new Error(`lock ${key}: taken and let go 20 times in a row`);
  };
  /** Waits for the kernel's lock, polling (another process holds it: nothing tells us when it lets go). */
  const acquireKernel = async (
    key: string,
    what: string,
    until: number,
    timeoutMs: number,
  ): Promise<Held> => {
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
  };
  // Waiters of this process queue here, first come first served, and only the head of a key's queue asks the
  // kernel: a hundred prepares in one process (xenroam evacuate, prepare of many VMs) then hand the lock on
  // as each lets go, instead of all polling the socket with backoff (up to 100 ms lost per hand-over).
  const queues = new Map<string, Promise<void>>();
  /** Who of this process holds a key now (the head of its queue, once the kernel gave it the lock). */
  const holders = new Map<string, LockHolder>();
  return {
    tryAcquire,
    async acquire(key: string, what: string, timeoutMs: number): Promise<Held> {
      const until = Date.now() + timeoutMs;
      const before = queues.get(key) ?? Promise.resolve();
      let leave: () => void = () => {};
      const mine = new Promise<void>((r) => {
        leave = r;
      });
      const tail = before.then(() => mine);
      queues.set(key, tail);
      const out = () => {
        leave();
        if (queues.get(key) === tail) queues.delete(key);
      };
      let timer: NodeJS.Timeout | undefined;
      const turn = await Promise.race([
        before.then(() => "turn" as const),
        new Promise<"timeout">((r) => {
          timer = setTimeout(() => r("timeout"), Math.max(0, until - Date.now()));
        }),
      ]);
      clearTimeout(timer);
      if (turn === "timeout") {
        out();
        const h = holders.get(key) ?? (await holderOf(nameOf(stateDir, key))) ?? SILENT();
        throw new Error(
          `${key} is held by process ${h.pid} (${h.what}, since ${h.since}) for more than ${timeoutMs} ms`,
        );
      }
      try {
        const held = await acquireKernel(key, what, until, timeoutMs);
        const me: LockHolder = { pid: process.pid, what, since: new Date().toISOString() };
        holders.set(key, me);
        return {
          release: async () => {
            if (holders.get(key) === me) holders.delete(key);
            try {
              await held.release();
            } finally {
              out();
            }
          },
        };
      } catch (err) {
        out();
        throw err;
      }
    },
  };
}

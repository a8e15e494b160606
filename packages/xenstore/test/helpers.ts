// Test helpers: a server on temporary unix sockets, Dom0 and guest clients, cleaned up by teardown.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ExecutionContext } from "ava";
import { XenstoreClient, XenstoreServer } from "../src/index.js";

export interface Rig {
  server: XenstoreServer;
  dir: string;
  dom0: () => Promise<XenstoreClient>;
  guest: (domid: number) => Promise<XenstoreClient>;
}

export async function rig(t: ExecutionContext, guests: number[] = []): Promise<Rig> {
  const dir = mkdtempSync(join(tmpdir(), "xr-xs-"));
  const server = new XenstoreServer();
  await server.listen(join(dir, "dom0.sock"));
  for (const g of guests) {
    server.introduceDomain(g);
    await server.listen(join(dir, `dom${g}.sock`), { domid: g });
  }
  const clients: XenstoreClient[] = [];
  const open = async (p: string) => {
    const c = await XenstoreClient.connect(p);
    clients.push(c);
    return c;
  };
  t.teardown(async () => {
    for (const c of clients) c.close();
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return {
    server,
    dir,
    dom0: () => open(join(dir, "dom0.sock")),
    guest: (domid) => open(join(dir, `dom${domid}.sock`)),
  };
}

/**
 * Reads a watch without losing events: one pending next() is kept across calls, so a quiet() that times out
 * does not swallow the event that arrives later.
 */
export function reader<T>(it: AsyncIterable<T>) {
  const iter = it[Symbol.asyncIterator]();
  let pending: Promise<IteratorResult<T>> | undefined;
  const next = () => {
    pending ??= iter.next();
    return pending;
  };
  const race = async (ms: number): Promise<IteratorResult<T> | "timeout"> => {
    let timer: NodeJS.Timeout | undefined;
    const r = await Promise.race([
      next(),
      new Promise<"timeout">((res) => {
        timer = setTimeout(() => res("timeout"), ms);
      }),
    ]);
    clearTimeout(timer);
    if (r !== "timeout") pending = undefined;
    return r;
  };
  return {
    async take(n: number, ms = 2000): Promise<T[]> {
      const out: T[] = [];
      while (out.length < n) {
        const r = await race(ms);
        if (r === "timeout") throw new Error(`timed out after ${out.length}/${n} events`);
        if (r.done) break;
        out.push(r.value);
      }
      return out;
    },
    async quiet(ms = 150): Promise<boolean> {
      return (await race(ms)) === "timeout";
    },
  };
}

// The locks between xenroam processes (adapters/locks.ts): real abstract Unix sockets in this network
// namespace, held by this process and by child processes that are then killed.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import test from "ava";
import { createLocks } from "../src/adapters/locks.js";
import { createStateStore } from "../src/adapters/state.js";

const ADAPTER = fileURLToPath(new URL("../src/adapters/locks.js", import.meta.url));

function stateDir(t: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), "xr-locks-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test("a taken lock tells the next one who holds it; released, it can be taken", async (t) => {
  const dir = stateDir(t);
  const a = createLocks(dir);
  const b = createLocks(dir);
  const first = await a.tryAcquire("vm:web1", "migrate web1");
  if (!("held" in first)) return t.fail("the first take failed");
  const second = await b.tryAcquire("vm:web1", "prepare web1");
  t.true("holder" in second);
  if ("holder" in second) {
    t.is(second.holder.pid, process.pid);
    t.is(second.holder.what, "migrate web1");
  }
  t.true("held" in (await b.tryAcquire("vm:web2", "prepare web2")), "another key is another lock");
  t.true(
    "held" in (await createLocks(stateDir(t)).tryAcquire("vm:web1", "x")),
    "another state directory too",
  );
  await first.held.release();
  const again = await b.tryAcquire("vm:web1", "prepare web1");
  t.true("held" in again);
  if ("held" in again) await again.held.release();
});

test("acquire waits for the holder to let go, and says who held it when it gives up", async (t) => {
  const dir = stateDir(t);
  const locks = createLocks(dir);
  const held = await locks.acquire("site:b", "prepare web1", 1000);
  const waiting = locks.acquire("site:b", "prepare web2", 2000);
  setTimeout(() => void held.release(), 100);
  const mine = await waiting;
  await t.throwsAsync(locks.acquire("site:b", "prepare web3", 150), {
    message: /site:b is held by process \d+ \(prepare web2, since .*\) for more than 150 ms/,
  });
  await mine.release();
});

test("the kernel releases a lock whose holder was killed: nothing stale is left", async (t) => {
  const dir = stateDir(t);
  const child = spawn(
    process.execPath,
    [
      "--input-type=module",
      "-e",
      `const { createLocks } = await import(${JSON.stringify(ADAPTER)});
       const r = await createLocks(${JSON.stringify(dir)}).tryAcquire("vm:web1", "migrate web1");
       console.log("held" in r ? "held" : "not held");
       setInterval(() => {}, 1000);`,
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  await new Promise<void>((resolve) => child.stdout.once("data", () => resolve()));
  const locks = createLocks(dir);
  const taken = await locks.tryAcquire("vm:web1", "prepare web1");
  t.true("holder" in taken && taken.holder.pid === child.pid, "held by the child");
  const exited = new Promise((r) => child.once("exit", r));
  child.kill("SIGKILL");
  await exited;
  const after = await locks.tryAcquire("vm:web1", "prepare web1");
  t.true("held" in after, "free once the child is gone");
  if ("held" in after) await after.held.release();
});

test("state updates from two stores (two processes) under the lock lose nothing", async (t) => {
  const dir = stateDir(t);
  const stores = [createStateStore(dir), createStateStore(dir)] as const;
  await Promise.all(
    Array.from({ length: 40 }, (_, i) =>
      (i % 2 === 0 ? stores[0] : stores[1]).update((s) => ({
        state: { ...s, vms: { ...s.vms, [`vm${i}`]: { migrationId: `m${i}` } as never } },
        result: undefined,
      })),
    ),
  );
  t.is(Object.keys((await stores[0].read()).vms).length, 40);
});

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

/** A child process that takes vm:web1 in `dir`, says so, and stays. */
function holder(dir: string) {
  return spawn(
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
}

test("the kernel releases a lock whose holder was killed: nothing stale is left", async (t) => {
  const dir = stateDir(t);
  const child = holder(dir);
  await new Promise<void>((resolve) => child.stdout?.once("data", () => resolve()));
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

test("a holder that does not answer (stopped) is still a holder: refused within a second, not retried", async (t) => {
  const dir = stateDir(t);
  const child = holder(dir);
  await new Promise<void>((resolve) => child.stdout?.once("data", () => resolve()));
  t.teardown(() => {
    child.kill("SIGCONT");
    child.kill("SIGKILL");
  });
  child.kill("SIGSTOP");
  const started = Date.now();
  const r = await createLocks(dir).tryAcquire("vm:web1", "prepare web1");
  t.true("holder" in r && r.holder.what === "a process that does not answer", JSON.stringify(r));
  t.true(Date.now() - started < 3000, `${Date.now() - started} ms`);
});

test("state updates from two processes under the lock lose nothing", async (t) => {
  const dir = stateDir(t);
  const STATE = fileURLToPath(new URL("../src/adapters/state.js", import.meta.url));
  const writer = (n: number) =>
    new Promise<number | null>((resolve) => {
      const c = spawn(
        process.execPath,
        [
          "--input-type=module",
          "-e",
          `const { createStateStore } = await import(${JSON.stringify(STATE)});
           const store = createStateStore(${JSON.stringify(dir)});
           for (let i = 0; i < 25; i++)
             await store.update((s) => {
               // read, then yield to the other process before writing: without the lock, updates are lost
               const until = Date.now() + 2; while (Date.now() < until);
               return { state: { ...s, vms: { ...s.vms, ["p${n}-" + i]: { migrationId: "m" } } }, result: undefined };
             });`,
        ],
        { stdio: "inherit" },
      );
      c.once("exit", resolve);
    });
  t.deepEqual(await Promise.all([writer(1), writer(2)]), [0, 0]);
  t.is(Object.keys((await createStateStore(dir).read()).vms).length, 50);
});

test("waiters of one process queue in order and take the lock as it is let go, without polling", async (t) => {
  const dir = stateDir(t);
  const locks = createLocks(dir);
  const order: number[] = [];
  const started = Date.now();
  await Promise.all(
    Array.from({ length: 50 }, async (_, i) => {
      const held = await locks.acquire("state", `update ${i}`, 10_000);
      order.push(i);
      await new Promise((r) => setTimeout(r, 1));
      await held.release();
    }),
  );
  t.deepEqual(
    order,
    Array.from({ length: 50 }, (_, i) => i),
  );
  // Polling with backoff lost up to 100 ms per hand-over (5 s for 50); queued, each takes a bind.
  t.true(Date.now() - started < 2000, `${Date.now() - started} ms for 50 hand-overs`);
});

test("state updates at once in one process: applied in order, each sees the ones before, a failing one changes nothing, and an update asked for from an answered one's continuation still goes", async (t) => {
  const dir = stateDir(t);
  const store = createStateStore(dir);
  const put = (vm: string) =>
    store.update((s) => ({
      state: { ...s, vms: { ...s.vms, [vm]: { phase: "preparing" } as never } },
      result: Object.keys(s.vms).length,
    }));
  const seen = await Promise.all([
    put("a"),
    put("b"),
    store
      .update(() => {
        throw new Error("no");
      })
      .catch((e: Error) => e.message),
    put("c").then(async (n) => [n, await put("d")]),
  ]);
  t.deepEqual(seen, [0, 1, "no", [2, 3]]);
  t.deepEqual(Object.keys((await store.read()).vms), ["a", "b", "c", "d"]);
});

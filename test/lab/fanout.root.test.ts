// Root-only: the fan-out bench of `xenroam-lab scale --fanout` (issue 13 item 4a) at a small count: a real
// control server on SQLite, then on a real three-member etcd, 20 simulated watchers and 2 real correspondent
// agents in namespaces of their own. Every watcher gets every activation, both agents apply each to nftables,
// and nothing the bench made is left behind.
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "ava";
import { measureFanout, netnsList } from "@xenroam/lab";

test("fan-out: 20 watchers and 2 real agents get every activation, on SQLite and on etcd; nothing is left", async (t) => {
  const name = `f${randomBytes(2).toString("hex")}`;
  const stateRoot = mkdtempSync(join(tmpdir(), "xr-fanout-"));
  t.teardown(() => rmSync(stateRoot, { recursive: true, force: true }));
  const etcdBefore = readdirSync("/dev/shm").filter((f) => f.startsWith("xr-etcd-"));
  const figures = await measureFanout({
    counts: [20],
    stores: ["sqlite", "etcd"],
    activations: 4,
    correspondents: 2,
    labName: name,
    stateRoot,
  });
  t.deepEqual(
    figures.map(
      (f) =>
        `${f.store} ×${f.watchers}: ${f.complete} got all ${f.activations}, ${f.missing} missing; agents that applied all: ${f.agents.complete} of ${f.agents.agents}`,
    ),
    [
      "sqlite ×20: 20 got all 4, 0 missing; agents that applied all: 2 of 2",
      "etcd ×20: 20 got all 4, 0 missing; agents that applied all: 2 of 2",
    ],
  );
  for (const f of figures) {
    t.true(f.p50Ms > 0 && f.p95Ms >= f.p50Ms && f.maxMs >= f.p95Ms, `${f.store}: ordered figures`);
    t.true(f.agents.receivedMaxMs >= 0, `${f.store}: the agents logged what they learned`);
  }
  t.deepEqual(
    (await netnsList()).filter((n) => n.startsWith(`${name}-`)),
    [],
  );
  t.false(existsSync(join(stateRoot, `${name}-fanout`)));
  t.deepEqual(
    readdirSync("/dev/shm").filter((f) => f.startsWith("xr-etcd-") && !etcdBefore.includes(f)),
    [],
  );
});

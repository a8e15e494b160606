// Root-only: the control plane's failover under migrations (issue 13 item 2), in the namespace lab with two
// control server replicas on a real three-member etcd cluster, the real guest agent, xenroam and correspondent
// agent. The correspondent's binding datagrams are dropped, so it learns every move from the watch stream
// alone; mid-migration the replica it watches is SIGKILLed (twice), an etcd member (the leader) is SIGKILLed
// and kept down for three migrations, then started again. Every migration must keep the method, the
// correspondent must learn every activation (none missed) and map the HoA to each new MoA, its watch must move
// between replicas, and the restarted member must catch up.
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "ava";
import { labDown, measureFailover } from "@xenroam/lab";

test("a correspondent's watch fails over between replicas and survives an etcd member's death: no change missed", async (t) => {
  const labName = `f${randomBytes(2).toString("hex")}`;
  const stateRoot = mkdtempSync(join(tmpdir(), "xr-failover-"));
  t.teardown(async () => {
    await labDown(labName, { stateRoot, force: true }).catch(() => {});
    rmSync(stateRoot, { recursive: true, force: true });
  });
  const figure = await measureFailover({ migrations: 8, labName, stateRoot, say: (l) => t.log(l) });
  for (const m of figure.migrations) {
    const what = `migration ${m.index + 1} ${m.from} -> ${m.to} (${m.fault}${m.target ? ` ${m.target}` : ""} at ${m.faultAtMs ?? "-"} ms)`;
    t.is(m.method, "dual-interface", `${what}: ${m.fallback ?? m.error ?? ""}`);
    t.not(m.mappedAfterMs, undefined, `${what}: the correspondent mapped the HoA to ${m.moa}`);
    t.not(m.lagMs, undefined, `${what}: learned from the stream`);
    // A replica killed holding the etcd write lock holds the others' writes up to its lease (3 s).
    t.true((m.activationAfterMs ?? 0) < 8000, `${what}: activation accepted ${m.activationAfterMs} ms in`);
    if (m.fault === "kill-watched-replica")
      t.not(m.watchMovedAfterMs, undefined, `${what}: the correspondent's watch moved to the other replica`);
  }
  t.deepEqual(figure.missed, [], "every activation reached the correspondent through the stream");
  t.true(figure.activations >= figure.migrations.length, `${figure.activations} activations`);
  t.true(figure.watchFailovers >= 2, `the watch moved ${figure.watchFailovers} times (two replica kills)`);
  t.true(figure.replicaStarts >= 2, `the supervisor started killed replicas again (${figure.replicaStarts})`);
  t.is(figure.catchUps.length, 1, "the killed member was started again");
  for (const c of figure.catchUps) {
    t.not(c.caughtUpMs, undefined, `${c.member} caught up`);
    t.is(c.behindBy, 0, `${c.member} applied its peers' revision`);
  }
  t.log(
    `lag p50 ${figure.lag.p50Ms} ms, p95 ${figure.lag.p95Ms} ms, longest ${figure.longestInterruptionMs} ms (without a fault: ${figure.longestWithoutFaultMs} ms); watch moved at most ${figure.longestWatchMoveMs} ms after its replica's death, down ${figure.watchDownMs} ms; catch-up ${figure.catchUps.map((c) => `${c.member} ${c.caughtUpMs} ms after ${c.downForMs} ms down`).join(", ")}`,
  );
});

// Root-only: a short fault soak (xenroam-lab soak) — every fault once, each followed by a clean migration —
// leaves no leak, and the VM never paused or unreachable at its HoA once things settled; the soak's lab is gone.
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "ava";
import { FAULTS, labDown, leakLines, netnsList, runSoak, soakTable } from "@xenroam/lab";

test("a soak with every fault once: 0 leaks, never paused or unreachable once settled, the lab removed", async (t) => {
  t.timeout(600_000);
  const name = `k${randomBytes(2).toString("hex")}`;
  const stateRoot = mkdtempSync(join(tmpdir(), "xr-soak-"));
  t.teardown(async () => {
    await labDown(name, { stateRoot, force: true }).catch(() => {});
    rmSync(stateRoot, { recursive: true, force: true });
  });
  const result = await runSoak({
    migrations: FAULTS.length * 2 + 1,
    faults: FAULTS,
    name,
    stateRoot,
    progress: (line) => t.log(line),
  });
  t.log(`\n${soakTable(result.rows)}\n${leakLines(result.leaks).join("\n")}`);
  for (const m of result.migrations) {
    if (m.injected) t.true(m.injected.ok, `${m.fault} was injected (${m.injected.detail})`);
    t.false(m.pausedAfter, `migration ${m.index} (${m.fault}) left the VM paused`);
    t.true(m.hoaReachable && m.cnReachable, `migration ${m.index} (${m.fault}) left the VM unreachable`);
  }
  const total = result.rows.find((r) => r.fault === "total");
  t.is(total?.leaks, 0, "no leak remains");
  t.is(total?.migrations, 13);
  // Clean migrations complete with the method; so does a migration after each fault's.
  for (const m of result.migrations.filter((x) => x.fault === "none"))
    t.is(m.method, "dual-interface", `clean migration ${m.index} used the method`);
  t.false(result.final.paused);
  t.true(result.final.hoaReachable && result.final.cnReachable);
  t.false(existsSync(join(stateRoot, name)), "the soak took its lab down");
  t.deepEqual(
    (await netnsList()).filter((n) => n.startsWith(`${name}-`)),
    [],
  );
});

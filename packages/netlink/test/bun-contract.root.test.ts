// Root-only: the Netlink contract (contract.ts) under Bun, through bun-native.ts (the netlink package's socket over
// libc via bun:ffi, which xenroam's Bun builds use in place of the addon), against the real kernel: the same 24
// cases FakeNetlink (contract.test.ts) and the addon under Node (contract.root.test.ts) pass. The runner is
// bundled as the guest agent is (scripts/bun-bundle.mjs --rtnetlink ffi) and run by the Bun the agent ships with.
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import test from "ava";
import { CONTRACT } from "./contract.js";

const repo = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "..");
const BUN = join(repo, "node_modules", "@oven", "bun-linux-x64-baseline", "bin", "bun");
const run = promisify(execFile);

const results = (async () => {
  const dir = mkdtempSync(join(tmpdir(), "xr-bun-contract-"));
  try {
    const bundle = join(dir, "runner.mjs");
    const runner = join(repo, "packages", "netlink", "dist", "test", "bun-contract-runner.js");
    await run(BUN, [join(repo, "scripts", "bun-bundle.mjs"), runner, bundle, "--rtnetlink", "ffi"]);
    const { stdout } = await run(BUN, [bundle], { timeout: 120_000 });
    const byTitle = new Map<string, string[]>();
    for (const line of stdout.split("\n").filter(Boolean)) {
      const r = JSON.parse(line) as { title: string; failures: string[] };
      byTitle.set(r.title, r.failures);
    }
    return byTitle;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
})();

for (const c of CONTRACT) {
  test(`under Bun: ${c.title}`, async (t) => {
    const failures = (await results).get(c.title);
    t.truthy(failures, "the runner reported this case");
    t.deepEqual(failures, [], (failures ?? []).join("\n"));
  });
}

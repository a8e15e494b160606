// Root-only: the Netlink contract (contract.ts) against the real kernel; contract.test.ts runs it on FakeNetlink.
// scripts/test-root.sh runs this inside a fresh network namespace (unshare -n); every link a case makes and every
// named namespace it asks for is removed in teardown.
import test from "ava";
import { createNetlink } from "../src/index.js";
import { CONTRACT, kernelFixture } from "./contract.js";

for (const c of CONTRACT) {
  test(c.title, async (t) => {
    const { fixture, cleanup } = kernelFixture(createNetlink(), "x");
    t.teardown(cleanup);
    await c.run(t, fixture);
  });
}

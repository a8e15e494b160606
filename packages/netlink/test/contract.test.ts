// The Netlink contract (contract.ts) against FakeNetlink; contract.root.test.ts runs the same cases on the kernel.
import test from "ava";
import { FakeNetlink } from "../src/index.js";
import { CONTRACT } from "./contract.js";

for (const c of CONTRACT) {
  test(c.title, async (t) => {
    const nl = new FakeNetlink();
    t.teardown(() => nl.close());
    await c.run(t, { nl, name: (stem) => stem, otherNetns: async () => ({ name: "elsewhere" }) });
  });
}

// Root-only: the Netlink contract (contract.ts) against the real kernel; contract.test.ts runs it on FakeNetlink.
// scripts/test-root.sh runs this inside a fresh network namespace (unshare -n); every link a case makes and every
// named namespace it asks for is removed in teardown.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import test from "ava";
import { createNetlink } from "../src/index.js";
import { CONTRACT } from "./contract.js";

for (const c of CONTRACT) {
  test(c.title, async (t) => {
    const nl = createNetlink();
    const id = randomBytes(2).toString("hex");
    const names: string[] = [];
    const namespaces: string[] = [];
    t.teardown(async () => {
      for (const n of names) if (await nl.link(n)) await nl.deleteLink(n).catch(() => {});
      nl.close();
      for (const ns of namespaces) execFileSync("ip", ["netns", "del", ns]);
    });
    await c.run(t, {
      nl,
      name: (stem) => {
        const n = `x${stem}${id}`;
        names.push(n);
        return n;
      },
      otherNetns: async () => {
        const ns = `xrc-${id}-${namespaces.length}`;
        execFileSync("ip", ["netns", "add", ns]);
        namespaces.push(ns);
        return { name: ns };
      },
    });
  });
}

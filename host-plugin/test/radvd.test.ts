// The radvd adapter's files: nothing stays when radvd cannot start.
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "ava";
import { createRadvdControl } from "../src/adapters/radvd.js";

test("a radvd that cannot start leaves no config, pid file or log behind, and says why", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "xr-radvd-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const radvd = createRadvdControl(dir, join(dir, "no-such-radvd"));
  await t.throwsAsync(radvd.start("xr-b", "interface xr-b { AdvSendAdvert on; };\n"), { message: /ENOENT/ });
  t.deepEqual(readdirSync(dir), []);
});

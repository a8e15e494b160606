// Step 3's contract, for every toolstack adapter: when the migrated VM first runs, its vifs are already
// attached swapped (the secondary on the real bridge, the old primary parked). A swap that lands after resume
// cuts the guest off — its agent moves to the new primary while that one is still on an isolated bridge — so
// it must never be possible. Each fake records the bridges at its unpause the way the real toolstack orders
// it: fixtures/fake-xl.mjs (libxl plugs the vifs while it builds the domain, before xl's "ready"),
// support/fake-xapi.ts (xenopsd plugs them before the memory copy and unpauses before vm-post-migrate).
// The lab toolstack's order is checked by test/lab/restore.root.test.ts against real namespaces; the lab's XAPI
// (xenopsd's order, with xenroam's real hooks and the real xen-api client) by test/lab/xapi.root.test.ts.
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import test from "ava";
import { XenstoreServer } from "@xenroam/xenstore";
import { connectXapi, XapiToolstack } from "../src/adapters/xapi.js";
import { XlToolstack } from "../src/adapters/xl.js";
import { FakeXapi, poolA, poolB } from "./support/fake-xapi.js";

const SWAPPED = { 0: "xrpark0", 1: "xenbr0" };
const AS_STRINGS = { "0": "xrpark0", "1": "xenbr0" };
const ARRIVED = JSON.stringify({ v: 1, id: "m1", host: "hostb" });
const FAKE_XL = fileURLToPath(new URL("../../test/fixtures/fake-xl.mjs", import.meta.url));
const MAIN = fileURLToPath(new URL("../src/main.js", import.meta.url));

test.serial("xl: the vifs run swapped from the first instant", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "xr-swap-"));
  mkdirSync(join(dir, "bin"));
  writeFileSync(join(dir, "bin", "xl"), `#!/bin/sh\nexec "${process.execPath}" "${FAKE_XL}" "$@"\n`);
  chmodSync(join(dir, "bin", "xl"), 0o755);
  writeFileSync(
    join(dir, "web1.cfg"),
    "name = \"web1\"\nvif = [ 'mac=00:16:3e:00:00:10,bridge=xenbr0', 'mac=00:16:3e:00:01:10,bridge=xrpark0' ]\n",
  );
  const nics = [
    { devid: 0, mac: "00:16:3e:00:00:10", bridge: "xenbr0" },
    { devid: 1, mac: "00:16:3e:00:01:10", bridge: "xrpark0" },
  ];
  writeFileSync(
    join(dir, "list-web1.json"),
    JSON.stringify([{ domid: 5, config: { c_info: { name: "web1" }, nics } }]),
  );
  const xs = new XenstoreServer();
  await xs.listen(join(dir, "xs.sock"), { domid: 0 });
  const saved = { xl: process.env.XENROAM_XL };
  process.env.XENROAM_XL = join(dir, "bin", "xl");
  process.env.FAKE_XL_DIR = dir;
  process.env.FAKE_XL_XENSTORE = join(dir, "xs.sock");
  process.env.FAKE_XL_XENSTORE_MODULE = import.meta.resolve("@xenroam/xenstore");
  t.teardown(async () => {
    if (saved.xl === undefined) delete process.env.XENROAM_XL;
    else process.env.XENROAM_XL = saved.xl;
    delete process.env.FAKE_XL_XENSTORE;
    await xs.close();
    rmSync(dir, { recursive: true, force: true });
  });
  await new XlToolstack({
    configPath: join(dir, "{vm}.cfg"),
    transport: "env XENROAM_FAKE_DEST={host}",
    remoteXenroam: `${process.execPath} ${MAIN} --xenstore ${join(dir, "xs.sock")} --state-dir ${dir} --parking-bridge lo`,
    stateDir: dir,
  }).migrate("web1", "hostb", { migrationId: "m1", bridges: SWAPPED, guestWrites: { arrived: ARRIVED } });
  const unpause = readFileSync(join(dir, "log.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as { event?: string; bridges?: Record<string, string> })
    .find((c) => c.event === "unpause");
  t.deepEqual(unpause?.bridges, AS_STRINGS);
});

test("XAPI across pools: the vif_map has the vifs swapped when the VM is unpaused", async (t) => {
  const a = await new FakeXapi(poolA()).start();
  const b = await new FakeXapi(poolB()).start();
  const local = await connectXapi(a.url, "root", "secret");
  t.teardown(async () => (await local.close(), await a.stop(), await b.stop()));
  await new XapiToolstack({ local, remote: () => connectXapi(b.url, "root", "secret") }).migrate(
    "web1",
    "hostb",
    { migrationId: "m1", bridges: SWAPPED, guestWrites: { arrived: ARRIVED } },
  );
  t.deepEqual(a.bridgesAtUnpause(b.pool), AS_STRINGS);
});

test("XAPI inside a pool: the only swap there is comes after resume, so the method is refused", async (t) => {
  const a = await new FakeXapi(poolA()).start();
  const local = await connectXapi(a.url, "root", "secret");
  t.teardown(async () => (await local.close(), await a.stop()));
  const toolstack = new XapiToolstack({ local });
  t.truthy(await toolstack.methodRefusal("web1", "hosta2"));
  // What the adapter used to do — pool_migrate, then VIF.move from the post-migrate hook — is what this
  // contract exists to catch: at the unpause the vifs were still where they were.
  await local.call("VM.pool_migrate", "OpaqueRef:vm", "OpaqueRef:ha2", { live: "true" });
  await local.call("VIF.move", "OpaqueRef:vif0", "OpaqueRef:n-park");
  await local.call("VIF.move", "OpaqueRef:vif1", "OpaqueRef:n-real");
  t.notDeepEqual(a.bridgesAtUnpause(), AS_STRINGS);
  t.deepEqual(a.bridgesAtUnpause(), { "0": "xenbr0", "1": "xrpark0" });
});

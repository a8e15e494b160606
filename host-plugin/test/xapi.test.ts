// The XAPI adapter with the real `xen-api` client against the in-repo fake XAPI (JSON-RPC): across pools
// VM.migrate_send with a swapping vif_map and no VIF.move; inside a pool the method is refused, a plain
// VM.pool_migrate leaves every VIF where it is.
import test from "ava";
import { connectXapi, OTHER_CONFIG, XapiAdapterError, XapiToolstack } from "../src/adapters/xapi.js";
import { FakeXapi, poolA, poolB } from "./support/fake-xapi.js";

const SWAP = { 0: "xrpark0", 1: "xenbr0" };
const ARRIVED = JSON.stringify({ v: 1, id: "m1", host: "hostb" });

async function pools() {
  const a = await new FakeXapi(poolA()).start();
  const b = await new FakeXapi(poolB()).start();
  const local = await connectXapi(a.url, "root", "secret");
  return { a, b, local, close: async () => (await local.close(), await a.stop(), await b.stop()) };
}

test("domain(): the VM's domid, host and VIFs (devid, MAC, Dom0 name, bridge) through the xen-api client", async (t) => {
  const { local, close } = await pools();
  t.teardown(close);
  const d = await new XapiToolstack({ local }).domain("web1");
  t.like(d, { vm: "web1", domid: 5, host: "hosta" });
  t.deepEqual(
    d.vifs.map((v) => [v.devid, v.mac, v.ifname, v.bridge]),
    [
      [0, "00:16:3e:00:00:10", "vif5.0", "xenbr0"],
      [1, "00:16:3e:00:01:10", "vif5.1", "xrpark0"],
    ],
  );
  await t.throwsAsync(new XapiToolstack({ local }).domain("nope"), { message: /no VM named nope/ });
  await t.throwsAsync(connectXapi(`http://127.0.0.1:1`, "root", "secret"), { instanceOf: XapiAdapterError });
});

test("inside a pool: the method is refused before anything moves; a plain VM.pool_migrate keeps the VIFs", async (t) => {
  const { a, local, close } = await pools();
  t.teardown(close);
  const toolstack = new XapiToolstack({ local });
  t.regex((await toolstack.methodRefusal("web1", "hosta2")) ?? "", /inside one XAPI pool/);
  t.is(await toolstack.methodRefusal("web1", "hostb"), undefined, "another pool: the vif_map swaps");
  await t.throwsAsync(
    toolstack.migrate("web1", "hosta2", {
      migrationId: "m1",
      bridges: SWAP,
      guestWrites: { arrived: ARRIVED },
    }),
    { instanceOf: XapiAdapterError, message: /not with the method: inside one XAPI pool/ },
  );
  t.false(a.sequence().some((m) => m === "VM.pool_migrate" || m === "VIF.move"));
  t.deepEqual(a.pool.vms["OpaqueRef:vm"]?.other_config, {}, "nothing of xenroam set on the VM");

  const phases: string[] = [];
  const info = await toolstack.migrate("web1", "hosta2", {
    migrationId: "m2",
    bridges: { 0: "xenbr0", 1: "xrpark0" },
    mark: (p) => phases.push(p),
  });
  t.false(a.sequence().includes("VIF.move"));
  t.like(info, { host: "hosta2", domid: 6 });
  t.deepEqual(
    info.vifs.map((v) => v.bridge),
    ["xenbr0", "xrpark0"],
  );
  t.deepEqual(phases, ["pool-migrate", "running-on-destination"]);
});

test("across pools: VM.migrate_send with a vif_map that swaps the networks, no VIF.move", async (t) => {
  const { a, b, local, close } = await pools();
  t.teardown(close);
  await new XapiToolstack({ local, remote: () => connectXapi(b.url, "root", "secret") }).migrate(
    "web1",
    "hostb",
    {
      migrationId: "m2",
      bridges: SWAP,
      guestWrites: { arrived: ARRIVED },
    },
  );
  const send = a.calls.find((c) => c.method === "VM.migrate_send");
  t.truthy(send, "VM.migrate_send was called");
  const [vm, token, live, vdiMap, vifMap] = send?.args ?? [];
  t.is(vm, "OpaqueRef:vm");
  t.like(token, { session_id: "OpaqueRef:dest-session" });
  t.is(live, true);
  t.deepEqual(vdiMap, {});
  t.deepEqual(vifMap, { "OpaqueRef:vif0": "OpaqueRef:b-park", "OpaqueRef:vif1": "OpaqueRef:b-real" });
  t.true(a.sequence().indexOf("VM.assert_can_migrate") < a.sequence().indexOf("VM.migrate_send"));
  t.deepEqual(b.sequence().filter((m) => m === "host.migrate_receive").length, 1);
  t.false([...a.sequence(), ...b.sequence()].includes("VIF.move"), "vif_map does the swap across pools");
  t.is(
    a.pool.vms["OpaqueRef:vm"]?.other_config[OTHER_CONFIG.migration],
    "m2",
    "the keys travel with the VM for the destination's post-migrate hook",
  );
});

test("a destination outside the pool without --xapi-remote is refused before anything moves", async (t) => {
  const { a, local, close } = await pools();
  t.teardown(close);
  await t.throwsAsync(
    new XapiToolstack({ local }).migrate("web1", "hostb", { migrationId: "m3", bridges: SWAP }),
    {
      message: /not in this pool; give the destination pool with --xapi-remote/,
    },
  );
  t.false(a.sequence().some((m) => m.startsWith("VM.pool_migrate") || m === "VM.migrate_send"));
  t.deepEqual(a.pool.vms["OpaqueRef:vm"]?.other_config, {}, "and nothing was set on the VM");
});

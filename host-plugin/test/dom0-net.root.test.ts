// Root-only: the XAPI host's Dom0 commands (adapters/dom0-net.ts) against the real kernel and iproute2, on a
// Linux bridge as XAPI's networkd makes one for an internal network with the bridge backend (brctl addbr,
// no MAC, no IPv6: ocaml/networkd/bin/network_server.ml 1088-1254) — then XAPI staging's `ensure` and `remove`
// on it, through the fake XAPI and the real xen-api client. (The Open vSwitch backend's ovs-vsctl call is not
// run here: this kernel has no openvswitch module.)
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import test from "ava";
import { parseSites } from "@xenroam/protocol";
import { createDom0Net } from "../src/adapters/dom0-net.js";
import { connectXapi } from "../src/adapters/xapi.js";
import { XapiStaging } from "../src/adapters/xapi-staging.js";
import { FakeXapi, poolA } from "./support/fake-xapi.js";

const ip = (...args: string[]) => execFileSync("ip", args, { encoding: "utf8" });
// Not /sys/class/net: these tests run in a network namespace of their own, and sysfs shows the mount's.
const macOf = (link: string) =>
  (JSON.parse(ip("-j", "link", "show", "dev", link)) as Array<{ address: string }>)[0]?.address;

test("Dom0 commands on a real bridge: MAC, sysctls, up, the gateway's link-local added, listed and removed", async (t) => {
  const br = `xrt${randomBytes(2).toString("hex")}`;
  ip("link", "add", "name", br, "type", "bridge");
  t.teardown(() => void ip("link", "del", br));
  const dom0 = createDom0Net();
  await dom0.setBridgeMac(br, "02:00:00:00:0b:01", "bridge");
  await dom0.writeSysctl(br, "addr_gen_mode", 1);
  await dom0.writeSysctl(br, "accept_dad", 0);
  await dom0.up(br);
  t.is(macOf(br), "02:00:00:00:0b:01");
  t.deepEqual(await dom0.addresses(br), [], "addr_gen_mode 1: no link-local of its own");
  await dom0.addAddress(br, "fe80::b:1/64");
  t.deepEqual(await dom0.addresses(br), ["fe80::b:1"]);
  await t.throwsAsync(dom0.addAddress(br, "fe80::b:1/64"), { message: /ip -6 addr add fe80::b:1\/64/ });
  await dom0.deleteAddress(br, "fe80::b:1/64");
  t.deepEqual(await dom0.addresses(br), []);
  await t.throwsAsync(dom0.up(`${br}x`), { message: /ip link set dev/ });
});

test("XAPI staging on a real Linux bridge: the gateway's MAC and link-local on, then the link-local off", async (t) => {
  const site = parseSites({
    sites: [
      { name: "a", prefix: "2001:db8:a::/64", gateway: { linkLocal: "fe80::a:1", mac: "02:00:00:00:0a:01" } },
      {
        name: "rb",
        prefix: "2001:db8:b::/64",
        gateway: { linkLocal: "fe80::b:1", mac: "02:00:00:00:0b:01" },
      },
    ],
    hosts: [
      { name: "hosta", site: "a" },
      { name: "hostb", site: "rb" },
    ],
  }).siteOfHost("hostb");
  const xapi = await new FakeXapi(poolA()).start();
  const local = await connectXapi(xapi.url, "root", "secret");
  // networkd's bridge for the internal network, as network.attach would have it made on this host.
  ip("link", "add", "name", "xr-rb", "type", "bridge");
  t.teardown(async () => {
    ip("link", "del", "xr-rb");
    await local.close();
    await xapi.stop();
  });
  const dom0 = { ...createDom0Net(), backend: async () => "bridge" as const };
  const staging = new XapiStaging({ xapi: local, host: "hosta", parking: "xrpark0", dom0 });
  t.deepEqual(await staging.ensure(site), { bridge: "xr-rb", created: true });
  t.is(macOf("xr-rb"), "02:00:00:00:0b:01");
  t.regex(ip("-6", "addr", "show", "dev", "xr-rb"), /inet6 fe80::b:1\/64 scope link/);
  t.regex(ip("link", "show", "dev", "xr-rb"), /state (UP|UNKNOWN|DOWN)/);
  t.deepEqual(await staging.ensure(site), { bridge: "xr-rb", created: false }, "idempotent");
  await staging.remove("rb", "xr-rb");
  t.notRegex(ip("-6", "addr", "show", "dev", "xr-rb"), /fe80::b:1/);
});

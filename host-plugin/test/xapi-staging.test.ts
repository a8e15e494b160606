// XAPI staging with the real `xen-api` client against the fake XAPI: the staging network is a XAPI internal
// network on bridge xr-<site>, made once; XAPI moves the secondary VIF there and back (VIF.move); Dom0 gets the
// gateway's MAC the way its backend keeps it, and the gateway's link-local.
import { mkdtempSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "ava";
import { parseSites } from "@xenroam/protocol";
import { connectXapi } from "../src/adapters/xapi.js";
import { createDom0Net, parseIfInet6, parseNetworkBackend } from "../src/adapters/dom0-net.js";
import {
  type Dom0Net,
  ensureParkingNetwork,
  STAGING_OTHER_CONFIG,
  XapiStaging,
} from "../src/adapters/xapi-staging.js";
import { FakeXapi, poolA } from "./support/fake-xapi.js";

const site = parseSites({
  sites: [
    { name: "a", prefix: "2001:db8:a::/64", gateway: { linkLocal: "fe80::a:1", mac: "02:00:00:00:0a:01" } },
    { name: "b", prefix: "2001:db8:b::/64", gateway: { linkLocal: "fe80::b:1", mac: "02:00:00:00:0b:01" } },
  ],
  hosts: [
    { name: "hosta", site: "a" },
    { name: "hostb", site: "b" },
  ],
}).siteOfHost("hostb");

/** A Dom0 that records what it is asked, with its addresses in memory. */
function fakeDom0(backend: "openvswitch" | "bridge" = "openvswitch") {
  const did: string[] = [];
  const addrs = new Map<string, string[]>();
  const dom0: Dom0Net = {
    backend: async () => backend,
    setBridgeMac: async (br, mac, b) => void did.push(`mac ${br} ${mac} ${b}`),
    writeSysctl: async (i, k, v) => void did.push(`sysctl ${i}.${k}=${v}`),
    up: async (i) => void did.push(`up ${i}`),
    addresses: async (i) => addrs.get(i) ?? [],
    addAddress: async (i, cidr) => {
      did.push(`addr add ${cidr} ${i}`);
      addrs.set(i, [...(addrs.get(i) ?? []), cidr.split("/")[0] as string]);
    },
    deleteAddress: async (i, cidr) => {
      did.push(`addr del ${cidr} ${i}`);
      addrs.set(
        i,
        (addrs.get(i) ?? []).filter((a) => a !== cidr.split("/")[0]),
      );
    },
  };
  return { dom0, did, addrs };
}

async function rig() {
  const xapi = await new FakeXapi(poolA()).start();
  const local = await connectXapi(xapi.url, "root", "secret");
  const { dom0, did } = fakeDom0();
  const staging = new XapiStaging({ xapi: local, host: "hosta", parking: "xrpark0", dom0 });
  return { xapi, staging, did, close: async () => (await local.close(), await xapi.stop()) };
}

const SECONDARY = { devid: 1, mac: "00:16:3e:00:01:10", ifname: "vif5.1", bridge: "xrpark0" };

test("ensure: one internal network per site on bridge xr-<site>, attached here, with the gateway's identity", async (t) => {
  const { xapi, staging, did, close } = await rig();
  t.teardown(close);
  t.deepEqual(await staging.ensure(site), { bridge: "xr-b", created: true });
  const nets = Object.values(xapi.pool.networks).filter((n) => n.bridge === "xr-b");
  t.is(nets.length, 1);
  t.like(nets[0], {
    other_config: { [STAGING_OTHER_CONFIG]: "b", assume_network_is_shared: "true" },
    attached: ["OpaqueRef:ha"],
  });
  t.deepEqual(did, [
    "sysctl xr-b.addr_gen_mode=1",
    "sysctl xr-b.accept_dad=0",
    "sysctl xr-b.accept_ra=0",
    "sysctl xr-b.disable_ipv6=0",
    "mac xr-b 02:00:00:00:0b:01 openvswitch",
    "up xr-b",
    "addr add fe80::b:1/64 xr-b",
  ]);
  // Again (XAPI may have remade the bridge): the same network, the identity re-applied, no second address.
  did.length = 0;
  t.deepEqual(await staging.ensure(site), { bridge: "xr-b", created: false });
  t.is(Object.values(xapi.pool.networks).filter((n) => n.bridge === "xr-b").length, 1);
  t.false(did.some((d) => d.startsWith("addr add")));
  t.true(did.includes("mac xr-b 02:00:00:00:0b:01 openvswitch"));
});

test("ensure: a link-local of the bridge's own goes (the guest must hear RAs from the gateway's only)", async (t) => {
  const xapi = await new FakeXapi(poolA()).start();
  const local = await connectXapi(xapi.url, "root", "secret");
  t.teardown(async () => (await local.close(), await xapi.stop()));
  const { dom0, did, addrs } = fakeDom0("bridge");
  addrs.set("xr-b", ["fe80::ff:fe00:1", "fe80::b:1"]);
  const staging = new XapiStaging({ xapi: local, host: "hosta", parking: "xrpark0", dom0 });
  await staging.ensure(site);
  t.deepEqual(addrs.get("xr-b"), ["fe80::b:1"]);
  t.deepEqual(
    did.filter((d) => d.startsWith("addr") || d.startsWith("mac")),
    ["mac xr-b 02:00:00:00:0b:01 bridge", "addr del fe80::ff:fe00:1/64 xr-b"],
  );
});

test("attach and detach move the secondary VIF through XAPI (VIF.move), never the primary", async (t) => {
  const { xapi, staging, close } = await rig();
  t.teardown(close);
  await staging.ensure(site);
  await staging.attach(site, "web1", SECONDARY);
  const bridgeOf = (vif: string) => xapi.pool.networks[xapi.pool.vifs[vif]?.network ?? ""]?.bridge;
  t.is(bridgeOf("OpaqueRef:vif1"), "xr-b");
  t.is(bridgeOf("OpaqueRef:vif0"), "xenbr0");
  await staging.detach("web1", SECONDARY);
  t.is(bridgeOf("OpaqueRef:vif1"), "xrpark0");
  t.deepEqual(
    xapi.timeline.filter((e) => e.event === "vif-moved"),
    [
      { event: "vif-moved", device: "1", network: "OpaqueRef:net-2" },
      { event: "vif-moved", device: "1", network: "OpaqueRef:n-park" },
    ],
  );
  // A VM that has left the pool: nothing to move back.
  await staging.detach("gone", SECONDARY);
});

test("without a parking network the detach says which bridge it looked for", async (t) => {
  const xapi = await new FakeXapi(poolA()).start();
  const local = await connectXapi(xapi.url, "root", "secret");
  t.teardown(async () => (await local.close(), await xapi.stop()));
  const staging = new XapiStaging({ xapi: local, host: "hosta", parking: "nopark", dom0: fakeDom0().dom0 });
  await staging.ensure(site);
  await staging.attach(site, "web1", SECONDARY);
  await t.throwsAsync(staging.detach("web1", SECONDARY), { message: /no network on bridge nopark/ });
});

test("a host not in the pool is named in the error", async (t) => {
  const xapi = await new FakeXapi(poolA()).start();
  const local = await connectXapi(xapi.url, "root", "secret");
  t.teardown(async () => (await local.close(), await xapi.stop()));
  const staging = new XapiStaging({
    xapi: local,
    host: "elsewhere",
    parking: "xrpark0",
    dom0: fakeDom0().dom0,
  });
  await t.throwsAsync(staging.ensure(site), { message: /no host named elsewhere/ });
});

test("remove takes the gateway's link-local off the bridge and leaves XAPI's network", async (t) => {
  const { xapi, staging, did, close } = await rig();
  t.teardown(close);
  await staging.ensure(site);
  did.length = 0;
  await staging.remove("b", "xr-b");
  t.deepEqual(did, ["addr del fe80::b:1/64 xr-b"]);
  t.is(Object.values(xapi.pool.networks).filter((n) => n.bridge === "xr-b").length, 1);
});

test("network.conf: bridge means the Linux bridge; openvswitch, vswitch, junk or no file mean Open vSwitch", (t) => {
  t.is(parseNetworkBackend("bridge\n"), "bridge");
  t.is(parseNetworkBackend("openvswitch\n"), "openvswitch");
  t.is(parseNetworkBackend("vswitch"), "openvswitch");
  t.is(parseNetworkBackend("???"), "openvswitch");
  t.is(parseNetworkBackend(undefined), "openvswitch");
});

test("/proc/net/if_inet6 is read per interface, canonical", (t) => {
  const text = [
    "00000000000000000000000000000001 01 80 10 80       lo",
    "fe80000000000000000000000000b001 07 40 20 80     xr-b",
    "20010db8000b00000216 3eff",
    "20010db8000b000002163efffe000110 07 40 00 00     xr-b",
    "fe80000000000000000000000000b001 08 40 20 80   xr-bb",
  ].join("\n");
  t.deepEqual(parseIfInet6(text, "xr-b"), ["fe80::b001", "2001:db8:b:0:216:3eff:fe00:110"]);
  t.deepEqual(parseIfInet6(text, "xenbr0"), []);
});

test("Dom0 commands: OVS keeps the MAC in other-config:hwaddr, a Linux bridge takes it from ip; bad names refused", async (t) => {
  const root = mkdtempSync(join(tmpdir(), "xr-dom0-"));
  mkdirSync(join(root, "proc/sys/net/ipv6/conf/xr-b"), { recursive: true });
  mkdirSync(join(root, "etc/xensource"), { recursive: true });
  mkdirSync(join(root, "proc/net"), { recursive: true });
  writeFileSync(join(root, "proc/net/if_inet6"), "fe80000000000000000000000000b001 07 40 20 80 xr-b\n");
  const ran: string[] = [];
  const dom0 = createDom0Net({ root, run: async (f, a) => (ran.push(`${f} ${a.join(" ")}`), "") });
  t.is(await dom0.backend(), "openvswitch", "no network.conf: networkd's default");
  writeFileSync(join(root, "etc/xensource/network.conf"), "bridge\n");
  t.is(await dom0.backend(), "bridge");
  await dom0.setBridgeMac("xr-b", "02:00:00:00:0b:01", "openvswitch");
  await dom0.setBridgeMac("xr-b", "02:00:00:00:0b:01", "bridge");
  await dom0.writeSysctl("xr-b", "accept_ra", 0);
  t.is(readFileSync(join(root, "proc/sys/net/ipv6/conf/xr-b/accept_ra"), "utf8"), "0");
  await dom0.addAddress("xr-b", "fe80::b:1/64");
  t.deepEqual(await dom0.addresses("xr-b"), ["fe80::b001"]);
  t.deepEqual(ran, [
    'ovs-vsctl --timeout=30 set bridge xr-b other-config:hwaddr="02:00:00:00:0b:01"',
    "ip link set dev xr-b address 02:00:00:00:0b:01",
    "ip -6 addr add fe80::b:1/64 dev xr-b nodad",
  ]);
  await t.throwsAsync(dom0.up("xr-b; reboot"), { message: /not an interface name/ });
  await t.throwsAsync(dom0.setBridgeMac("xr-b", "nope", "bridge"), { message: /not a MAC/ });
  await t.throwsAsync(dom0.writeSysctl("nothere", "accept_ra", 0), { message: /net.ipv6.conf.nothere/ });
});

test("xapi-parking: the pool's parking network on xrpark0, made once, shared by every host", async (t) => {
  const pool = poolA();
  delete pool.networks["OpaqueRef:n-park"];
  const xapi = await new FakeXapi(pool).start();
  const local = await connectXapi(xapi.url, "root", "secret");
  t.teardown(async () => (await local.close(), await xapi.stop()));
  const first = await ensureParkingNetwork(local, "xrpark0");
  t.true(first.created);
  t.like(xapi.pool.networks[first.ref], {
    bridge: "xrpark0",
    other_config: { assume_network_is_shared: "true" },
  });
  const again = await ensureParkingNetwork(local, "xrpark0");
  t.deepEqual(again, { ...first, created: false });
  // xapi's own refusal of a reserved bridge name comes back as XAPI's error (the xen-api client's XapiError).
  const refused = (await ensureParkingNetwork(local, "xapi7").catch((e: unknown) => e)) as { code?: string };
  t.is(refused.code, "INVALID_VALUE");
});

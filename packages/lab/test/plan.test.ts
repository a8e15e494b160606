import { FakeNetlink } from "@xenroam/netlink";
import test from "ava";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  applyOps,
  claimDomid,
  DEFAULT_TOPOLOGY,
  type LabPlan,
  parseTopology,
  planLab,
  routerAddress,
  withVmCount,
} from "../src/index.js";

const plan = planLab(parseTopology(DEFAULT_TOPOLOGY));

async function effectsOf(node: string, links: string[]): Promise<string[]> {
  const ns = plan.namespaces.find((n) => n.node === node);
  if (!ns) throw new Error(node);
  const nl = new FakeNetlink(["lo", ...links]);
  await applyOps(nl, ns.ops);
  return nl.effects;
}

test("host A: xenbr0 with its uplink and the VM's primary vif, the secondary parked", async (t) => {
  t.deepEqual(await effectsOf("hosta", ["peth0", "vif5.0", "vif5.1"]), [
    "link set lo up",
    "link add xenbr0 mtu 1500 type bridge mcast_snooping 0",
    "link add xrpark0 mtu 1500 type bridge mcast_snooping 0",
    "sysctl -w net.ipv6.conf.xenbr0.accept_ra=0",
    "sysctl -w net.ipv6.conf.xrpark0.disable_ipv6=1",
    "sysctl -w net.ipv6.conf.peth0.disable_ipv6=1",
    "link set peth0 master xenbr0 up",
    "sysctl -w net.ipv6.conf.vif5.0.disable_ipv6=1",
    "link set vif5.0 master xenbr0 up",
    "sysctl -w net.ipv6.conf.vif5.1.disable_ipv6=1",
    "link set vif5.1 master xrpark0 up",
    "link set xenbr0 up",
    "link set xrpark0 up",
    "addr add 2001:db8:a::a/64 dev xenbr0 nodad",
    "route add default via fe80::a:1 dev xenbr0",
  ]);
});

test("router: one LAN bridge per segment carrying the gateway's link-local and MAC", async (t) => {
  const fx = await effectsOf("router", ["p-cn", "p-hosta", "p-hosta2", "p-hostb"]);
  t.true(fx.includes("link add lan-b address 02:00:00:00:0b:01 mtu 1500 type bridge mcast_snooping 0"));
  t.true(
    fx.includes("sysctl -w net.ipv6.conf.lan-b.addr_gen_mode=1"),
    "no EUI-64 link-local besides the gateway's",
  );
  t.true(fx.includes("addr add fe80::b:1/64 dev lan-b nodad"));
  t.true(fx.includes("addr add 2001:db8:b::1/64 dev lan-b nodad"));
  t.true(fx.includes("link set p-hostb master lan-b up"));
  t.true(fx.includes("link set p-hosta2 master lan-a up"));
  t.true(fx.includes("sysctl -w net.ipv6.conf.all.forwarding=1"));
  t.true(
    fx.indexOf("sysctl -w net.ipv6.conf.lan-a.addr_gen_mode=1") < fx.indexOf("link set lan-a up"),
    "address generation is off before the bridge comes up",
  );
});

test("veths: vif host ends carry Xen's fe:ff:ff:ff:ff:ff, guest ends the VM's MACs", (t) => {
  const vif1 = plan.veths.find((v) => v.name === "vif5.1");
  t.deepEqual(vif1, {
    name: "vif5.1",
    netns: "xr-hosta",
    mac: "fe:ff:ff:ff:ff:ff",
    peer: "eth1",
    peerNetns: "xr-vm",
    peerMac: "00:16:3e:00:00:02",
    mtu: 1500,
  });
  t.is(plan.vms[0]?.primary.expectedAddress, "2001:db8:a:0:216:3eff:fe00:1");
  t.is(routerAddress("2001:db8:b::/64"), "2001:db8:b::1");
});

test("radvd advertises every site from its gateway's link-local; a xenstored per host", (t) => {
  t.deepEqual(
    plan.radvd.interfaces.map((i) => [i.ifname, i.prefix, i.sourceLinkLocal]),
    [
      ["lan-a", "2001:db8:a::/64", "fe80::a:1"],
      ["lan-b", "2001:db8:b::/64", "fe80::b:1"],
    ],
  );
  t.deepEqual(
    plan.xenstored.map((x) => [x.host, x.guests.map((g) => g.domid)]),
    [
      ["hosta", [5]],
      ["hosta2", []],
      ["hostb", []],
    ],
  );
});

/** A namespace as `up` leaves it: its ends of the planned veths (made as labUp makes them), then its ops. */
async function namespaceOf(p: LabPlan, netns: string): Promise<FakeNetlink> {
  const nl = new FakeNetlink(["lo"]);
  for (const v of p.veths) {
    if (v.netns === netns) {
      const mac = v.mac ? { mac: v.mac } : {};
      await nl.createVeth(v.name, v.peer, { peerNetns: { name: v.peerNetns }, mtu: v.mtu, ...mac });
    }
    if (v.peerNetns === netns) {
      const mac = v.peerMac ? { mac: v.peerMac } : {};
      await nl.createVeth(v.peer, v.name, { peerNetns: { name: v.netns }, mtu: v.mtu, ...mac });
    }
  }
  await applyOps(nl, p.namespaces.find((n) => n.netns === netns)?.ops ?? []);
  return nl;
}

test("mtu 1280 reaches every link: the VM's interfaces, the vifs, every bridge once its ports have joined", async (t) => {
  const p = planLab(parseTopology({ ...DEFAULT_TOPOLOGY, mtu: 1280 }));
  const seen: string[] = [];
  const wrong: string[] = [];
  for (const n of p.namespaces) {
    for (const l of await (await namespaceOf(p, n.netns)).links()) {
      if (l.name === "lo") continue;
      seen.push(`${n.node}/${l.name}`);
      if (l.mtu !== 1280) wrong.push(`${n.node}/${l.name} has mtu ${l.mtu}`);
    }
  }
  t.deepEqual(wrong, []);
  for (const link of ["vm/eth0", "vm/eth1", "hosta/vif5.0", "hosta/xenbr0", "hostb/xrpark0", "router/lan-a"])
    t.true(seen.includes(link), link);
});

test("two VMs: each its namespace, vifs on its host, a guest socket in that host's xenstored", (t) => {
  const two = planLab(parseTopology(withVmCount(DEFAULT_TOPOLOGY, 2)));
  t.deepEqual(
    two.namespaces.filter((n) => n.role === "vm").map((n) => n.netns),
    ["xr-vm", "xr-vm2"],
  );
  t.deepEqual(
    two.veths
      .filter((v) => v.netns === "xr-hosta")
      .map((v) => `${v.name}>${v.peerNetns}/${v.peer} ${v.peerMac}`),
    [
      "vif5.0>xr-vm/eth0 00:16:3e:00:00:01",
      "vif5.1>xr-vm/eth1 00:16:3e:00:00:02",
      "vif6.0>xr-vm2/eth0 00:16:3e:00:02:01",
      "vif6.1>xr-vm2/eth1 00:16:3e:00:02:02",
    ],
  );
  t.deepEqual(two.xenstored.find((x) => x.host === "hosta")?.guests, [
    { domid: 5, socket: "xenbus-vm.sock" },
    { domid: 6, socket: "xenbus-vm2.sock" },
  ]);
  t.deepEqual(two.xenstored.find((x) => x.host === "hostb")?.guests, []);
  t.is(two.vms[1]?.primary.expectedAddress, "2001:db8:a:0:216:3eff:fe00:201");
  t.is(two.vms[1]?.xenstore["/local/domain/6/device/vif/1/mac"], "00:16:3e:00:02:02");
});

test("claimDomid: one domid to one claimant, never twice, across the lab", (t) => {
  const dir = mkdtempSync(join(tmpdir(), "xr-domid-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  t.is(claimDomid(dir, 5), 5);
  t.is(claimDomid(dir, 6), 6);
  t.is(claimDomid(dir, 5), 7);
  t.is(claimDomid(dir, 6), 8);
});

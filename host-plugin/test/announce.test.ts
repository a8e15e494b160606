import test from "ava";
import { FakeNetlink } from "@xenroam/netlink";
import {
  AnnounceError,
  announceLinks,
  announceLocator,
  planAnnounce,
  prepareAnnouncement,
  sendAnnouncement,
  withdrawAnnouncement,
} from "../src/announce.js";

const GUEST = { bridge: "xenbr0", mac: "00:16:3E:00:00:11", moa: "2001:DB8:B:0:216:3eff:fe00:11" };
const noWait = async () => {};

test("the pair is named after the whole MAC: one per guest MAC, within the 15 characters of a name", (t) => {
  t.deepEqual(announceLinks(GUEST.mac), { inner: "xn00163e000011", outer: "xn00163e000011p" });
});

test("the plan: silent set-up (no link-local, RA or DAD), a port the bridge sends nothing, the MoA alone, up; then ndisc_notify and the guest's MAC; then the pair goes", async (t) => {
  const netlink = new FakeNetlink(["lo"]);
  netlink.seedLink("xenbr0", { kind: "bridge", up: true });
  const ms = await announceLocator(netlink, GUEST, noWait);
  t.true(ms >= 0);
  t.deepEqual(netlink.effects, [
    "link add xn00163e000011 address 00:16:3e:00:00:11 type veth peer name xn00163e000011p",
    "sysctl -w net.ipv6.conf.xn00163e000011.addr_gen_mode=1",
    "sysctl -w net.ipv6.conf.xn00163e000011.accept_ra=0",
    "sysctl -w net.ipv6.conf.xn00163e000011.accept_dad=0",
    "link set xn00163e000011p master xenbr0",
    "link set dev xn00163e000011p type bridge_slave learning off flood off mcast_flood off bcast_flood off",
    "link set xn00163e000011p up",
    "addr add 2001:db8:b:0:216:3eff:fe00:11/128 dev xn00163e000011 nodad noprefixroute",
    "link set xn00163e000011 up",
    "sysctl -w net.ipv6.conf.xn00163e000011.ndisc_notify=1",
    "link set xn00163e000011 address 00:16:3e:00:00:11",
    "link del xn00163e000011",
  ]);
  t.deepEqual(
    (await netlink.links()).map((l) => l.name),
    ["lo", "xenbr0"],
    "nothing left behind",
  );
});

test("a pair left by a crash is removed first; a failure midway still removes the pair", async (t) => {
  const netlink = new FakeNetlink(["lo"]);
  netlink.seedLink("xenbr0", { kind: "bridge", up: true });
  netlink.seedLink("xn00163e000011", { kind: "veth" });
  await announceLocator(netlink, GUEST, noWait);
  t.is(netlink.effects[0], "link del xn00163e000011");

  const failing = new FakeNetlink(["lo"]);
  failing.seedLink("xenbr0", { kind: "bridge", up: true });
  const original = failing.setLink.bind(failing);
  failing.setLink = async (name, change) => {
    if (change.mac) throw new Error("EBUSY");
    return original(name, change);
  };
  await t.throwsAsync(announceLocator(failing, GUEST, noWait), { message: "EBUSY" });
  t.deepEqual(
    (await failing.links()).map((l) => l.name),
    ["lo", "xenbr0"],
  );
});

test("no bridge, no announcement; bad input is refused before anything is made", async (t) => {
  const netlink = new FakeNetlink(["lo"]);
  await t.throwsAsync(announceLocator(netlink, GUEST, noWait), {
    instanceOf: AnnounceError,
    message: /no bridge xenbr0/,
  });
  t.deepEqual(netlink.effects, []);
  t.throws(() => planAnnounce({ ...GUEST, mac: "00:16:3e:00:11" }), { instanceOf: AnnounceError });
  t.throws(() => planAnnounce({ ...GUEST, moa: "2001:db8:b::zz" }), { instanceOf: AnnounceError });
});

test("prepared early, sent later: what is left to do when it counts is the MAC; withdraw is idempotent", async (t) => {
  const netlink = new FakeNetlink(["lo"]);
  netlink.seedLink("xenbr0", { kind: "bridge", up: true });
  await prepareAnnouncement(netlink, GUEST, noWait);
  t.deepEqual(
    (await netlink.links()).map((l) => l.name),
    ["lo", "xenbr0", "xn00163e000011", "xn00163e000011p"],
  );
  t.is(
    netlink.effects.at(-1),
    "sysctl -w net.ipv6.conf.xn00163e000011.ndisc_notify=1",
    "armed last, once up",
  );
  const before = netlink.effects.length;
  await sendAnnouncement(netlink, GUEST);
  t.deepEqual(netlink.effects.slice(before), ["link set xn00163e000011 address 00:16:3e:00:00:11"]);
  await withdrawAnnouncement(netlink, GUEST);
  t.is(netlink.effects.at(-1), "link del xn00163e000011");
  await withdrawAnnouncement(netlink, GUEST);
  t.is(netlink.effects.length, before + 2, "nothing left to withdraw: nothing done");
  await prepareAnnouncement(netlink, GUEST, noWait);
  await withdrawAnnouncement(netlink, GUEST);
  t.deepEqual(
    (await netlink.links()).map((l) => l.name),
    ["lo", "xenbr0"],
    "a prepared pair never sent is withdrawn",
  );
});

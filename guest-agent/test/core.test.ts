import test from "ava";
import { encodeMessage } from "@xenroam/protocol";
import { guestNetlink, MemoryChannel, request } from "./support.js";
import { Agent } from "../src/index.js";

const MOA = "2001:db8:b:0:216:3eff:fe00:2";

function guest() {
  const netlink = guestNetlink();
  const channel = new MemoryChannel();
  const events: string[] = [];
  const agent = new Agent({ netlink, channel, log: (e) => events.push(e) });
  // SLAAC: the staging bridge's RA gives eth1 its MoA shortly after it comes up.
  const slaac = () => setTimeout(() => netlink.seedAddress("eth1", `${MOA}/64`), 5);
  return { netlink, channel, agent, events, slaac };
}

/** A guest that has done step 2 for `request`, with its effects so far cleared. */
async function prepared() {
  const g = guest();
  g.channel.keys.set("request", encodeMessage(request));
  g.slaac();
  await g.agent.converge("test");
  g.netlink.effects.length = 0;
  return g;
}

test("step 2: the secondary comes up with SLAAC only, a standby route, and the MoA is answered", async (t) => {
  const g = guest();
  g.channel.keys.set("request", encodeMessage(request));
  g.slaac();
  await g.agent.converge("test");
  t.deepEqual(g.netlink.effects, [
    "sysctl -w net.ipv6.conf.eth1.disable_ipv6=0",
    "sysctl -w net.ipv6.conf.eth1.accept_ra=2",
    "sysctl -w net.ipv6.conf.eth1.autoconf=1",
    "sysctl -w net.ipv6.conf.eth1.accept_ra_pinfo=1",
    "sysctl -w net.ipv6.conf.eth1.accept_ra_defrtr=0",
    "sysctl -w net.ipv6.conf.eth1.accept_dad=0",
    "sysctl -w net.ipv6.conf.eth1.ignore_routes_with_linkdown=1",
    "sysctl -w net.ipv6.conf.eth1.router_solicitations=3",
    "sysctl -w net.ipv6.conf.eth1.router_solicitation_interval=1",
    "sysctl -w net.ipv6.conf.eth0.ignore_routes_with_linkdown=1",
    "link set eth1 up",
    "route add default via fe80::b:1 dev eth1 metric 2100",
  ]);
  t.deepEqual(g.channel.json("answer"), { v: 1, id: "m1", status: "prepared", moa: MOA, ifname: "eth1" });
  t.like(g.channel.json("status"), { phase: "prepared", id: "m1", primary: "eth0", secondary: "eth1" });
});

for (const [mode, moa] of [
  ["stable-privacy (addr_gen_mode 2)", "2001:db8:b:0:5e1:9a2c:7b30:44d1"],
  ["random (addr_gen_mode 3)", "2001:db8:b:0:a0b1:c2d3:e4f5:617"],
] as const) {
  test(`step 2, ${mode}: the MoA is the address the kernel made, not the EUI-64 one`, async (t) => {
    const g = guest();
    g.channel.keys.set("request", encodeMessage(request));
    setTimeout(() => g.netlink.seedAddress("eth1", `${moa}/64`), 5);
    await g.agent.converge("test");
    t.like(g.channel.json("answer"), { status: "prepared", moa, ifname: "eth1" });
  });
}

test("step 2 with temporary addresses on (use_tempaddr 2): a temporary address is never the MoA", async (t) => {
  const g = guest();
  g.channel.keys.set("request", encodeMessage(request));
  setTimeout(() => {
    // The kernel makes the temporary address right after the stable one; seen first here on purpose.
    g.netlink.seedAddress("eth1", "2001:db8:b:0:9c1e:2b77:d01:5a3f/64", { temporary: true });
    g.netlink.seedAddress("eth1", "2001:db8:c:0:216:3eff:fe00:2/64"); // another prefix: not this site's
    setTimeout(() => g.netlink.seedAddress("eth1", `${MOA}/64`), 5);
  }, 5);
  await g.agent.converge("test");
  t.like(g.channel.json("answer"), { status: "prepared", moa: MOA });
});

test("step 2 without an RA: the reason names the prefix and what the interface had", async (t) => {
  const g = guest();
  g.channel.keys.set("request", encodeMessage({ ...request, timeoutMs: 400 }));
  setTimeout(
    () => g.netlink.seedAddress("eth1", "2001:db8:b:0:9c1e:2b77:d01:5a3f/64", { temporary: true }),
    5,
  );
  await g.agent.converge("test");
  const answer = g.channel.json("answer") as { status: string; reason: string };
  t.is(answer.status, "error");
  t.regex(answer.reason, /2001:db8:b::\/64/);
  t.regex(answer.reason, /2001:db8:b:0:9c1e:2b77:d01:5a3f temporary/);
});

test("step 4: on arrival the old primary goes down first, then the routes move; applying again changes nothing", async (t) => {
  const g = await prepared();
  g.channel.keys.set("arrived", encodeMessage({ v: 1, id: "m1", host: "hostb" }));
  await g.agent.converge("xenstore");
  // Taking eth0 down removes its routes (the kernel's fib6_ifdown): nothing is left for the agent to delete.
  t.deepEqual(g.netlink.effects, [
    "link set eth0 down",
    "sysctl -w net.ipv6.conf.eth0.accept_ra_defrtr=0",
    "route add default via fe80::b:1 dev eth1 metric 64",
    "route del default dev eth1 metric 2100",
  ]);
  t.deepEqual(await g.netlink.routes({ dev: "eth0" }), [], "the old primary keeps no default route");
  t.like(g.channel.json("status"), { phase: "switched", id: "m1", primary: "eth1", secondary: "eth0" });
  g.netlink.effects.length = 0;
  await g.agent.converge("again");
  await new Agent({ netlink: g.netlink, channel: g.channel, log: () => {} }).converge("restarted agent");
  t.deepEqual(g.netlink.effects, [], "idempotent, also for a restarted agent");
});

test("step 4's first move: armed by the prepare, the old primary goes down before the rest of the pass", async (t) => {
  const g = await prepared();
  const order: string[] = [];
  const log = g.events;
  g.channel.keys.set("arrived", encodeMessage({ v: 1, id: "m1", host: "hostb" }));
  const read = g.channel.read.bind(g.channel);
  g.channel.read = async (key: string) => {
    order.push(`read ${key}${g.netlink.effects.length ? " (after the down)" : ""}`);
    return read(key);
  };
  await g.agent.converge("xenstore");
  t.deepEqual(order.slice(0, 3), ["read request", "read answer", "read arrived"], "one round trip before it");
  t.true(
    order.slice(3).every((r) => r.endsWith("(after the down)")),
    "every other read comes after",
  );
  t.is(g.netlink.effects[0], "link set eth0 down");
  t.is(g.netlink.effects.filter((e) => e === "link set eth0 down").length, 1, "set down once");
  t.true(log.indexOf("old_primary_down") >= 0 && log.indexOf("old_primary_down") < log.indexOf("switched"));
  t.like(g.channel.json("status"), { phase: "switched", id: "m1", primary: "eth1" });
});

test("armed, an abort of the migration wins over its arrival: the old primary stays up", async (t) => {
  const g = await prepared();
  g.channel.keys.set("arrived", encodeMessage({ v: 1, id: "m1", host: "hostb" }));
  g.channel.keys.set("request", encodeMessage({ v: 1, kind: "abort", id: "m1" }));
  await g.agent.converge("xenstore");
  t.false(g.netlink.effects.includes("link set eth0 down"));
  t.deepEqual(g.channel.json("answer"), { v: 1, id: "m1", status: "aborted" });
});

test("an abort written while the reflex waits for the new primary's carrier: the old primary comes up again", async (t) => {
  const g = await prepared();
  g.netlink.setCarrier("eth1", false);
  g.channel.keys.set("arrived", encodeMessage({ v: 1, id: "m1", host: "hostb" }));
  setTimeout(() => {
    g.channel.keys.set("request", encodeMessage({ v: 1, kind: "abort", id: "m1" }));
    g.netlink.setCarrier("eth1", true);
  }, 60);
  await g.agent.converge("xenstore");
  t.is(g.netlink.effects[0], "link set eth0 down");
  t.true(g.netlink.effects.includes("link set eth0 up"), "not left with both interfaces down");
  t.true((await g.netlink.link("eth0"))?.up);
  t.deepEqual(g.channel.json("answer"), { v: 1, id: "m1", status: "aborted" });
  t.true(g.events.includes("old_primary_restored"));
});

test("an arrival the reflex took but the schema refuses: no switch, and the old primary comes up again", async (t) => {
  const g = await prepared();
  g.channel.keys.set("arrived", JSON.stringify({ v: 1, id: "m1" })); // no host: not an arrival
  await g.agent.converge("xenstore");
  t.deepEqual(g.netlink.effects, ["link set eth0 down", "link set eth0 up"]);
  t.like(g.channel.json("status"), { phase: "prepared", id: "m1" });
});

test("an arrival for another migration is ignored", async (t) => {
  const g = await prepared();
  g.channel.keys.set("arrived", encodeMessage({ v: 1, id: "other", host: "hostb" }));
  await g.agent.converge("xenstore");
  t.deepEqual(g.netlink.effects, []);
});

test("refusals carry a reason: wrong MAC, malformed request, no RA in time", async (t) => {
  const wrongMac = guest();
  wrongMac.channel.keys.set("request", encodeMessage({ ...request, secondaryMac: "00:16:3e:00:00:99" }));
  await wrongMac.agent.converge("test");
  t.like(wrongMac.channel.json("answer"), { status: "error", id: "m1" });
  t.regex(String(wrongMac.channel.json("answer")?.reason), /no interface has MAC 00:16:3e:00:00:99/);

  const malformed = guest();
  malformed.channel.keys.set("request", '{"v":1,"kind":"prepare"}');
  await malformed.agent.converge("test");
  t.like(malformed.channel.json("answer"), { status: "error", id: "invalid" });
  t.regex(String(malformed.channel.json("answer")?.reason), /request is malformed/);
  t.deepEqual(malformed.netlink.effects, [], "nothing touched");

  const noRa = guest();
  noRa.channel.keys.set("request", encodeMessage({ ...request, timeoutMs: 800 }));
  const asked = Date.now();
  await noRa.agent.converge("test");
  t.like(noRa.channel.json("answer"), { status: "error" });
  t.true(Date.now() - asked < 800 - 100, "the reason is answered before Dom0's deadline");
  t.regex(String(noRa.channel.json("answer")?.reason), /ETIMEDOUT/);
  t.false((await noRa.netlink.link("eth1"))?.up, "a failed prepare leaves the secondary down again");
  t.deepEqual(await noRa.netlink.routes({ dev: "eth1" }), [], "and without the standby route");
  t.like(noRa.channel.json("status"), { phase: "error", secondary: "eth1" }, "an abort can find it");
});

test("abort takes the secondary down again and says so", async (t) => {
  const g = await prepared();
  g.channel.keys.set("request", encodeMessage({ v: 1, kind: "abort", id: "m1" }));
  await g.agent.converge("xenstore");
  // Down, eth1 loses its standby route with it (the kernel's fib6_ifdown); a staged MTU goes back to the link's.
  t.deepEqual(g.netlink.effects, ["link set eth1 down", "sysctl -w net.ipv6.conf.eth1.mtu=1500"]);
  t.deepEqual(await g.netlink.routes({ dev: "eth1" }), [], "without the standby route");
  t.deepEqual(g.channel.json("answer"), { v: 1, id: "m1", status: "aborted" });
  t.like(g.channel.json("status"), { phase: "idle", primary: "eth0" });
});

test("a leftover default route with the standby metric on another interface is removed, not fatal (EEXIST)", async (t) => {
  const g = guest();
  // What a kernel can leave behind: our standby metric on the interface that is primary now.
  g.netlink.seedRoute({
    dst: "default",
    dev: "eth0",
    gateway: "fe80::a:1",
    metric: 2100,
    table: 254,
    protocol: "static",
  });
  g.channel.keys.set("request", encodeMessage(request));
  g.slaac();
  await g.agent.converge("test");
  t.like(g.channel.json("answer"), { status: "prepared" });
  t.true(g.events.includes("route_clash"));
  const del = g.netlink.effects.indexOf("route del default via fe80::a:1 dev eth0 metric 2100");
  const add = g.netlink.effects.indexOf("route add default via fe80::b:1 dev eth1 metric 2100");
  t.true(del >= 0 && add > del, g.netlink.effects.join("\n"));
});

test("the reflex's wait for the new primary's carrier ends with the link event, not the next look", async (t) => {
  const g = await prepared();
  g.netlink.setCarrier("eth1", false);
  g.channel.keys.set("arrived", encodeMessage({ v: 1, id: "m1", host: "hostb" }));
  setTimeout(() => {
    g.netlink.setCarrier("eth1", true);
    void g.netlink.link("eth1").then((l) => l && g.agent.linkChanged(l));
  }, 30);
  const started = Date.now();
  await g.agent.converge("xenstore");
  t.true(Date.now() - started < 200, `woken at once (${Date.now() - started} ms), not at the 250 ms look`);
  t.like(g.channel.json("status"), { phase: "switched", id: "m1", primary: "eth1" });
});

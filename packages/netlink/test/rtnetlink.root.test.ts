// Root-only: the real Netlink port against the real kernel. scripts/test-root.sh runs this inside a fresh
// network namespace (unshare -n); named namespaces made here are removed in teardown.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import test from "ava";
import { createNetlink, isNetlinkError, type NetEvent, NetlinkError } from "../src/index.js";

const uniq = () => randomBytes(3).toString("hex");
const ip = (...args: string[]) => execFileSync("ip", args, { encoding: "utf8" });
const ipJson = (...args: string[]) => JSON.parse(ip("-j", ...args) || "[]") as Array<Record<string, unknown>>;

function withNetns(t: { teardown(fn: () => void): void }): string {
  const name = `xrt-${uniq()}`;
  ip("netns", "add", name);
  t.teardown(() => ip("netns", "del", name));
  return name;
}

test("bridge, veth, master, MAC and a move to another namespace", async (t) => {
  const nl = createNetlink();
  t.teardown(() => nl.close());
  const id = uniq();
  const br = `xbr${id}`;
  const [a, b] = [`xva${id}`, `xvb${id}`];
  await nl.createBridge(br, { mac: "02:00:00:00:0b:01", multicastSnooping: false });
  await nl.createVeth(a, b);
  t.teardown(async () => {
    for (const n of [a, br]) if (await nl.link(n)) await nl.deleteLink(n);
  });
  await nl.setLink(a, { master: br, up: true, mtu: 1400, mac: "02:00:00:00:aa:01" });
  const bridge = await nl.link(br);
  const port = await nl.link(a);
  t.is(bridge?.kind, "bridge");
  t.is(bridge?.mac, "02:00:00:00:0b:01");
  t.is(port?.kind, "veth");
  t.is(port?.master, bridge?.index);
  t.is(port?.mac, "02:00:00:00:aa:01");
  t.is(port?.mtu, 1400);
  t.true(port?.up);
  t.is(ip("-j", "-d", "link", "show", br).includes('"mcast_snooping":0'), true);

  const ns = withNetns(t);
  await nl.setLink(b, { netns: { name: ns }, name: "vif7.1" });
  t.is(await nl.link(b), undefined, "moved away from this namespace");
  const there = ipJson("-n", ns, "link", "show", "vif7.1");
  t.is(there[0]?.ifname, "vif7.1", "present in the target namespace under its new name");

  await nl.setLink(a, { master: null, up: false });
  t.is((await nl.link(a))?.master, undefined);
  t.false((await nl.link(a))?.up);
});

test("veth created straight into two namespaces", async (t) => {
  const nl = createNetlink();
  t.teardown(() => nl.close());
  const [ns1, ns2] = [withNetns(t), withNetns(t)];
  await nl.createVeth("left0", "right0", {
    netns: { name: ns1 },
    peerNetns: { name: ns2 },
    peerMac: "02:00:00:00:00:22",
  });
  t.is(ipJson("-n", ns1, "link", "show", "left0")[0]?.ifname, "left0");
  const right = ipJson("-n", ns2, "link", "show", "right0")[0];
  t.is(right?.address, "02:00:00:00:00:22");
  t.is(await nl.link("left0"), undefined);
});

test("an address reaches non-tentative state, observed through RTM_NEWADDR events", async (t) => {
  const nl = createNetlink();
  t.teardown(() => nl.close());
  const id = uniq();
  const [a, b] = [`xda${id}`, `xdb${id}`];
  await nl.createVeth(a, b);
  t.teardown(() => nl.deleteLink(a));
  await nl.setLink(b, { up: true });
  await nl.setLink(a, { up: true });

  const seen: NetEvent[] = [];
  const ac = new AbortController();
  const collecting = (async () => {
    for await (const ev of nl.events({ signal: ac.signal })) seen.push(ev);
  })();
  await new Promise((r) => setTimeout(r, 50));

  const started = Date.now();
  await nl.addAddress(a, "2001:db8:1::1/64");
  const ready = await nl.waitAddress(a, "2001:db8:1::1", { timeoutMs: 10_000 });
  const waited = Date.now() - started;
  // The collector has its own socket; give it until 2 s to receive the same notification.
  for (
    let i = 0;
    i < 40 &&
    !seen.some((e) => e.type === "address" && !e.address.tentative && e.address.address === "2001:db8:1::1");
    i++
  ) {
    await new Promise((r) => setTimeout(r, 50));
  }
  ac.abort();
  await collecting;

  t.false(ready.tentative);
  t.is(ready.address, "2001:db8:1::1");
  t.is(ready.prefixLength, 64);
  t.true(waited > 200, `DAD takes time (waited ${waited} ms)`);
  const mine = seen.filter(
    (e): e is Extract<NetEvent, { type: "address" }> =>
      e.type === "address" && e.address.address === "2001:db8:1::1",
  );
  t.true(mine.length >= 2, "saw the address at least twice");
  t.true(mine[0]?.address.tentative, "first as tentative");
  t.false(mine.at(-1)?.address.tentative, "then without the tentative flag");
  const listed = await nl.addresses(a);
  t.true(listed.some((x) => x.address === "2001:db8:1::1" && !x.tentative && x.scope === "global"));

  await nl.deleteAddress(a, "2001:db8:1::1/64");
  t.false((await nl.addresses(a)).some((x) => x.address === "2001:db8:1::1"));
});

test("waitAddress times out with a typed error", async (t) => {
  const nl = createNetlink();
  t.teardown(() => nl.close());
  const id = uniq();
  await nl.createBridge(`xwt${id}`);
  t.teardown(() => nl.deleteLink(`xwt${id}`));
  const err = await t.throwsAsync(nl.waitAddress(`xwt${id}`, "2001:db8:2::1", { timeoutMs: 200 }));
  t.true(isNetlinkError(err, "ETIMEDOUT"));
});

test("a route with metric and table, listed and deleted", async (t) => {
  const nl = createNetlink();
  t.teardown(() => nl.close());
  const id = uniq();
  const dev = `xrt${id}`;
  await nl.createBridge(dev);
  t.teardown(() => nl.deleteLink(dev));
  await nl.setLink(dev, { up: true });
  const route = { dst: "2001:db8:99::/64", gateway: "fe80::1", dev, metric: 777, table: 100 };
  await nl.addRoute(route);
  await nl.addRoute({ dst: "default", gateway: "fe80::b:1", dev, metric: 5 });
  const inTable = await nl.routes({ table: 100 });
  t.deepEqual(
    inTable.find((r) => r.dst === "2001:db8:99::/64"),
    { dst: "2001:db8:99::/64", dev, gateway: "fe80::1", metric: 777, table: 100, protocol: "static" },
  );
  t.true(ip("-6", "route", "show", "table", "100").includes("2001:db8:99::/64 via fe80::1"));
  const main = await nl.routes({ dev });
  t.truthy(main.find((r) => r.dst === "default" && r.metric === 5 && r.gateway === "fe80::b:1"));
  const dup = await t.throwsAsync(nl.addRoute(route));
  t.true(isNetlinkError(dup, "EEXIST"));
  // A preferred source (the guest agent's home address): it must be local, and it is listed back.
  await nl.addAddress(dev, "2001:db8:f::5/128", { nodad: true });
  const withSrc = { dst: "2001:db8:77::/64", gateway: "fe80::1", dev, metric: 9, prefsrc: "2001:db8:f::5" };
  await nl.addRoute(withSrc);
  t.like(
    (await nl.routes({ dev })).find((r) => r.dst === "2001:db8:77::/64"),
    { prefsrc: "2001:db8:f::5" },
  );
  t.regex(ip("-6", "route", "show", "dev", dev), /2001:db8:77::\/64 via fe80::1 .*src 2001:db8:f::5/);
  await nl.deleteRoute(withSrc);
  await nl.deleteRoute(route);
  t.false((await nl.routes({ table: 100 })).some((r) => r.dst === "2001:db8:99::/64"));
});

test("creating an existing link fails with a typed EEXIST", async (t) => {
  const nl = createNetlink();
  t.teardown(() => nl.close());
  const name = `xee${uniq()}`;
  await nl.createBridge(name);
  t.teardown(() => nl.deleteLink(name));
  const err = await t.throwsAsync(nl.createBridge(name));
  t.true(err instanceof NetlinkError);
  const e = err as NetlinkError;
  t.is(e.code, "EEXIST");
  t.is(e.errno, 17);
  t.is(e.operation, "create bridge");
  t.is(e.ifname, name);
  const missing = await t.throwsAsync(nl.setLink("xnosuchlink0", { up: true }));
  t.true(isNetlinkError(missing, "ENODEV"));
});

test("sysctl per interface, neighbours and their flush, bridge port isolation", async (t) => {
  const nl = createNetlink();
  t.teardown(() => nl.close());
  const id = uniq();
  const [br, a, b] = [`xnb${id}`, `xna${id}`, `xnp${id}`];
  const ns = withNetns(t);
  await nl.createBridge(br);
  await nl.createVeth(a, b, { peerNetns: { name: ns } });
  t.teardown(async () => {
    for (const n of [a, br]) if (await nl.link(n)) await nl.deleteLink(n);
  });
  await nl.writeSysctl(a, "accept_ra", 2);
  t.is(await nl.readSysctl(a, "accept_ra"), "2");
  await t.throwsAsync(nl.readSysctl("xnosuch0", "accept_ra"), { instanceOf: NetlinkError });

  await nl.setLink(a, { master: br, up: true });
  await nl.setBridgePort(a, { isolated: true });
  t.true(JSON.stringify(ipJson("-d", "link", "show", a)).includes('"isolated":true'));
  await nl.setLink(br, { up: true });
  await nl.addAddress(br, "2001:db8:5::1/64", { nodad: true });
  ip("-n", ns, "link", "set", b, "up");
  ip("-n", ns, "addr", "add", "2001:db8:5::2/64", "dev", b, "nodad");
  execFileSync("ping", ["-6", "-c", "1", "-W", "3", "2001:db8:5::2"]);
  const before = await nl.neighbours(br);
  t.true(before.some((n) => n.address === "2001:db8:5::2" && n.mac !== undefined && n.state !== "none"));
  await nl.flushNeighbours(br);
  const after = await nl.neighbours(br);
  t.false(after.some((n) => n.address === "2001:db8:5::2" && n.state !== "failed"));
});

test("many requests at once on one socket: dumps and changes interleaved, none cut short or refused", async (t) => {
  // Before requests were queued one at a time, two links() at once failed here: the kernel's EBUSY for the
  // second dump, and "Multipart message not terminated properly" for the first (its reply cut by the EBUSY).
  const nl = createNetlink();
  t.teardown(() => nl.close());
  const id = uniq();
  const names = Array.from({ length: 20 }, (_, i) => `xd${id}${i}`);
  t.teardown(async () => {
    for (const n of names) if (await nl.link(n)) await nl.deleteLink(n);
  });
  const results = await Promise.all([
    ...names.map(async (n) => {
      await nl.createBridge(n);
      // A dump right after one's own change sees the change, even when it joins a dump under way.
      return (await nl.links()).some((l) => l.name === n);
    }),
    ...Array.from({ length: 20 }, async () => (await nl.addresses()).length >= 0),
    // Different dumps cannot share: these would be one dump each, at once, on one socket.
    ...Array.from({ length: 20 }, async () => (await nl.routes()).length >= 0),
    ...Array.from({ length: 20 }, async () => (await nl.neighbours()).length >= 0),
  ]);
  t.true(results.every(Boolean));
  t.is((await nl.links()).filter((l) => names.includes(l.name)).length, names.length);
});

// The Netlink contract: one set of cases that FakeNetlink (contract.test.ts) and the real kernel
// (contract.root.test.ts) both pass, so that tests written against the fake hold on the kernel xenroam runs on.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import type { ExecutionContext } from "ava";
import { isNetlinkError, type LinkInfo, type Netlink, type NetnsRef, type RouteInfo } from "../src/index.js";

export interface ContractFixture {
  /** A Netlink in a namespace with nothing but what the case makes. */
  readonly nl: Netlink;
  /** A link name of this case only (a short stem; the kernel run makes it unique and removes it afterwards). */
  readonly name: (stem: string) => string;
  /** Another network namespace, to move links into. */
  readonly otherNetns: () => Promise<NetnsRef>;
}

/**
 * The fixture on the real kernel (contract.root.test.ts under Node, bun-contract-runner.ts under Bun): link
 * names unique to the case (prefix + stem + a random id), named namespaces made with ip; `cleanup` removes both
 * and closes the Netlink.
 */
export function kernelFixture(
  nl: Netlink,
  prefix: string,
): { fixture: ContractFixture; cleanup: () => Promise<void> } {
  const id = randomBytes(2).toString("hex");
  const names: string[] = [];
  const namespaces: string[] = [];
  return {
    fixture: {
      nl,
      name: (stem) => {
        const n = `${prefix}${stem}${id}`;
        names.push(n);
        return n;
      },
      otherNetns: async () => {
        const ns = `xr${prefix}-${id}-${namespaces.length}`;
        execFileSync("ip", ["netns", "add", ns]);
        namespaces.push(ns);
        return { name: ns };
      },
    },
    cleanup: async () => {
      for (const n of names)
        if (await nl.link(n).catch(() => undefined)) await nl.deleteLink(n).catch(() => {});
      nl.close();
      for (const ns of namespaces) execFileSync("ip", ["netns", "del", ns]);
    },
  };
}

export interface ContractCase {
  readonly title: string;
  run(t: ExecutionContext, f: ContractFixture): Promise<void>;
}

async function linkOf(nl: Netlink, name: string): Promise<LinkInfo> {
  const l = await nl.link(name);
  if (!l) throw new Error(`${name} does not exist`);
  return l;
}
const carrierOf = async (nl: Netlink, name: string) => (await linkOf(nl, name)).carrier;

/**
 * A bridge's carrier as it settles. The kernel updates it asynchronously: a port's carrier change reaches the
 * bridge as NETDEV_CHANGE from the linkwatch work (net/core/link_watch.c: linkwatch_fire_event queues the event,
 * linkwatch_do_dev calls netdev_state_change; a non-urgent event waits up to one second, an urgent one a
 * workqueue's turn), and br_device_event -> br_port_carrier_check recomputes the bridge's carrier there
 * (net/bridge/br.c, br_stp_if.c). So the bridge's state is read until it equals `expected` or 2 s have passed,
 * and the last reading is returned: the fake settles at once, the kernel within the linkwatch delay.
 */
async function bridgeCarrierSettles(nl: Netlink, name: string, expected: boolean): Promise<boolean> {
  const deadline = Date.now() + 2000;
  for (;;) {
    const carrier = await carrierOf(nl, name);
    if (carrier === expected || Date.now() >= deadline) return carrier;
    await new Promise((r) => setTimeout(r, 20));
  }
}
const mtuOf = async (nl: Netlink, name: string) => (await linkOf(nl, name)).mtu;

async function fails(t: ExecutionContext, pending: Promise<unknown>, code: string, what: string) {
  const err = await t.throwsAsync(pending, undefined, what);
  t.true(isNetlinkError(err, code), `${what}: ${code}, got ${String(err)}`);
}

/** A veth pair; with `up`, both ends up (so both have a carrier). */
async function veth(f: ContractFixture, stem: string, up = false): Promise<[string, string]> {
  const [a, b] = [f.name(`${stem}a`), f.name(`${stem}b`)];
  await f.nl.createVeth(a, b);
  if (up) {
    await f.nl.setLink(b, { up: true });
    await f.nl.setLink(a, { up: true });
  }
  return [a, b];
}

/** The routes a case added (the kernel adds its own: fe80::/64 and prefix routes, protocol "kernel"). */
const staticRoutes = async (nl: Netlink, filter: { table?: number; dev: string }) =>
  (await nl.routes(filter))
    .filter((r) => r.protocol === "static")
    .map((r: RouteInfo) => `${r.dst} via ${r.gateway ?? "-"} metric ${r.metric}`);

const globalAddresses = async (nl: Netlink, name: string) =>
  (await nl.addresses(name)).filter((a) => a.scope === "global").map((a) => a.address);

export const CONTRACT: readonly ContractCase[] = [
  {
    title: "a bridge made without a MAC has a carrier until its first port; then only while a port has one",
    async run(t, f) {
      const { nl, name } = f;
      const br = name("br");
      await nl.createBridge(br);
      t.false(await bridgeCarrierSettles(nl, br, false), "down: no carrier");
      await nl.setLink(br, { up: true });
      t.true(
        await bridgeCarrierSettles(nl, br, true),
        "up and never had a port: carrier (operstate UNKNOWN)",
      );
      const [a, b] = await veth(f, "p");
      await nl.setLink(a, { master: br });
      t.false(await bridgeCarrierSettles(nl, br, false), "a port without carrier: none");
      await nl.setLink(a, { up: true });
      t.false(await bridgeCarrierSettles(nl, br, false), "the port is up but its peer is down");
      await nl.setLink(b, { up: true });
      t.true(await carrierOf(nl, a));
      t.true(await bridgeCarrierSettles(nl, br, true), "a port with carrier gives the bridge one");
      await nl.setLink(b, { up: false });
      t.false(await bridgeCarrierSettles(nl, br, false), "the port lost its carrier");
      await nl.setLink(b, { up: true });
      t.true(await bridgeCarrierSettles(nl, br, true));
      await nl.setLink(a, { master: null });
      t.false(await bridgeCarrierSettles(nl, br, false), "its last port gone, a bridge has no carrier");
      await nl.setLink(br, { up: false });
      await nl.setLink(br, { up: true });
      t.false(await bridgeCarrierSettles(nl, br, false), "not even after down and up");
    },
  },
  {
    title: "a bridge made with a MAC has no carrier until a port has one",
    async run(t, f) {
      const { nl, name } = f;
      const br = name("br");
      await nl.createBridge(br, { mac: "02:00:00:00:0b:01", multicastSnooping: false });
      await nl.setLink(br, { up: true });
      t.false(await bridgeCarrierSettles(nl, br, false), "up without ports: no carrier");
      const [a] = await veth(f, "p", true);
      await nl.setLink(a, { master: br });
      t.true(await bridgeCarrierSettles(nl, br, true), "a port with carrier joined");
      await nl.setLink(br, { up: false });
      t.false(await bridgeCarrierSettles(nl, br, false), "down: no carrier");
      await nl.setLink(br, { up: true });
      t.true(await bridgeCarrierSettles(nl, br, true), "up again with its port");
    },
  },
  {
    title: "operationally up follows the carrier once linkwatch took it in; never without a carrier",
    async run(t, f) {
      const { nl } = f;
      const [a, b] = await veth(f, "o");
      await nl.setLink(a, { up: true });
      t.false((await linkOf(nl, a)).operUp, "peer down: not operationally up");
      await nl.setLink(b, { up: true });
      // Asynchronous in the kernel (linkwatch); an urgent event (a queue to activate), so milliseconds.
      const deadline = Date.now() + 2000;
      while (!(await linkOf(nl, a)).operUp && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 5));
      t.true((await linkOf(nl, a)).operUp);
      t.true((await linkOf(nl, a)).carrier);
      await nl.setLink(b, { up: false });
      t.false((await linkOf(nl, b)).operUp, "down: never operationally up");
    },
  },
  {
    title: "a veth end has a carrier only while both ends are up",
    async run(t, f) {
      const { nl } = f;
      const [a, b] = await veth(f, "v");
      await nl.setLink(a, { up: true });
      t.true((await linkOf(nl, a)).up);
      t.false(await carrierOf(nl, a), "peer down: no carrier");
      await nl.setLink(b, { up: true });
      t.true(await carrierOf(nl, a));
      t.true(await carrierOf(nl, b));
      await nl.setLink(a, { up: false });
      t.false(await carrierOf(nl, b), "peer down again");
      t.false(await carrierOf(nl, a), "a link that is down has no carrier");
    },
  },
  {
    title:
      "taking a link down removes its routes in every table and its addresses; up does not bring them back",
    async run(t, f) {
      const { nl } = f;
      const [a] = await veth(f, "d", true);
      await nl.addAddress(a, "2001:db8:1::1/64", { nodad: true });
      await nl.addRoute({ dst: "default", gateway: "fe80::1", dev: a, metric: 100 });
      await nl.addRoute({ dst: "2001:db8:99::/64", gateway: "fe80::1", dev: a, metric: 7, table: 100 });
      t.deepEqual(await staticRoutes(nl, { dev: a }), ["default via fe80::1 metric 100"]);
      t.deepEqual(await staticRoutes(nl, { dev: a, table: 100 }), ["2001:db8:99::/64 via fe80::1 metric 7"]);
      await nl.setLink(a, { up: false });
      t.deepEqual(await staticRoutes(nl, { dev: a }), [], "main table");
      t.deepEqual(await staticRoutes(nl, { dev: a, table: 100 }), [], "table 100");
      t.deepEqual(await globalAddresses(nl, a), [], "addresses (keep_addr_on_down is 0)");
      await nl.setLink(a, { up: true });
      t.deepEqual(await staticRoutes(nl, { dev: a }), []);
      t.deepEqual(await globalAddresses(nl, a), []);
    },
  },
  {
    title:
      "with keep_addr_on_down a link keeps its global addresses across down, not its link-local ones or routes",
    async run(t, f) {
      const { nl } = f;
      const [a] = await veth(f, "k", true);
      await nl.writeSysctl(a, "keep_addr_on_down", 1);
      await nl.addAddress(a, "fe80::b:1/64", { nodad: true });
      await nl.addAddress(a, "2001:db8:1::1/64", { nodad: true });
      await nl.addRoute({ dst: "default", gateway: "fe80::1", dev: a, metric: 100 });
      await nl.setLink(a, { up: false });
      const left = (await nl.addresses(a)).map((x) => x.address);
      t.true(left.includes("2001:db8:1::1"), "the global address stays");
      t.false(left.includes("fe80::b:1"), "a link-local address goes, even one added by hand");
      t.deepEqual(await staticRoutes(nl, { dev: a }), [], "routes go");
    },
  },
  {
    title: "losing the carrier keeps a link's routes and addresses",
    async run(t, f) {
      const { nl } = f;
      const [a, b] = await veth(f, "c", true);
      await nl.addAddress(a, "2001:db8:1::1/64", { nodad: true });
      await nl.addRoute({ dst: "default", gateway: "fe80::1", dev: a, metric: 100 });
      await nl.setLink(b, { up: false });
      t.false(await carrierOf(nl, a));
      t.deepEqual(await staticRoutes(nl, { dev: a }), ["default via fe80::1 metric 100"]);
      t.deepEqual(await globalAddresses(nl, a), ["2001:db8:1::1"]);
      // A link up without carrier still takes new routes (the kernel marks them linkdown).
      await nl.addRoute({ dst: "2001:db8:5::/64", gateway: "fe80::1", dev: a, metric: 5 });
      t.is((await staticRoutes(nl, { dev: a })).length, 2);
    },
  },
  {
    title: "a route through a link that is down is refused with ENETDOWN",
    async run(t, f) {
      const [a] = await veth(f, "n");
      await fails(
        t,
        f.nl.addRoute({ dst: "default", gateway: "fe80::1", dev: a, metric: 100 }),
        "ENETDOWN",
        "add",
      );
    },
  },
  {
    title: "a second default route with the same metric is refused with EEXIST, even on another link",
    async run(t, f) {
      const { nl } = f;
      const [a] = await veth(f, "e", true);
      const [c] = await veth(f, "f", true);
      await nl.addRoute({ dst: "default", gateway: "fe80::1", dev: a, metric: 100 });
      await fails(
        t,
        nl.addRoute({ dst: "default", gateway: "fe80::1", dev: a, metric: 100 }),
        "EEXIST",
        "again",
      );
      await fails(
        t,
        nl.addRoute({ dst: "default", gateway: "fe80::2", dev: a, metric: 100 }),
        "EEXIST",
        "via another gateway",
      );
      await fails(
        t,
        nl.addRoute({ dst: "default", gateway: "fe80::2", dev: c, metric: 100 }),
        "EEXIST",
        "on another link",
      );
      await nl.addRoute({ dst: "default", gateway: "fe80::2", dev: c, metric: 101 });
      await nl.addRoute({ dst: "default", gateway: "fe80::2", dev: c, metric: 100, table: 100 });
      t.deepEqual(await staticRoutes(nl, { dev: c }), ["default via fe80::2 metric 101"]);
      t.deepEqual(await staticRoutes(nl, { dev: c, table: 100 }), ["default via fe80::2 metric 100"]);
    },
  },
  {
    title: "deleting a route that is not there fails with ESRCH",
    async run(t, f) {
      const { nl } = f;
      const [a] = await veth(f, "s", true);
      await fails(t, nl.deleteRoute({ dst: "2001:db8:77::/64", dev: a, metric: 5 }), "ESRCH", "never added");
      await nl.addRoute({ dst: "default", gateway: "fe80::1", dev: a, metric: 100 });
      await fails(t, nl.deleteRoute({ dst: "default", dev: a, metric: 101 }), "ESRCH", "another metric");
      await fails(
        t,
        nl.deleteRoute({ dst: "default", dev: a, metric: 100, gateway: "fe80::9" }),
        "ESRCH",
        "another gateway",
      );
      await nl.deleteRoute({ dst: "default", dev: a, metric: 100 });
      t.deepEqual(await staticRoutes(nl, { dev: a }), []);
      await fails(t, nl.deleteRoute({ dst: "default", dev: a, metric: 100 }), "ESRCH", "deleted twice");
    },
  },
  {
    title: "a preferred source must be a local address (EINVAL)",
    async run(t, f) {
      const { nl } = f;
      const [a] = await veth(f, "r", true);
      const route = {
        dst: "2001:db8:77::/64",
        gateway: "fe80::1",
        dev: a,
        metric: 9,
        prefsrc: "2001:db8:f::5",
      };
      await fails(t, nl.addRoute(route), "EINVAL", "not local");
      await nl.addAddress(a, "2001:db8:f::5/128", { nodad: true });
      await nl.addRoute(route);
      t.is((await nl.routes({ dev: a })).find((r) => r.dst === "2001:db8:77::/64")?.prefsrc, "2001:db8:f::5");
    },
  },
  {
    title:
      "MTU: set and read back per link; a veth made with an MTU has it at both ends; below 68 is refused",
    async run(t, f) {
      const { nl, name } = f;
      const [a, b] = [name("ma"), name("mb")];
      await nl.createVeth(a, b, { mtu: 1280 });
      t.is(await mtuOf(nl, a), 1280);
      t.is(await mtuOf(nl, b), 1280, "the peer too");
      await nl.setLink(a, { mtu: 1400 });
      t.is(await mtuOf(nl, a), 1400);
      t.is(await mtuOf(nl, b), 1280, "one end at a time");
      const [c] = await veth(f, "n");
      t.is(await mtuOf(nl, c), 1500, "Ethernet's by default");
      await fails(t, nl.setLink(c, { mtu: 60 }), "EINVAL", "mtu 60");
      const br = name("br");
      await nl.createBridge(br, { mtu: 1280 });
      t.is(await mtuOf(nl, br), 1280);
    },
  },
  {
    title: "a bridge's MTU follows the smallest of its ports' until it is set explicitly",
    async run(t, f) {
      const { nl, name } = f;
      const br = name("br");
      await nl.createBridge(br, { mtu: 1280 });
      const [a] = await veth(f, "p");
      await nl.setLink(a, { master: br });
      t.is(await mtuOf(nl, br), 1500, "an MTU given at creation is not kept once a 1500 port joins");
      await nl.setLink(a, { mtu: 1400 });
      t.is(await mtuOf(nl, br), 1400, "follows its port");
      const [c] = await veth(f, "q");
      await nl.setLink(c, { master: br });
      t.is(await mtuOf(nl, br), 1400, "the smallest port's");
      await nl.setLink(a, { master: null });
      await nl.setLink(c, { master: null });
      t.is(await mtuOf(nl, br), 1500, "without ports: 1500");
      await nl.setLink(br, { mtu: 1280 });
      await nl.setLink(a, { master: br });
      t.is(await mtuOf(nl, br), 1280, "set explicitly, it stays");
    },
  },
  {
    title:
      "master: set and released; only a bridge can be one, not of a bridge; deleting it releases its ports",
    async run(t, f) {
      const { nl, name } = f;
      const [br, br2] = [name("br"), name("bs")];
      await nl.createBridge(br);
      await nl.createBridge(br2);
      const [a, b] = await veth(f, "p");
      await nl.setLink(a, { master: br, up: true });
      t.is((await linkOf(nl, a)).master, (await linkOf(nl, br)).index);
      t.true((await linkOf(nl, a)).up);
      await nl.setLink(a, { master: br2 });
      t.is((await linkOf(nl, a)).master, (await linkOf(nl, br2)).index, "moved to another bridge");
      await nl.setLink(a, { master: null });
      t.is((await linkOf(nl, a)).master, undefined);
      await fails(t, nl.setLink(b, { master: a }), "ENOTSUP", "a veth as master");
      // "Can not enslave a bridge to a bridge": ELOOP in net/bridge/br_if.c br_add_if as long read, EINVAL from 6.18.
      const nested = await t.throwsAsync(nl.setLink(br2, { master: br }));
      t.true(
        isNetlinkError(nested, "EINVAL") || isNetlinkError(nested, "ELOOP"),
        `a bridge in a bridge: ${String(nested)}`,
      );
      await fails(t, nl.setLink(a, { master: name("none") }), "ENODEV", "a missing master");
      await nl.setLink(a, { master: br });
      await nl.deleteLink(br);
      t.is(await nl.link(br), undefined);
      t.is((await linkOf(nl, a)).master, undefined, "the port stays, released");
    },
  },
  {
    title: "deleting one end of a veth deletes both, with their routes and addresses",
    async run(t, f) {
      const { nl } = f;
      const [a, b] = await veth(f, "x", true);
      await nl.addAddress(b, "2001:db8:1::1/64", { nodad: true });
      await nl.addRoute({ dst: "default", gateway: "fe80::1", dev: b, metric: 100 });
      await nl.deleteLink(a);
      t.is(await nl.link(a), undefined);
      t.is(await nl.link(b), undefined);
      t.false((await nl.addresses()).some((x) => x.address === "2001:db8:1::1"));
      t.false((await nl.routes()).some((r) => r.dst === "default" && r.metric === 100));
    },
  },
  {
    title: "a link that exists cannot be made again (EEXIST); a missing one cannot be changed (ENODEV)",
    async run(t, f) {
      const { nl, name } = f;
      const br = name("br");
      await nl.createBridge(br);
      await fails(t, nl.createBridge(br), "EEXIST", "bridge again");
      const [a] = await veth(f, "v");
      await fails(t, nl.createVeth(a, name("vc")), "EEXIST", "veth over an existing name");
      const missing = name("no");
      t.is(await nl.link(missing), undefined);
      await fails(t, nl.setLink(missing, { up: true }), "ENODEV", "set");
      await fails(t, nl.deleteLink(missing), "ENODEV", "delete");
      await fails(t, nl.addAddress(missing, "2001:db8:1::1/64"), "ENODEV", "address");
      await fails(t, nl.addRoute({ dst: "default", gateway: "fe80::1", dev: missing }), "ENODEV", "route");
    },
  },
  {
    title: "addresses: a duplicate fails with EEXIST, deleting a missing one with EADDRNOTAVAIL",
    async run(t, f) {
      const { nl } = f;
      const [a] = await veth(f, "a", true);
      await nl.addAddress(a, "2001:db8:1::1/64", { nodad: true });
      await fails(t, nl.addAddress(a, "2001:db8:1::1/64", { nodad: true }), "EEXIST", "twice");
      const got = (await nl.addresses(a)).find((x) => x.address === "2001:db8:1::1");
      t.like(got, { family: 6, prefixLength: 64, scope: "global", permanent: true });
      await fails(t, nl.deleteAddress(a, "2001:db8:2::1/64"), "EADDRNOTAVAIL", "never added");
      await nl.deleteAddress(a, "2001:db8:1::1/64");
      t.deepEqual(await globalAddresses(nl, a), []);
    },
  },
  {
    title: "waitAddress resolves once an address is usable and fails with ETIMEDOUT at the deadline",
    async run(t, f) {
      const { nl } = f;
      const [a] = await veth(f, "w", true);
      await nl.addAddress(a, "2001:db8:1::1/64", { nodad: true });
      const ready = await nl.waitAddress(a, "2001:db8:1::1", { timeoutMs: 5000 });
      t.false(ready.tentative);
      t.is(ready.address, "2001:db8:1::1");
      await fails(t, nl.waitAddress(a, "2001:db8:1::2", { timeoutMs: 100 }), "ETIMEDOUT", "never added");
    },
  },
  {
    title:
      "waitAddressIn resolves with the address inside the prefix, whatever its identifier; others are not taken",
    async run(t, f) {
      const { nl } = f;
      const [a] = await veth(f, "q", true);
      await nl.addAddress(a, "2001:db8:7::1/64", { nodad: true }); // another prefix: never the answer
      const waiting = nl.waitAddressIn(a, "2001:db8:9::/64", { timeoutMs: 5000 });
      await nl.addAddress(a, "2001:db8:9::8f3c:12ab:4d5e:6f70/64", { nodad: true });
      const got = await waiting;
      t.is(got.address, "2001:db8:9:0:8f3c:12ab:4d5e:6f70");
      t.false(got.temporary, "an address added so is no privacy address");
      t.is(
        (await nl.waitAddressIn(a, "2001:db8:9::/64", { timeoutMs: 100 })).address,
        got.address,
        "already there",
      );
      const err = await t.throwsAsync(nl.waitAddressIn(a, "2001:db8:8::/64", { timeoutMs: 100 }));
      t.true(isNetlinkError(err, "ETIMEDOUT"), String(err));
      t.regex(String(err), /2001:db8:8::\/64/, "the timeout names the prefix it waited for");
      await fails(t, nl.waitAddressIn(a, "not-a-prefix", { timeoutMs: 100 }), "EINVAL", "a bad prefix");
    },
  },
  {
    title:
      "a link moved to another namespace leaves with its routes and addresses; its veth peer loses the carrier",
    async run(t, f) {
      const { nl } = f;
      const [a, b] = await veth(f, "m", true);
      await nl.addAddress(b, "2001:db8:1::1/64", { nodad: true });
      await nl.addRoute({ dst: "default", gateway: "fe80::1", dev: b, metric: 100 });
      t.true(await carrierOf(nl, a));
      await nl.setLink(b, { netns: await f.otherNetns(), name: "moved0" });
      t.is(await nl.link(b), undefined);
      t.false((await nl.addresses()).some((x) => x.address === "2001:db8:1::1"));
      t.false((await nl.routes()).some((r) => r.dst === "default" && r.metric === 100));
      t.false(await carrierOf(nl, a), "a moved link arrives down");
    },
  },
  {
    title: "a carrier change is announced as a link event",
    async run(t, f) {
      const { nl } = f;
      const [a, b] = await veth(f, "ev");
      await nl.setLink(a, { up: true });
      const seen: LinkInfo[] = [];
      const ac = new AbortController();
      const collecting = (async () => {
        for await (const ev of nl.events({ signal: ac.signal })) {
          if (ev.type === "link" && ev.action === "new" && ev.link.name === a) seen.push(ev.link);
        }
      })();
      await new Promise((r) => setTimeout(r, 50));
      const until = async (what: string, ok: () => boolean) => {
        for (let i = 0; i < 100 && !ok(); i++) await new Promise((r) => setTimeout(r, 20));
        t.true(ok(), what);
      };
      try {
        await nl.setLink(b, { up: true });
        await until("carrier announced", () => seen.some((l) => l.carrier));
        await nl.setLink(b, { up: false });
        await until("carrier loss announced", () => seen.at(-1)?.carrier === false);
      } finally {
        ac.abort();
        await collecting;
      }
    },
  },
  {
    title: "sysctls: a written value reads back; a missing link fails with ENOENT",
    async run(t, f) {
      const { nl, name } = f;
      const [a] = await veth(f, "y");
      await nl.writeSysctl(a, "accept_ra", 2);
      t.is(await nl.readSysctl(a, "accept_ra"), "2");
      await fails(t, nl.writeSysctl(name("no"), "accept_ra", 0), "ENOENT", "write");
      await fails(t, nl.readSysctl(name("no"), "accept_ra"), "ENOENT", "read");
    },
  },
  {
    title: "bridge port settings need a bridge port (ENOTSUP) that exists (ENODEV)",
    async run(t, f) {
      const { nl, name } = f;
      const br = name("br");
      await nl.createBridge(br);
      const [a, b] = await veth(f, "i");
      await nl.setLink(a, { master: br });
      await nl.setBridgePort(a, { isolated: true });
      await nl.setBridgePort(a, { isolated: false });
      await fails(t, nl.setBridgePort(b, { isolated: true }), "ENOTSUP", "not a port");
      await fails(t, nl.setBridgePort(name("no"), { isolated: true }), "ENODEV", "missing");
    },
  },
  {
    title: "a link that is down can be renamed, not to a name that is taken (EEXIST)",
    async run(t, f) {
      const { nl, name } = f;
      const [a, b] = await veth(f, "n");
      const renamed = name("nr");
      await nl.setLink(a, { name: renamed });
      t.is(await nl.link(a), undefined);
      t.is((await linkOf(nl, renamed)).kind, "veth");
      await fails(t, nl.setLink(renamed, { name: b }), "EEXIST", "taken");
      await nl.setLink(renamed, { up: true });
      await nl.setLink(b, { up: true });
      t.true(await carrierOf(nl, renamed), "still the peer of its veth");
    },
  },
];

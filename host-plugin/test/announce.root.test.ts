// Root-only: the destination's announcement (src/announce.ts) against the real kernel, in the test's own
// network namespace (scripts/test-root.sh) as Dom0 with its bridge, and a router namespace on that bridge.
// What it rests on, each checked here: a veth end that comes up with ndisc_notify off sends no NA; once it is
// operationally up, with ndisc_notify on, setting the MAC it has sends an unsolicited NA for its MoA; the
// router takes it for the entry it is resolving (INCOMPLETE), ignores it once that entry FAILED or when it has
// none; the bridge port forwards nothing to Dom0, which never answers for the guest; the runner leaves nothing.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import test, { type ExecutionContext } from "ava";
import { applyOps, createNetlink } from "@xenroam/netlink";
import { announceLinks, announceLocator, planAnnounce } from "../src/announce.js";

const ip = (...args: string[]) => execFileSync("ip", args, { encoding: "utf8" });
const MOA = "2001:db8:b:0:216:3eff:fe00:11";
const MAC = "00:16:3e:00:00:11";
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Dom0's bridge here, and a router namespace whose lan port is on it. */
function rig(t: ExecutionContext) {
  const id = randomBytes(2).toString("hex");
  const bridge = `xrtb${id}`;
  const router = `xrt-r${id}`;
  ip("link", "add", bridge, "type", "bridge");
  ip("link", "set", bridge, "up");
  // Dom0's own address on its bridge, as on a real host: were a packet for the MoA to reach Dom0's stack, its
  // answer would find the way back (without it, the "never answers" check below could not fail).
  ip("addr", "add", "2001:db8:b::d/64", "dev", bridge, "nodad");
  ip("netns", "add", router);
  t.teardown(() => {
    ip("netns", "del", router);
    ip("link", "del", bridge);
  });
  ip("link", "add", `xrtp${id}`, "type", "veth", "peer", "name", "lan", "netns", router);
  ip("link", "set", `xrtp${id}`, "master", bridge, "up");
  const r = (...args: string[]) => ip("-n", router, ...args);
  r("link", "set", "lo", "up");
  r("link", "set", "lan", "address", "02:00:00:00:0b:01", "up");
  r("addr", "add", "2001:db8:b::1/64", "dev", "lan", "nodad");
  /** The router's entry for the MoA: state and MAC, or undefined. */
  const entry = () => {
    const all = JSON.parse(r("-j", "-6", "neigh", "show", "dev", "lan")) as Array<{
      dst: string;
      lladdr?: string;
      state?: string[];
    }>;
    return all.find((n) => n.dst === MOA);
  };
  /** Traffic for the MoA reaches the router (as correspondents' does once the activation is relayed). */
  const trySend = () => {
    try {
      execFileSync("ip", ["netns", "exec", router, "ping", "-6", "-c", "1", "-W", "1", MOA], {
        stdio: "ignore",
      });
    } catch {
      // nobody answers: the router keeps its entry INCOMPLETE, then FAILED
    }
  };
  /** Whether anything on the bridge answers the router's ping to the MoA. */
  const answered = () => {
    try {
      execFileSync("ip", ["netns", "exec", router, "ping", "-6", "-c", "1", "-W", "1", MOA], {
        stdio: "ignore",
      });
      return true;
    } catch {
      return false;
    }
  };
  return { bridge, entry, trySend, answered };
}

test.serial(
  "an entry the router is resolving takes the guest's MAC; coming up announces nothing; Dom0 never answers for the guest",
  async (t) => {
    const { bridge, entry, trySend, answered } = rig(t);
    trySend();
    t.is(entry()?.lladdr, undefined, "INCOMPLETE, no MAC yet");
    const netlink = createNetlink();
    t.teardown(() => netlink.close());
    const plan = planAnnounce({ bridge, mac: MAC, moa: MOA });
    const { inner, outer } = announceLinks(MAC);
    t.teardown(async () => {
      if (await netlink.link(inner)) await netlink.deleteLink(inner);
    });
    await applyOps(netlink, plan.setup);
    const port = JSON.parse(ip("-j", "-d", "link", "show", "dev", outer)) as Array<{
      linkinfo?: { info_slave_data?: Record<string, unknown> };
    }>;
    t.like(port[0]?.linkinfo?.info_slave_data, {
      learning: false,
      flood: false,
      mcast_flood: false,
      bcast_flood: false,
    });
    const deadline = Date.now() + 1000;
    while (!(await netlink.link(inner))?.operUp && Date.now() < deadline) await sleep(5);
    t.true((await netlink.link(inner))?.operUp);
    await sleep(100);
    t.is(entry()?.lladdr, undefined, "up, ndisc_notify off: no NA");
    await applyOps(netlink, plan.arm);
    await sleep(100);
    t.is(entry()?.lladdr, undefined, "ndisc_notify on, nothing else: no NA");
    await applyOps(netlink, plan.announce);
    await sleep(100);
    t.is(entry()?.lladdr, MAC, "setting the MAC it has announced the MoA");
    // The router now sends to the guest's MAC; with the pair still there, nothing reaches Dom0's stack.
    t.false(answered(), "Dom0 answered a ping for the guest's MoA");
    await applyOps(netlink, plan.teardown);
    t.is(await netlink.link(inner), undefined);
    t.is(await netlink.link(outer), undefined);
  },
);

test.serial("the runner: the announcement lands, and no link is left behind", async (t) => {
  const { bridge, entry, trySend } = rig(t);
  trySend();
  const netlink = createNetlink();
  t.teardown(() => netlink.close());
  const before = (await netlink.links()).map((l) => l.name).sort();
  const ms = await announceLocator(netlink, { bridge, mac: MAC, moa: MOA });
  t.true(ms < 2000, `${ms} ms`);
  t.is(entry()?.lladdr, MAC);
  t.deepEqual((await netlink.links()).map((l) => l.name).sort(), before, "no link left behind");
});

test.serial(
  "an entry the router gave up on (FAILED) ignores it, as Linux does (ndisc_recv_na)",
  async (t) => {
    const { bridge, entry, trySend } = rig(t);
    trySend();
    // ndisc's defaults: three multicast solicitations a second apart, then FAILED — until the next packet for
    // the MoA, which makes it INCOMPLETE and solicits at once (the guest, running by then, answers that).
    await sleep(3500);
    t.deepEqual(entry()?.state, ["FAILED"]);
    const netlink = createNetlink();
    t.teardown(() => netlink.close());
    await announceLocator(netlink, { bridge, mac: MAC, moa: MOA });
    await sleep(100);
    t.is(entry()?.lladdr, undefined);
  },
);

test.serial(
  "a router with no entry for the MoA ignores it (RFC 4861 7.2.5): nothing is made there",
  async (t) => {
    const { bridge, entry } = rig(t);
    const netlink = createNetlink();
    t.teardown(() => netlink.close());
    await announceLocator(netlink, { bridge, mac: MAC, moa: MOA });
    await sleep(100);
    t.is(entry(), undefined);
  },
);

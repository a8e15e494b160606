// The destination Dom0 tells the site's router where the guest's new locator lives, before the guest runs.
//
// Why (measured on real Xen, docs/bench, scripts/xen/domu/trace.sh): the guest's activation is relayed at the
// suspend, so correspondents send to its MoA for seconds before it resumes; the router meanwhile solicits the
// MoA once a second and gets no answer. When the guest's new primary connects, what tells the router is the
// unsolicited NA netfront sends once its backend says Connected (netback_changed → netdev_notify_peers),
// 0.22–0.30 s after the frontend attached — or the router's next solicitation, up to 1 s later. An ordinary
// migration inside one subnet has no such wait: the router already knows the guest's address.
//
// How: an unsolicited Neighbor Advertisement (RFC 4861 7.2.6: to all-nodes, Override set) for the MoA with the
// guest's MAC as target link-layer address, which the router takes for the entry it is resolving (RFC 4861
// 7.2.5; Linux ndisc_recv_na → neigh_update, which also sends the packets it queued for it). The kernel sends
// it, not xenroam: a veth end with the guest's MAC and only the MoA on it (nodad), and
// net.ipv6.conf.<if>.ndisc_notify=1, sends one for each of its addresses when its MAC is set — even to the
// MAC it has (net/ipv6/ndisc.c ndisc_netdev_event, NETDEV_CHANGEADDR → ndisc_send_unsol_na). It would on
// NETDEV_UP too, but whether that one leaves depends on linkwatch having activated the queue, so the end
// comes up with ndisc_notify off, waits until it is operationally up, then turns it on and sets its MAC. Its
// peer is a port of the bridge the guest's new primary is on, with learning and every kind of flooding off:
// the bridge forwards nothing to it, so Dom0's own stack never answers for the guest. Then the pair goes.
// Each of these is checked against the kernel in announce.root.test.ts.
//
// A router that has no entry for the MoA ignores the NA (RFC 4861 7.2.5) unless told otherwise (Linux
// accept_untracked_na), and Linux ignores it for an entry that FAILED (ndisc_recv_na) — one that was not
// resolving just then: correspondents' packets every few ms keep it INCOMPLETE, sparse ones may not. Nothing is
// then lost: the router's next packet for the MoA solicits at once, and the guest answers. After the NA the
// router's entry is STALE; its first use starts Linux's 5 s DELAY, then 3 unicast probes 1 s apart, all the
// while sending to the MAC it has: the guest has those 8 s to resume and answer. Pure plans here; the runner
// takes the Netlink port.

import { canonicalIpv6, canonicalMac, isIpv6, isMac } from "@xenroam/core";
import { applyOps, type NetOp, type Netlink } from "@xenroam/netlink";

export interface LocatorAnnouncement {
  /** The bridge the guest's new primary vif is a port of on this host. */
  readonly bridge: string;
  /** The new primary's MAC. */
  readonly mac: string;
  /** The address the guest has there (its MoA). */
  readonly moa: string;
}

export class AnnounceError extends Error {
  override readonly name = "AnnounceError";
}

/** The veth pair's names, from the whole MAC (15 characters at most): one pair per guest MAC. */
export function announceLinks(mac: string): { readonly inner: string; readonly outer: string } {
  const hex = canonicalMac(mac).split(":").join("");
  return { inner: `xn${hex}`, outer: `xn${hex}p` };
}

export interface AnnouncePlan {
  /** The pair, set up silent: no link-local, no RA, no DAD; a port the bridge sends nothing; the MoA; up. */
  readonly setup: NetOp[];
  /**
   * Once the inner end is operationally up (linkwatch activated its queue): ndisc_notify on. Not before: with
   * it on, coming up (NETDEV_UP) announces too, and whether that NA leaves races with linkwatch.
   */
  readonly arm: NetOp[];
  /** The announcement itself: the inner end's MAC set again (NETDEV_CHANGEADDR); one netlink request. */
  readonly announce: NetOp[];
  /** Deleting the inner end deletes its peer, and with it the bridge port. */
  readonly teardown: NetOp[];
}

export function planAnnounce(a: LocatorAnnouncement): AnnouncePlan {
  if (!isMac(a.mac)) throw new AnnounceError(`"${a.mac}" is not a MAC address`);
  if (!isIpv6(a.moa)) throw new AnnounceError(`"${a.moa}" is not an IPv6 address`);
  const mac = canonicalMac(a.mac);
  const moa = canonicalIpv6(a.moa);
  const { inner, outer } = announceLinks(mac);
  return {
    setup: [
      { op: "createVeth", name: inner, peer: outer, options: { mac } },
      { op: "writeSysctl", ifname: inner, key: "addr_gen_mode", value: 1 },
      { op: "writeSysctl", ifname: inner, key: "accept_ra", value: 0 },
      { op: "writeSysctl", ifname: inner, key: "accept_dad", value: 0 },
      // The bridge never sends this port anything and never learns the guest's MAC here: Dom0's stack must
      // not see the correspondents' packets for the MoA (it would answer them: a TCP RST, an ICMP error).
      { op: "setLink", name: outer, change: { master: a.bridge } },
      {
        op: "setBridgePort",
        name: outer,
        change: { learning: false, unicastFlood: false, multicastFlood: false, broadcastFlood: false },
      },
      { op: "setLink", name: outer, change: { up: true } },
      { op: "addAddress", name: inner, cidr: `${moa}/128`, options: { nodad: true, noPrefixRoute: true } },
      { op: "setLink", name: inner, change: { up: true } },
    ],
    arm: [{ op: "writeSysctl", ifname: inner, key: "ndisc_notify", value: 1 }],
    // Setting the MAC it already has still notifies NETDEV_CHANGEADDR (net/core/dev.c dev_set_mac_address
    // skips only the driver's call): the NA.
    announce: [{ op: "setLink", name: inner, change: { mac } }],
    teardown: [{ op: "deleteLink", name: inner }],
  };
}

/** How long, and how often, the runner waits for the inner end to be operationally up (linkwatch: ms). */
export const OPER_UP_WAIT_MS = 1000;
export const OPER_UP_POLL_MS = 5;
/** announceLocator: how long the pair stays after the MAC change (the NA crosses veth and bridge in softirq). */
export const ANNOUNCE_LINGER_MS = 20;

const wait = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * The pair set up and operationally up, ready to announce: long before the guest is (xenroam receive makes it
 * while the memory arrives), so that what is left when it counts is one link change. A pair left
 * by a crash is removed first; whatever fails, nothing stays.
 */
export async function prepareAnnouncement(
  netlink: Netlink,
  a: LocatorAnnouncement,
  sleep: (ms: number) => Promise<void> = wait,
): Promise<void> {
  const plan = planAnnounce(a);
  const { inner } = announceLinks(a.mac);
  if (!(await netlink.link(a.bridge))) throw new AnnounceError(`no bridge ${a.bridge} on this host`);
  if (await netlink.link(inner)) await applyOps(netlink, plan.teardown);
  try {
    await applyOps(netlink, plan.setup);
    const deadline = Date.now() + OPER_UP_WAIT_MS;
    while (!(await netlink.link(inner))?.operUp) {
      if (Date.now() >= deadline)
        throw new AnnounceError(`${inner} did not come up within ${OPER_UP_WAIT_MS} ms`);
      await sleep(OPER_UP_POLL_MS);
    }
    await applyOps(netlink, plan.arm);
  } catch (err) {
    await withdrawAnnouncement(netlink, a).catch(() => {}); // the first failure is the one to report
    throw err;
  }
}

/**
 * The announcement itself, on a prepared pair: one netlink request. The pair stays until withdrawn — its
 * removal (unregistering two devices) costs Dom0 CPU that the resuming guest should have.
 */
export async function sendAnnouncement(netlink: Netlink, a: LocatorAnnouncement): Promise<void> {
  await applyOps(netlink, planAnnounce(a).announce);
}

/** Removes the pair if it is there (idempotent). */
export async function withdrawAnnouncement(netlink: Netlink, a: LocatorAnnouncement): Promise<void> {
  if (await netlink.link(announceLinks(a.mac).inner)) await applyOps(netlink, planAnnounce(a).teardown);
}

/** Prepare, send and withdraw at once (nothing to overlap): resolves with the milliseconds it took. */
export async function announceLocator(
  netlink: Netlink,
  a: LocatorAnnouncement,
  sleep: (ms: number) => Promise<void> = wait,
): Promise<number> {
  const started = Date.now();
  await prepareAnnouncement(netlink, a, sleep);
  try {
    await sendAnnouncement(netlink, a);
    await sleep(ANNOUNCE_LINGER_MS);
  } finally {
    await withdrawAnnouncement(netlink, a);
  }
  return Date.now() - started;
}

// FakeNetlink: an in-memory Netlink that behaves like the kernel for the calls xenroam makes and records
// every change as one line of `ip`-style text (`link set vif3.1 master xr-site-b up`) for table tests.

import { canonicalIpv6, canonicalMac } from "@xenroam/core";
import { NetlinkError } from "./errors.js";
import { prefixWait } from "./match.js";
import type {
  AddAddressOptions,
  AddressInfo,
  BridgeOptions,
  BridgePortChange,
  LinkChange,
  LinkInfo,
  NeighbourInfo,
  NetEvent,
  Netlink,
  NetnsRef,
  RouteInfo,
  RouteSpec,
  VethOptions,
  WaitOptions,
} from "./port.js";

interface FakeLink {
  index: number;
  name: string;
  kind: string | undefined;
  mac: string | undefined;
  mtu: number;
  up: boolean;
  master: number | undefined;
  /** The other end of a veth, when it is in this namespace. */
  peer: string | undefined;
  /** Whether the other end of a veth in another namespace is up there (the fake sees one namespace). */
  farPeerUp: boolean | undefined;
  isolated: boolean;
  /** A bridge whose MTU was set after creation no longer follows its ports' (BROPT_MTU_SET_BY_USER). */
  mtuSetByUser: boolean;
  /** A bridge whose carrier its ports decide: once it has had a port, or a MAC of its own. */
  portsDecide: boolean;
}

const nsName = (ref: NetnsRef) => ("name" in ref ? ref.name : "path" in ref ? ref.path : `fd:${ref.fd}`);

export class FakeNetlink implements Netlink {
  /** Every change, in order, as `ip`-style text. */
  readonly effects: string[] = [];
  /** Sysctl values by "ifname/key" (IPv6) or "4:ifname/key". */
  readonly sysctls = new Map<string, string>();
  /** Addresses that should stay tentative until settle() is called (to test waits). */
  dadDelay = false;
  private nextIndex = 1;
  private readonly linkMap = new Map<string, FakeLink>();
  private readonly carrierLost = new Set<string>();
  private addrs: AddressInfo[] = [];
  private routeList: RouteInfo[] = [];
  private neigh: NeighbourInfo[] = [];
  private readonly listeners = new Set<(ev: NetEvent) => void>();

  constructor(initial: readonly string[] = ["lo"]) {
    for (const name of initial) this.addLink(name, undefined, undefined);
  }

  private emit(ev: NetEvent): void {
    for (const l of this.listeners) l(ev);
  }

  private addLink(name: string, kind: string | undefined, mac: string | undefined): FakeLink {
    const link: FakeLink = {
      index: this.nextIndex++,
      name,
      kind,
      mac,
      mtu: name === "lo" ? 65536 : 1500,
      up: false,
      master: undefined,
      peer: undefined,
      farPeerUp: undefined,
      isolated: false,
      mtuSetByUser: false,
      portsDecide: false,
    };
    this.linkMap.set(name, link);
    this.emit({ type: "link", action: "new", link: this.info(link) });
    return link;
  }

  /** Carrier as the kernel reports it (IFF_LOWER_UP): only on a link that is up. */
  private carrier(l: FakeLink): boolean {
    if (!l.up || this.carrierLost.has(l.name)) return false;
    // drivers/net/veth.c veth_open/veth_close: an end has a carrier while both ends are up. A veth seeded
    // without a known peer is taken to have its other end up.
    if (l.kind === "veth") return l.peer ? this.linkMap.get(l.peer)?.up === true : (l.farPeerUp ?? true);
    // net/bridge/br_stp.c br_port_state_selection: the bridge has a carrier iff a port forwards (with STP off:
    // a port that is up with a carrier). It runs whenever the bridge id changes (a MAC given at creation,
    // br_dev_newlink, or the first port, br_stp_recalculate_bridge_id) and when ports come and go; a bridge
    // made without a MAC that never had a port keeps the carrier it was registered with.
    if (l.kind === "bridge" && l.portsDecide) return this.portsOf(l).some((p) => this.carrier(p));
    return true;
  }

  private portsOf(bridge: FakeLink): FakeLink[] {
    return [...this.linkMap.values()].filter((p) => p.master === bridge.index);
  }

  private info(l: FakeLink): LinkInfo {
    return {
      index: l.index,
      name: l.name,
      kind: l.kind,
      mac: l.mac,
      mtu: l.mtu,
      up: l.up,
      carrier: this.carrier(l),
      // No linkwatch here: operationally up the moment the carrier is (the kernel: a little later).
      operUp: this.carrier(l),
      master: l.master,
    };
  }

  private snapshot(): Map<string, string> {
    return new Map([...this.linkMap.values()].map((l) => [l.name, JSON.stringify(this.info(l))]));
  }

  /** RTM_NEWLINK for every other link a change altered (a veth peer's or a bridge's carrier, a bridge's MTU). */
  private announce(before: Map<string, string>, except?: string): void {
    for (const l of this.linkMap.values()) {
      const was = before.get(l.name);
      if (l.name === except || was === undefined) continue;
      const now = this.info(l);
      if (JSON.stringify(now) !== was) this.emit({ type: "link", action: "new", link: now });
    }
  }

  /**
   * net/bridge/br_if.c br_mtu_auto_adjust (port added, removed, or its MTU changed): unless its MTU was set by
   * the user, a bridge takes the smallest MTU of its ports, ETH_DATA_LEN (1500) without ports (br_mtu_min).
   * An MTU given at creation does not count as set by the user (rtnl_create_link writes dev->mtu directly).
   */
  private adjustBridgeMtu(index: number | undefined): void {
    const br = [...this.linkMap.values()].find((l) => l.index === index);
    if (br?.kind !== "bridge" || br.mtuSetByUser) return;
    const ports = this.portsOf(br);
    br.mtu = ports.length > 0 ? Math.min(...ports.map((p) => p.mtu)) : 1500;
  }

  /** net/core/dev.c dev_validate_mtu: within the device's min_mtu (68 for Ethernet) and max_mtu (65535). */
  private checkMtu(operation: string, name: string, mtu: number): void {
    if (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535)
      throw new NetlinkError("EINVAL", operation, name, `mtu ${mtu} out of range`);
  }

  private dropAddresses(keep: (a: AddressInfo) => boolean): void {
    const gone = this.addrs.filter((a) => !keep(a));
    this.addrs = this.addrs.filter(keep);
    for (const a of gone) this.emit({ type: "address", action: "del", address: a });
  }

  /** The link leaves this namespace (deleted or moved away) with its addresses and routes; ports are released. */
  private removeLink(l: FakeLink): void {
    this.linkMap.delete(l.name);
    for (const other of this.linkMap.values()) if (other.master === l.index) other.master = undefined;
    this.dropAddresses((a) => a.index !== l.index);
    this.routeList = this.routeList.filter((r) => r.dev !== l.name);
    this.adjustBridgeMtu(l.master);
  }

  /** Administratively down: what the kernel's NETDEV_DOWN handlers take away. */
  private ifdown(l: FakeLink): void {
    // net/ipv6/route.c fib6_ifdown (rt6_disable_ip from addrconf_ifdown): NETDEV_DOWN deletes every route
    // whose nexthop is the link, in every table; they do not come back when it is up again.
    this.routeList = this.routeList.filter((r) => r.dev !== l.name);
    // net/ipv6/addrconf.c addrconf_ifdown: the addresses go, unless keep_addr_on_down (all's, else the link's)
    // is positive; even then only permanent (configured) addresses that are not link-local stay.
    const all = Number(this.sysctls.get("all/keep_addr_on_down") ?? 0);
    const keep = (all !== 0 ? all : Number(this.sysctls.get(`${l.name}/keep_addr_on_down`) ?? 0)) > 0;
    this.dropAddresses(
      (a) => a.index !== l.index || (keep && a.permanent && a.scope !== "link" && a.scope !== "host"),
    );
  }

  private need(operation: string, name: string): FakeLink {
    const l = this.linkMap.get(name);
    if (!l) throw new NetlinkError("ENODEV", operation, name, "no such interface");
    return l;
  }

  private exists(operation: string, name: string): void {
    if (this.linkMap.has(name)) throw new NetlinkError("EEXIST", operation, name);
  }

  /** No carrier on an up link (a Xen frontend still reconnecting to its backend after a resume), or back. */
  setCarrier(name: string, present: boolean): void {
    const before = this.snapshot();
    if (present) this.carrierLost.delete(name);
    else this.carrierLost.add(name);
    this.announce(before);
  }

  /** The other end of a veth, in another namespace, went up or down there. */
  setFarPeerUp(name: string, up: boolean): void {
    const before = this.snapshot();
    this.need("far peer", name).farPeerUp = up;
    this.announce(before);
  }

  /** Adds a link as if something else (Xen's backend, the lab) had made it. Not recorded as an effect. */
  seedLink(name: string, options: { kind?: string; mac?: string; up?: boolean; master?: string } = {}): void {
    const l = this.addLink(name, options.kind, options.mac ? canonicalMac(options.mac) : undefined);
    l.up = options.up ?? false;
    if (options.master) {
      const m = this.need("seed", options.master);
      l.master = m.index;
      m.portsDecide = true;
    }
  }

  /** Adds an address as if the kernel had made it (SLAAC). Not recorded as an effect. */
  seedAddress(
    name: string,
    cidr: string,
    options: {
      tentative?: boolean;
      scope?: AddressInfo["scope"];
      temporary?: boolean;
      optimistic?: boolean;
      /** When an RA last refreshed it (default: now, in hundredths of a second on the fake's clock). */
      refreshedCs?: number;
    } = {},
  ): void {
    const l = this.need("seed", name);
    const [a = "", len = "64"] = cidr.split("/");
    const addr: AddressInfo = {
      index: l.index,
      family: 6,
      address: canonicalIpv6(a),
      prefixLength: Number(len),
      scope: options.scope ?? (a.toLowerCase().startsWith("fe80") ? "link" : "global"),
      tentative: options.tentative ?? false,
      dadFailed: false,
      permanent: false,
      deprecated: false,
      temporary: options.temporary ?? false,
      ...(options.optimistic ? { optimistic: true } : {}),
      refreshedCs: options.refreshedCs ?? Math.floor(Date.now() / 10),
    };
    this.addrs = this.addrs.filter((x) => !(x.index === l.index && x.address === addr.address));
    this.addrs.push(addr);
    this.emit({ type: "address", action: "new", address: addr });
  }

  /** Ends DAD on every tentative address (or fails it). */
  settle(fail = false): void {
    this.addrs = this.addrs.map((a) => {
      if (!a.tentative) return a;
      const done = { ...a, tentative: false, dadFailed: fail };
      this.emit({ type: "address", action: "new", address: done });
      return done;
    });
  }

  seedRoute(route: RouteInfo): void {
    this.routeList.push(route);
  }

  seedNeighbour(n: Omit<NeighbourInfo, "index">): void {
    this.neigh.push({ ...n, index: n.dev ? (this.linkMap.get(n.dev)?.index ?? 0) : 0 });
  }

  async links(): Promise<LinkInfo[]> {
    return [...this.linkMap.values()].map((l) => this.info(l));
  }

  async link(name: string): Promise<LinkInfo | undefined> {
    const l = this.linkMap.get(name);
    return l ? this.info(l) : undefined;
  }

  async createBridge(name: string, options: BridgeOptions = {}): Promise<void> {
    this.exists("create bridge", name);
    const mac = options.mac ? canonicalMac(options.mac) : undefined;
    if (options.mtu) this.checkMtu("create bridge", name, options.mtu);
    if (!options.netns) {
      const l = this.addLink(name, "bridge", mac);
      if (options.mtu) l.mtu = options.mtu;
      // net/bridge/br_netlink.c br_dev_newlink: a MAC given at creation changes the bridge id
      // (br_stp_change_bridge_id), whose port state selection, with no port, takes the carrier away.
      if (mac) l.portsDecide = true;
    }
    const extra = [
      mac ? ` address ${mac}` : "",
      options.mtu ? ` mtu ${options.mtu}` : "",
      options.netns ? ` netns ${nsName(options.netns)}` : "",
    ].join("");
    const snooping =
      options.multicastSnooping === undefined ? "" : ` mcast_snooping ${options.multicastSnooping ? 1 : 0}`;
    this.effects.push(`link add ${name}${extra} type bridge${snooping}`);
  }

  async createVeth(name: string, peer: string, options: VethOptions = {}): Promise<void> {
    this.exists("create veth", name);
    if (!options.peerNetns) this.exists("create veth", peer);
    if (options.mtu) this.checkMtu("create veth", name, options.mtu);
    // Both ends are made here or there, down; each takes the MTU (the adapter gives it to both).
    const end = (ifname: string, other: string, mac: string | undefined, otherAway: boolean) => {
      const l = this.addLink(ifname, "veth", mac ? canonicalMac(mac) : undefined);
      l.peer = otherAway ? undefined : other;
      l.farPeerUp = otherAway ? false : undefined;
      if (options.mtu) l.mtu = options.mtu;
    };
    if (!options.netns) end(name, peer, options.mac, options.peerNetns !== undefined);
    if (!options.peerNetns) end(peer, name, options.peerMac, options.netns !== undefined);
    const side = (mac?: string, ns?: NetnsRef) =>
      `${mac ? ` address ${canonicalMac(mac)}` : ""}${options.mtu ? ` mtu ${options.mtu}` : ""}${ns ? ` netns ${nsName(ns)}` : ""}`;
    this.effects.push(
      `link add ${name}${side(options.mac, options.netns)} type veth peer name ${peer}${side(options.peerMac, options.peerNetns)}`,
    );
  }

  async deleteLink(name: string): Promise<void> {
    const l = this.need("delete link", name);
    const before = this.snapshot();
    // drivers/net/veth.c veth_dellink: deleting one end unregisters the other too.
    const peer = l.peer ? this.linkMap.get(l.peer) : undefined;
    const gone = [l, ...(peer ? [peer] : [])].map((x) => ({ x, info: this.info(x) }));
    for (const { x } of gone) this.removeLink(x);
    this.effects.push(`link del ${name}`);
    for (const { info } of gone) this.emit({ type: "link", action: "del", link: info });
    this.announce(before);
  }

  async setLink(name: string, change: LinkChange): Promise<void> {
    const l = this.need("set link", name);
    const before = this.snapshot();
    const parts: string[] = [];
    if (change.mtu !== undefined) {
      this.checkMtu("set link", name, change.mtu);
      // net/core/dev.c netif_set_mtu_ext: the same MTU again is a no-op, so it does not pin a bridge's MTU.
      if (l.kind === "bridge" && change.mtu !== l.mtu) l.mtuSetByUser = true;
      l.mtu = change.mtu;
      this.adjustBridgeMtu(l.master);
      parts.push(`mtu ${change.mtu}`);
    }
    if (change.mac !== undefined) {
      const mac = canonicalMac(change.mac);
      // net/bridge/br_device.c br_set_mac_address: a new MAC changes the bridge id (br_stp_change_bridge_id).
      if (l.kind === "bridge" && mac !== l.mac) l.portsDecide = true;
      l.mac = mac;
      parts.push(`address ${l.mac}`);
    }
    if (change.master !== undefined) {
      const old = l.master;
      if (change.master === null) {
        l.master = undefined;
        parts.push("nomaster");
      } else {
        const m = this.need("set master", change.master);
        // net/core/rtnetlink.c do_set_master: only a master with ndo_add_slave (errno 95, ENOTSUP to Node);
        // net/bridge/br_if.c br_add_if: no bridge in a bridge (ELOOP in its source, EINVAL from Linux 6.18).
        if (m.kind !== "bridge")
          throw new NetlinkError("ENOTSUP", "set master", name, `${m.name} is not a bridge`);
        if (l.kind === "bridge")
          throw new NetlinkError("EINVAL", "set master", name, "cannot enslave a bridge to a bridge");
        l.master = m.index;
        // A port joining changes a bridge id that is not the user's (br_stp_recalculate_bridge_id).
        m.portsDecide = true;
        parts.push(`master ${m.name}`);
      }
      this.adjustBridgeMtu(old);
      this.adjustBridgeMtu(l.master);
    }
    if (change.up !== undefined) {
      if (l.up && !change.up) this.ifdown(l);
      l.up = change.up;
      parts.push(change.up ? "up" : "down");
    }
    if (change.netns !== undefined) {
      // net/core/dev.c __dev_change_net_namespace: the link is closed and unregistered here (its addresses and
      // routes go); a veth peer left behind loses its carrier.
      const peer = l.peer ? this.linkMap.get(l.peer) : undefined;
      this.removeLink(l);
      if (peer) {
        peer.peer = undefined;
        peer.farPeerUp = false;
      }
      parts.push(`netns ${nsName(change.netns)}`);
      if (change.name) parts.push(`name ${change.name}`);
    } else if (change.name !== undefined) {
      this.exists("rename link", change.name);
      this.linkMap.delete(name);
      l.name = change.name;
      this.linkMap.set(change.name, l);
      // Routes, a peer's and sysctls refer to the device, not to its name.
      const peer = l.peer ? this.linkMap.get(l.peer) : undefined;
      if (peer) peer.peer = change.name;
      this.routeList = this.routeList.map((r) => (r.dev === name ? { ...r, dev: change.name } : r));
      for (const [key, value] of [...this.sysctls]) {
        const m = /^(4:)?([^/]+)\/(.+)$/.exec(key);
        if (m?.[2] !== name) continue;
        this.sysctls.delete(key);
        this.sysctls.set(`${m[1] ?? ""}${change.name}/${m[3]}`, value);
      }
      parts.push(`name ${change.name}`);
    }
    this.effects.push(`link set ${name} ${parts.join(" ")}`);
    this.emit({ type: "link", action: change.netns ? "del" : "new", link: this.info(l) });
    this.announce(before, l.name);
  }

  async setBridgePort(name: string, change: BridgePortChange): Promise<void> {
    const l = this.need("set bridge port", name);
    // iproute2's words for them, in the order the adapter sends them.
    const words: Array<[string, boolean | undefined]> = [
      ["isolated", change.isolated],
      ["learning", change.learning],
      ["flood", change.unicastFlood],
      ["mcast_flood", change.multicastFlood],
      ["bcast_flood", change.broadcastFlood],
    ];
    const set = words.filter(([, on]) => on !== undefined);
    if (set.length === 0) return;
    // net/core/rtnetlink.c rtnl_bridge_setlink: only a bridge port has bridge port settings.
    if (l.master === undefined)
      throw new NetlinkError("ENOTSUP", "set bridge port", name, "not a bridge port");
    if (change.isolated !== undefined) l.isolated = change.isolated;
    this.effects.push(
      `link set dev ${name} type bridge_slave ${set.map(([w, on]) => `${w} ${on ? "on" : "off"}`).join(" ")}`,
    );
  }

  /** Whether a bridge port is isolated (for assertions). */
  isIsolated(name: string): boolean {
    return this.need("isolated", name).isolated;
  }

  async addresses(name?: string): Promise<AddressInfo[]> {
    if (name === undefined) return [...this.addrs];
    const l = this.need("list addresses", name);
    return this.addrs.filter((a) => a.index === l.index);
  }

  async addAddress(name: string, cidr: string, options: AddAddressOptions = {}): Promise<void> {
    const l = this.need("add address", name);
    const [a = "", len = ""] = cidr.split("/");
    const address = canonicalIpv6(a);
    if (this.addrs.some((x) => x.index === l.index && x.address === address)) {
      throw new NetlinkError("EEXIST", "add address", name);
    }
    const info: AddressInfo = {
      index: l.index,
      family: 6,
      address,
      prefixLength: Number(len),
      scope: address.startsWith("fe80") ? "link" : "global",
      tentative: this.dadDelay && !options.nodad,
      dadFailed: false,
      permanent: true,
      deprecated: false,
      temporary: false,
    };
    this.addrs.push(info);
    const flags = `${options.nodad ? " nodad" : ""}${options.noPrefixRoute ? " noprefixroute" : ""}`;
    this.effects.push(`addr add ${address}/${len} dev ${name}${flags}`);
    this.emit({ type: "address", action: "new", address: info });
  }

  async deleteAddress(name: string, cidr: string): Promise<void> {
    const l = this.need("delete address", name);
    const [a = "", len = ""] = cidr.split("/");
    const address = canonicalIpv6(a);
    const found = this.addrs.find((x) => x.index === l.index && x.address === address);
    if (!found) throw new NetlinkError("EADDRNOTAVAIL", "delete address", name);
    this.addrs = this.addrs.filter((x) => x !== found);
    this.effects.push(`addr del ${address}/${len} dev ${name}`);
    this.emit({ type: "address", action: "del", address: found });
  }

  async waitAddress(name: string, address: string, options: WaitOptions = {}): Promise<AddressInfo> {
    const want = canonicalIpv6(address);
    return this.waitFor(name, options, want, (a) => {
      if (a.address !== want) return undefined;
      if (a.dadFailed)
        throw new NetlinkError("EADDRNOTAVAIL", "wait address", name, `DAD failed for ${want}`);
      return a.tentative ? undefined : a;
    });
  }

  async waitAddressIn(name: string, prefix: string, options: WaitOptions = {}): Promise<AddressInfo> {
    this.need("wait address", name);
    const { pick, what } = prefixWait("wait address", name, prefix);
    return this.waitFor(name, options, what, pick);
  }

  private waitFor(
    name: string,
    options: WaitOptions,
    what: string | (() => string),
    pick: (a: AddressInfo) => AddressInfo | undefined,
  ): Promise<AddressInfo> {
    const l = this.need("wait address", name);
    const check = (a: AddressInfo) => (a.index === l.index ? pick(a) : undefined);
    for (const a of this.addrs) {
      const done = check(a);
      if (done) return Promise.resolve(done);
    }
    return new Promise<AddressInfo>((resolve, reject) => {
      const finish = (err?: Error, value?: AddressInfo) => {
        this.listeners.delete(listener);
        clearTimeout(timer);
        options.signal?.removeEventListener("abort", onAbort);
        if (err) reject(err);
        else if (value) resolve(value);
      };
      const listener = (ev: NetEvent) => {
        if (ev.type !== "address" || ev.action !== "new") return;
        try {
          const done = check(ev.address);
          if (done) finish(undefined, done);
        } catch (err) {
          finish(err as Error);
        }
      };
      const onAbort = () => finish(new NetlinkError("ETIMEDOUT", "wait address", name, "aborted"));
      const timer =
        options.timeoutMs === undefined
          ? undefined
          : setTimeout(() => {
              const wanted = typeof what === "string" ? what : what();
              finish(new NetlinkError("ETIMEDOUT", "wait address", name, `${wanted} not usable in time`));
            }, options.timeoutMs);
      options.signal?.addEventListener("abort", onAbort, { once: true });
      this.listeners.add(listener);
    });
  }

  async routes(filter: { table?: number; dev?: string } = {}): Promise<RouteInfo[]> {
    const table = filter.table ?? 254;
    return this.routeList.filter(
      (r) => r.table === table && (filter.dev === undefined || r.dev === filter.dev),
    );
  }

  private routeText(r: RouteSpec): string {
    return [
      r.dst,
      r.gateway ? `via ${canonicalIpv6(r.gateway)}` : "",
      `dev ${r.dev}`,
      r.prefsrc ? `src ${canonicalIpv6(r.prefsrc)}` : "",
      r.metric !== undefined ? `metric ${r.metric}` : "",
      r.table !== undefined ? `table ${r.table}` : "",
    ]
      .filter(Boolean)
      .join(" ");
  }

  private sameRoute(a: RouteInfo, r: RouteSpec): boolean {
    return (
      a.dst === r.dst &&
      a.dev === r.dev &&
      a.metric === (r.metric ?? 1024) &&
      a.table === (r.table ?? 254) &&
      (r.gateway === undefined || a.gateway === canonicalIpv6(r.gateway))
    );
  }

  async addRoute(route: RouteSpec): Promise<void> {
    const dev = this.need("add route", route.dev);
    // net/ipv6/route.c fib6_nh_init: "Nexthop device is not up".
    if (!dev.up) throw new NetlinkError("ENETDOWN", "add route", route.dev, "nexthop device is not up");
    // net/ipv6/route.c ip6_route_info_create: the preferred source must be local (ipv6_chk_addr: on this link,
    // or of global scope on another; not tentative).
    if (route.prefsrc) {
      const src = canonicalIpv6(route.prefsrc);
      const local = this.addrs.some(
        (a) =>
          a.address === src &&
          !a.tentative &&
          (a.index === dev.index || (a.scope !== "link" && a.scope !== "host")),
      );
      if (!local) throw new NetlinkError("EINVAL", "add route", route.dev, `invalid source address ${src}`);
    }
    // net/ipv6/ip6_fib.c fib6_add_rt2node: with NLM_F_EXCL, any route to the same prefix with the same metric
    // in the table is a duplicate, whatever its device or gateway.
    if (
      this.routeList.some(
        (a) => a.dst === route.dst && a.metric === (route.metric ?? 1024) && a.table === (route.table ?? 254),
      )
    ) {
      throw new NetlinkError("EEXIST", "add route", route.dev);
    }
    this.routeList.push({
      dst: route.dst,
      dev: route.dev,
      gateway: route.gateway ? canonicalIpv6(route.gateway) : undefined,
      ...(route.prefsrc ? { prefsrc: canonicalIpv6(route.prefsrc) } : {}),
      metric: route.metric ?? 1024,
      table: route.table ?? 254,
      protocol: "static",
    });
    this.effects.push(`route add ${this.routeText(route)}`);
  }

  async deleteRoute(route: RouteSpec): Promise<void> {
    const i = this.routeList.findIndex((a) => this.sameRoute(a, route));
    if (i < 0) throw new NetlinkError("ESRCH", "delete route", route.dev);
    this.routeList.splice(i, 1);
    this.effects.push(`route del ${this.routeText(route)}`);
  }

  async neighbours(dev?: string): Promise<NeighbourInfo[]> {
    return this.neigh.filter((n) => dev === undefined || n.dev === dev);
  }

  async flushNeighbours(dev: string): Promise<void> {
    this.need("flush neighbours", dev);
    this.neigh = this.neigh.filter((n) => n.dev !== dev || n.state === "permanent" || n.state === "noarp");
    this.effects.push(`neigh flush dev ${dev}`);
  }

  events(options: { signal?: AbortSignal } = {}): AsyncIterable<NetEvent> {
    const listeners = this.listeners;
    return {
      [Symbol.asyncIterator]() {
        const queue: NetEvent[] = [];
        let wake: (() => void) | undefined;
        let closed = false;
        const listener = (ev: NetEvent) => {
          queue.push(ev);
          wake?.();
        };
        const close = () => {
          closed = true;
          listeners.delete(listener);
          wake?.();
        };
        listeners.add(listener);
        options.signal?.addEventListener("abort", close, { once: true });
        if (options.signal?.aborted) close();
        return {
          async next(): Promise<IteratorResult<NetEvent>> {
            for (;;) {
              const ev = queue.shift();
              if (ev) return { done: false, value: ev };
              if (closed) return { done: true, value: undefined };
              await new Promise<void>((r) => {
                wake = r;
              });
            }
          },
          async return(): Promise<IteratorResult<NetEvent>> {
            close();
            return { done: true, value: undefined };
          },
        };
      },
    };
  }

  async readSysctl(ifname: string, key: string, family: 4 | 6 = 6): Promise<string> {
    const v = this.sysctls.get(`${family === 4 ? "4:" : ""}${ifname}/${key}`);
    if (v === undefined) throw new NetlinkError("ENOENT", `read sysctl ${key}`, ifname);
    return v;
  }

  async writeSysctl(ifname: string, key: string, value: string | number, family: 4 | 6 = 6): Promise<void> {
    // /proc/sys/net/ipv6/conf/<ifname> exists only for links that do.
    if (ifname !== "all" && ifname !== "default" && !this.linkMap.has(ifname))
      throw new NetlinkError("ENOENT", `write sysctl ${key}=${value}`, ifname);
    this.sysctls.set(`${family === 4 ? "4:" : ""}${ifname}/${key}`, String(value));
    this.effects.push(`sysctl -w net.ipv${family}.conf.${ifname}.${key}=${value}`);
  }

  close(): void {
    this.listeners.clear();
  }
}

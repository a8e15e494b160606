// FakeNetlink: an in-memory Netlink that behaves like the kernel for the calls xenroam makes and records
// every change as one line of `ip`-style text (`link set vif3.1 master xr-site-b up`) for table tests.

import { canonicalIpv6, canonicalMac } from "@xenroam/core";
import { NetlinkError } from "./errors.js";
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
  peer: string | undefined;
  isolated: boolean;
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
      isolated: false,
    };
    this.linkMap.set(name, link);
    this.emit({ type: "link", action: "new", link: this.info(link) });
    return link;
  }

  private info(l: FakeLink): LinkInfo {
    const peer = l.peer ? this.linkMap.get(l.peer) : undefined;
    const carrier =
      l.up && !this.carrierLost.has(l.name) && (l.kind !== "veth" || peer === undefined || peer.up);
    return {
      index: l.index,
      name: l.name,
      kind: l.kind,
      mac: l.mac,
      mtu: l.mtu,
      up: l.up,
      carrier,
      master: l.master,
    };
  }

  private need(operation: string, name: string): FakeLink {
    const l = this.linkMap.get(name);
    if (!l) throw new NetlinkError("ENODEV", operation, name, "no such interface");
    return l;
  }

  private exists(operation: string, name: string): void {
    if (this.linkMap.has(name)) throw new NetlinkError("EEXIST", operation, name);
  }

  /** Adds a link as if something else (Xen's backend, the lab) had made it. Not recorded as an effect. */
  /** No carrier on an up link (a Xen frontend still reconnecting to its backend after a resume), or back. */
  setCarrier(name: string, present: boolean): void {
    if (present) this.carrierLost.delete(name);
    else this.carrierLost.add(name);
  }

  seedLink(name: string, options: { kind?: string; mac?: string; up?: boolean; master?: string } = {}): void {
    const l = this.addLink(name, options.kind, options.mac ? canonicalMac(options.mac) : undefined);
    l.up = options.up ?? false;
    if (options.master) l.master = this.need("seed", options.master).index;
  }

  /** Adds an address as if the kernel had made it (SLAAC). Not recorded as an effect. */
  seedAddress(
    name: string,
    cidr: string,
    options: { tentative?: boolean; scope?: AddressInfo["scope"] } = {},
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
    if (!options.netns) {
      const l = this.addLink(name, "bridge", mac);
      if (options.mtu) l.mtu = options.mtu;
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
    if (!options.netns) {
      const l = this.addLink(name, "veth", options.mac ? canonicalMac(options.mac) : undefined);
      l.peer = peer;
    }
    if (!options.peerNetns) {
      const p = this.addLink(peer, "veth", options.peerMac ? canonicalMac(options.peerMac) : undefined);
      p.peer = name;
    }
    const side = (mac?: string, ns?: NetnsRef) =>
      `${mac ? ` address ${canonicalMac(mac)}` : ""}${ns ? ` netns ${nsName(ns)}` : ""}`;
    this.effects.push(
      `link add ${name}${side(options.mac, options.netns)} type veth peer name ${peer}${side(options.peerMac, options.peerNetns)}`,
    );
  }

  async deleteLink(name: string): Promise<void> {
    const l = this.need("delete link", name);
    this.linkMap.delete(name);
    if (l.peer) this.linkMap.delete(l.peer);
    for (const other of this.linkMap.values()) if (other.master === l.index) other.master = undefined;
    this.addrs = this.addrs.filter((a) => a.index !== l.index);
    this.routeList = this.routeList.filter((r) => r.dev !== name);
    this.effects.push(`link del ${name}`);
    this.emit({ type: "link", action: "del", link: this.info(l) });
  }

  async setLink(name: string, change: LinkChange): Promise<void> {
    const l = this.need("set link", name);
    const parts: string[] = [];
    if (change.mtu !== undefined) {
      l.mtu = change.mtu;
      parts.push(`mtu ${change.mtu}`);
    }
    if (change.mac !== undefined) {
      l.mac = canonicalMac(change.mac);
      parts.push(`address ${l.mac}`);
    }
    if (change.master !== undefined) {
      if (change.master === null) {
        l.master = undefined;
        parts.push("nomaster");
      } else {
        const m = this.need("set master", change.master);
        if (m.kind !== "bridge")
          throw new NetlinkError("EOPNOTSUPP", "set master", name, `${m.name} is not a bridge`);
        l.master = m.index;
        parts.push(`master ${m.name}`);
      }
    }
    if (change.up !== undefined) {
      l.up = change.up;
      parts.push(change.up ? "up" : "down");
    }
    if (change.netns !== undefined) {
      this.linkMap.delete(name);
      this.addrs = this.addrs.filter((a) => a.index !== l.index);
      parts.push(`netns ${nsName(change.netns)}`);
      if (change.name) parts.push(`name ${change.name}`);
    } else if (change.name !== undefined) {
      this.exists("rename link", change.name);
      this.linkMap.delete(name);
      l.name = change.name;
      this.linkMap.set(change.name, l);
      parts.push(`name ${change.name}`);
    }
    this.effects.push(`link set ${name} ${parts.join(" ")}`);
    this.emit({ type: "link", action: change.netns ? "del" : "new", link: this.info(l) });
  }

  async setBridgePort(name: string, change: BridgePortChange): Promise<void> {
    const l = this.need("set bridge port", name);
    if (change.isolated === undefined) return;
    l.isolated = change.isolated;
    this.effects.push(`link set dev ${name} type bridge_slave isolated ${change.isolated ? "on" : "off"}`);
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
    const l = this.need("wait address", name);
    const check = (a: AddressInfo) => {
      if (a.index !== l.index || a.address !== want) return undefined;
      if (a.dadFailed)
        throw new NetlinkError("EADDRNOTAVAIL", "wait address", name, `DAD failed for ${want}`);
      return a.tentative ? undefined : a;
    };
    for (const a of this.addrs) {
      const done = check(a);
      if (done) return done;
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
          : setTimeout(
              () => finish(new NetlinkError("ETIMEDOUT", "wait address", name, `${want} not usable in time`)),
              options.timeoutMs,
            );
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
    this.need("add route", route.dev);
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
    if (ifname !== "all" && ifname !== "default") this.need(`write sysctl ${key}`, ifname);
    this.sysctls.set(`${family === 4 ? "4:" : ""}${ifname}/${key}`, String(value));
    this.effects.push(`sysctl -w net.ipv${family}.conf.${ifname}.${key}=${value}`);
  }

  close(): void {
    this.listeners.clear();
  }
}

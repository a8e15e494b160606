// The real Netlink port over rtnetlink. This is the only module in xenroam that imports the npm `netlink`
// package; everything it returns is xenroam's own types, and every kernel error leaves as a NetlinkError.

import { closeSync, openSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { canonicalMac, formatIpv6, ipv6FromBytes, ipv6ToBytes, macToBytes, parseIpv6 } from "@xenroam/core";
import type { ifla as IflaT, rt as RtT } from "netlink";
// The parts of `netlink` this adapter uses, not its index, which also loads nl80211, WireGuard and generic
// netlink (a megabyte of JavaScript): the guest agent runs in every DomU and pays for each module it loads.
import nlConstants from "netlink/dist/constants.js";
import nlRt from "netlink/dist/rt/rt.js";
import nlRtStructs from "netlink/dist/rt/structs.js";
import { NetlinkError, toNetlinkError } from "./errors.js";
import { prefixWait } from "./match.js";
import type {
  AddAddressOptions,
  AddressInfo,
  BridgeOptions,
  BridgePortChange,
  LinkChange,
  LinkInfo,
  NeighbourInfo,
  NeighbourState,
  NetEvent,
  Netlink,
  NetnsRef,
  RouteInfo,
  RouteSpec,
  VethOptions,
  WaitOptions,
} from "./port.js";

const AF_INET = 2;
const AF_BRIDGE = 7;
const AF_INET6 = 10;
const RT_TABLE_MAIN = 254;
const RTPROT_STATIC = 4;
const RTM = { NEWLINK: 16, DELLINK: 17, SETLINK: 19, NEWADDR: 20, DELADDR: 21 } as const;
const IFLA = { ADDRESS: 1, IFNAME: 3, MTU: 4, NET_NS_FD: 28, PROTINFO: 12 } as const;
const IFLA_INFO = { KIND: 1, DATA: 2 } as const;
const IFLA_BR_MCAST_SNOOPING = 23;
/** include/uapi/linux/if_link.h, enum IFLA_BRPORT_*. */
const IFLA_BRPORT = {
  LEARNING: 8,
  UNICAST_FLOOD: 9,
  MCAST_FLOOD: 27,
  BCAST_FLOOD: 30,
  ISOLATED: 33,
} as const;
const VETH_INFO_PEER = 1;
const NLA_F_NESTED = 0x8000;
/**
 * NLM_F_CREATE | NLM_F_EXCL. Nothing reads the addon until a Netlink is made: xenroam's XAPI build, which
 * never opens rtnetlink (its Dom0 cannot load the addon), replaces the `netlink` package with one that fails
 * on use (scripts/bun-bundle.mjs), and must still load this module.
 */
const createExcl = () => nlConstants.FlagsNew.CREATE | nlConstants.FlagsNew.EXCL;

const PROTOCOL_NAMES: Readonly<Record<number, string>> = { 2: "kernel", 3: "boot", 4: "static", 9: "ra" };
const SCOPE_NAMES: Readonly<Record<number, AddressInfo["scope"]>> = {
  0: "global",
  200: "site",
  253: "link",
  254: "host",
};

/** One netlink attribute, padded to 4 bytes. */
function nla(type: number, payload: Uint8Array): Buffer {
  const len = 4 + payload.length;
  const out = Buffer.alloc((len + 3) & ~3);
  out.writeUInt16LE(len, 0);
  out.writeUInt16LE(type, 2);
  Buffer.from(payload).copy(out, 4);
  return out;
}
const nlaString = (type: number, s: string) => nla(type, Buffer.from(`${s}\0`));
const nlaU32 = (type: number, v: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v);
  return nla(type, b);
};
const nlaU8 = (type: number, v: number) => nla(type, Uint8Array.of(v));

/** struct ifinfomsg: family, pad, type, index, flags, change. */
function ifinfomsg(family: number, index: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt8(family, 0);
  b.writeInt32LE(index, 4);
  return b;
}

function parseNlas(buf: Buffer): Map<number, Buffer> {
  const out = new Map<number, Buffer>();
  let off = 0;
  while (off + 4 <= buf.length) {
    const len = buf.readUInt16LE(off);
    const type = buf.readUInt16LE(off + 2) & 0x3fff;
    if (len < 4 || off + len > buf.length) break;
    out.set(type, buf.subarray(off + 4, off + len));
    off += (len + 3) & ~3;
  }
  return out;
}

function linkKind(linkinfo: Buffer | undefined): string | undefined {
  if (!linkinfo) return undefined;
  const kind = parseNlas(linkinfo).get(IFLA_INFO.KIND);
  return kind ? kind.toString("utf8").replace(/\0.*$/s, "") : undefined;
}

function toLinkInfo(m: RtT.LinkMessage): LinkInfo {
  const a = m.attrs;
  const flags = m.data.flags ?? {};
  return {
    index: m.data.index ?? 0,
    name: a.ifname ?? "",
    kind: linkKind(a.linkinfo),
    mac: a.address && a.address.length === 6 ? canonicalMac([...a.address].map(hex2).join(":")) : undefined,
    mtu: a.mtu ?? 0,
    up: flags.up === true,
    carrier: flags.lowerUp === true || (flags.running === true && a.carrier !== 0),
    operUp: flags.running === true,
    master: a.master || undefined,
  };
}
const hex2 = (b: number) => b.toString(16).padStart(2, "0");

function addrText(family: number, buf: Buffer | undefined): string {
  if (!buf) return "";
  if (family === AF_INET6) return formatIpv6(ipv6FromBytes(buf));
  return [...buf].join(".");
}

function toAddressInfo(m: RtT.AddressMessage): AddressInfo {
  const family = m.data.family === AF_INET6 ? 6 : 4;
  const flags = m.attrs.flags ?? m.data.flags ?? {};
  const scope = m.data.scope ?? 0;
  return {
    index: m.data.index ?? 0,
    family,
    address: addrText(m.data.family ?? 0, m.attrs.local ?? m.attrs.address),
    prefixLength: m.data.prefixlen ?? 0,
    scope: SCOPE_NAMES[scope] ?? scope,
    tentative: flags.tentative === true,
    dadFailed: flags.dadfailed === true,
    permanent: flags.permanent === true,
    deprecated: flags.deprecated === true,
    // IFA_F_TEMPORARY is IFA_F_SECONDARY's bit (include/uapi/linux/if_addr.h 41-42): IPv6 means temporary.
    temporary: family === 6 && flags.secondary === true,
    ...(flags.optimistic === true ? { optimistic: true } : {}),
    ...(m.attrs.cacheInfo?.tstamp !== undefined ? { refreshedCs: m.attrs.cacheInfo.tstamp } : {}),
  };
}

function neighbourState(s: RtT.NeighborState | undefined): NeighbourState {
  if (!s) return "none";
  for (const k of [
    "permanent",
    "noarp",
    "reachable",
    "stale",
    "delay",
    "probe",
    "failed",
    "incomplete",
  ] as const) {
    if (s[k]) return k;
  }
  return "none";
}

function splitCidr(
  operation: string,
  ifname: string,
  cidr: string,
): { family: number; bytes: Buffer; len: number } {
  const [addr, lenText] = cidr.split("/");
  const len = Number(lenText);
  if (!addr || lenText === undefined || !Number.isInteger(len)) {
    throw new NetlinkError("EINVAL", operation, ifname, `expected ADDRESS/LENGTH, got "${cidr}"`);
  }
  if (addr.includes(":")) {
    if (len < 0 || len > 128)
      throw new NetlinkError("EINVAL", operation, ifname, `bad prefix length in ${cidr}`);
    return { family: AF_INET6, bytes: Buffer.from(ipv6ToBytes(parseIpv6(addr))), len };
  }
  const parts = addr.split(".").map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255) || len > 32) {
    throw new NetlinkError("EINVAL", operation, ifname, `"${cidr}" is not an address with prefix length`);
  }
  return { family: AF_INET, bytes: Buffer.from(parts), len };
}

function routeDst(spec: RouteSpec): { bytes: Buffer | undefined; len: number } {
  if (spec.dst === "default") return { bytes: undefined, len: 0 };
  const { bytes, len, family } = splitCidr("route", spec.dev, spec.dst);
  if (family !== AF_INET6)
    throw new NetlinkError("EINVAL", "route", spec.dev, "only IPv6 routes are supported");
  return { bytes, len };
}

function sysctlPath(ifname: string, key: string, family: 4 | 6): string {
  if (!/^[A-Za-z0-9_.@-]{1,15}$/.test(ifname) || !/^[a-z0-9_]+$/.test(key)) {
    throw new NetlinkError("EINVAL", "sysctl", ifname, `bad interface or key "${key}"`);
  }
  return `/proc/sys/net/ipv${family}/conf/${ifname}/${key}`;
}

/** Attributes of RTM_NEWLINK for a new link: name, kind, and the optional MAC, MTU and namespace. */
function newLinkAttrs(
  name: string,
  linkinfo: Buffer,
  options: { readonly mac?: string; readonly mtu?: number },
  netnsFd: number | undefined,
): IflaT.LinkAttrs {
  return {
    ifname: name,
    linkinfo,
    ...(options.mac ? { address: Buffer.from(macToBytes(options.mac)) } : {}),
    ...(options.mtu ? { mtu: options.mtu } : {}),
    ...(netnsFd !== undefined ? { netNsFd: netnsFd } : {}),
  };
}

/** Opens a namespace reference for the duration of fn. */
function withNetnsFd<T>(ref: NetnsRef | undefined, fn: (fd: number | undefined) => Promise<T>): Promise<T> {
  if (!ref) return fn(undefined);
  if ("fd" in ref) return fn(ref.fd);
  const path = "name" in ref ? `/run/netns/${ref.name}` : ref.path;
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (err) {
    throw new NetlinkError("ENOENT", "open netns", undefined, `${path}: ${(err as Error).message}`);
  }
  return fn(fd).finally(() => closeSync(fd));
}

/**
 * node_netlink emits a receive failure on the socket as an 'error' event from inside its native callback: with
 * no listener, EventEmitter throws it there and the process aborts ("terminate called after throwing an
 * instance of 'Napi::Error'") — seen with a hundred concurrent prepares in one xenroam. The kernel says ENOBUFS
 * when a socket's receive buffer overflowed: replies may be gone, so every request still waiting fails (its
 * callback rejects its promise) rather than waiting for ever. `requests` is node_netlink's own map of them
 * (NetlinkSocket, netlink.js: `request` puts its callback there under the sequence number).
 */
function failPending(socket: unknown, err: Error): void {
  const requests = (socket as { requests?: Map<number, (e: Error | null) => void> }).requests;
  for (const callback of [...(requests?.values() ?? [])]) callback(err);
}

/**
 * One request in flight per socket. The kernel runs one dump per netlink socket at a time (a second one gets
 * EBUSY: netlink_dump_start), and node_netlink groups a multipart reply by "the messages until DONE": any other
 * reply arriving in between (an ACK, that EBUSY) cuts the dump short ("Multipart message not terminated
 * properly"). Measured here: two `links()` at once on one socket, and both failed that way. So every request
 * of this socket waits for the one before it (netlink answers each in well under a millisecond).
 */
function oneRequestAtATime(socket: object): void {
  const s = socket as { request: (...args: unknown[]) => Promise<unknown> };
  const request = s.request.bind(socket);
  let tail: Promise<unknown> = Promise.resolve();
  s.request = (...args: unknown[]) => {
    const mine = tail.then(() => request(...args));
    tail = mine.catch(() => undefined);
    return mine;
  };
}

class RtNetlink implements Netlink {
  private readonly sock = nlRt.createRtNetlink();

  constructor() {
    this.sock.socket.on("error", (err: Error) => failPending(this.sock.socket, err));
    oneRequestAtATime(this.sock.socket);
  }

  private async run<T>(operation: string, ifname: string | undefined, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw toNetlinkError(err, operation, ifname);
    }
  }

  private async indexOf(operation: string, name: string): Promise<number> {
    const link = await this.link(name);
    if (!link) throw new NetlinkError("ENODEV", operation, name, "no such interface");
    return link.index;
  }

  /**
   * A dump asked for while the same dump is under way joins it (a hundred prepares in one process asked for a
   * hundred dumps of the same hundreds of links). Safe for a caller that changed something just before: its
   * change was a request of this socket, so a dump still under way was sent after it (one request at a time).
   */
  private dumps: { links?: Promise<LinkInfo[]>; addresses?: Promise<AddressInfo[]> } = {};

  private shared<K extends keyof RtNetlink["dumps"]>(
    key: K,
    dump: () => NonNullable<RtNetlink["dumps"][K]>,
  ): NonNullable<RtNetlink["dumps"][K]> {
    const running = this.dumps[key];
    if (running) return running;
    const started = dump();
    this.dumps[key] = started;
    const done = () => {
      if (this.dumps[key] === started) delete this.dumps[key];
    };
    started.then(done, done);
    return started;
  }

  async links(): Promise<LinkInfo[]> {
    const all = await this.shared("links", () =>
      this.run("list links", undefined, async () => (await this.sock.getLinks()).map(toLinkInfo)),
    );
    return [...all];
  }

  async link(name: string): Promise<LinkInfo | undefined> {
    try {
      const [m] = await this.sock.getLink({}, { ifname: name });
      return m ? toLinkInfo(m) : undefined;
    } catch (err) {
      const e = toNetlinkError(err, "get link", name);
      if (e.code === "ENODEV") return undefined;
      throw e;
    }
  }

  async createBridge(name: string, options: BridgeOptions = {}): Promise<void> {
    const data =
      options.multicastSnooping === undefined
        ? []
        : [nla(IFLA_INFO.DATA, nlaU8(IFLA_BR_MCAST_SNOOPING, options.multicastSnooping ? 1 : 0))];
    const linkinfo = Buffer.concat([nlaString(IFLA_INFO.KIND, "bridge"), ...data]);
    await this.run("create bridge", name, () =>
      withNetnsFd(options.netns, (fd) =>
        this.sock.newLink({}, newLinkAttrs(name, linkinfo, options, fd), { flags: createExcl() }),
      ),
    );
  }

  async createVeth(name: string, peer: string, options: VethOptions = {}): Promise<void> {
    await this.run("create veth", name, () =>
      withNetnsFd(options.netns, (fd) =>
        withNetnsFd(options.peerNetns, (peerFd) => {
          const peerAttrs = Buffer.concat([
            ifinfomsg(0, 0),
            nlaString(IFLA.IFNAME, peer),
            ...(options.peerMac ? [nla(IFLA.ADDRESS, macToBytes(options.peerMac))] : []),
            ...(options.mtu ? [nlaU32(IFLA.MTU, options.mtu)] : []),
            ...(peerFd !== undefined ? [nlaU32(IFLA.NET_NS_FD, peerFd)] : []),
          ]);
          const linkinfo = Buffer.concat([
            nlaString(IFLA_INFO.KIND, "veth"),
            nla(IFLA_INFO.DATA, nla(VETH_INFO_PEER, peerAttrs)),
          ]);
          return this.sock.newLink({}, newLinkAttrs(name, linkinfo, options, fd), { flags: createExcl() });
        }),
      ),
    );
  }

  async deleteLink(name: string): Promise<void> {
    const index = await this.indexOf("delete link", name);
    await this.run("delete link", name, () => this.sock.delLink({ index }));
  }

  async setLink(name: string, change: LinkChange): Promise<void> {
    const index = await this.indexOf("set link", name);
    await this.run("set link", name, async () => {
      const attrs: IflaT.LinkAttrs = {};
      if (change.mtu !== undefined) attrs.mtu = change.mtu;
      if (change.mac !== undefined) attrs.address = Buffer.from(macToBytes(change.mac));
      if (change.master !== undefined) {
        attrs.master = change.master === null ? 0 : await this.indexOf("set master", change.master);
      }
      if (Object.keys(attrs).length > 0) await this.sock.setLink({ index }, attrs);
      if (change.up !== undefined) {
        await this.sock.setLink({ index, flags: change.up ? { up: true } : {}, change: { up: true } });
      }
      if (change.netns !== undefined) {
        await withNetnsFd(change.netns, (fd) =>
          this.sock.setLink(
            { index },
            { netNsFd: fd as number, ...(change.name ? { ifname: change.name } : {}) },
          ),
        );
      } else if (change.name !== undefined) {
        await this.sock.setLink({ index }, { ifname: change.name });
      }
    });
  }

  async setBridgePort(name: string, change: BridgePortChange): Promise<void> {
    const index = await this.indexOf("set bridge port", name);
    const flags: Array<[number, boolean | undefined]> = [
      [IFLA_BRPORT.ISOLATED, change.isolated],
      [IFLA_BRPORT.LEARNING, change.learning],
      [IFLA_BRPORT.UNICAST_FLOOD, change.unicastFlood],
      [IFLA_BRPORT.MCAST_FLOOD, change.multicastFlood],
      [IFLA_BRPORT.BCAST_FLOOD, change.broadcastFlood],
    ];
    const attrs = flags.flatMap(([type, on]) => (on === undefined ? [] : [nlaU8(type, on ? 1 : 0)]));
    if (attrs.length === 0) return;
    const protinfo = nla(IFLA.PROTINFO | NLA_F_NESTED, Buffer.concat(attrs));
    await this.run("set bridge port", name, () =>
      this.sock.request(RTM.SETLINK, [ifinfomsg(AF_BRIDGE, index), protinfo]),
    );
  }

  async addresses(name?: string): Promise<AddressInfo[]> {
    const index = name === undefined ? undefined : await this.indexOf("list addresses", name);
    const all = await this.shared("addresses", () =>
      this.run("list addresses", undefined, async () => (await this.sock.getAddresses()).map(toAddressInfo)),
    );
    return all.filter((a) => index === undefined || a.index === index);
  }

  async addAddress(name: string, cidr: string, options: AddAddressOptions = {}): Promise<void> {
    const { family, bytes, len } = splitCidr("add address", name, cidr);
    const index = await this.indexOf("add address", name);
    const flags: RtT.AddressFlags = {};
    if (options.nodad) flags.nodad = true;
    if (options.noPrefixRoute) flags.noprefixroute = true;
    await this.run("add address", name, () =>
      this.sock.newAddress(
        { family, prefixlen: len, index },
        { address: bytes, local: bytes, flags },
        { flags: createExcl() },
      ),
    );
  }

  async deleteAddress(name: string, cidr: string): Promise<void> {
    const { family, bytes, len } = splitCidr("delete address", name, cidr);
    const index = await this.indexOf("delete address", name);
    await this.run("delete address", name, () =>
      this.sock.delAddress({ family, prefixlen: len, index }, { address: bytes, local: bytes }),
    );
  }

  async waitAddress(name: string, address: string, options: WaitOptions = {}): Promise<AddressInfo> {
    const want = formatIpv6(parseIpv6(address));
    return this.waitFor("wait address", name, options, want, (a) => {
      if (a.address !== want) return undefined;
      if (a.dadFailed)
        throw new NetlinkError("EADDRNOTAVAIL", "wait address", name, `DAD failed for ${want}`);
      return a.tentative ? undefined : a;
    });
  }

  async waitAddressIn(name: string, prefix: string, options: WaitOptions = {}): Promise<AddressInfo> {
    const { pick, what } = prefixWait("wait address", name, prefix);
    return this.waitFor("wait address", name, options, what, pick);
  }

  /** The first address of a link that `pick` takes, now or from RTM_NEWADDR events, by the deadline. */
  private async waitFor(
    op: string,
    name: string,
    options: WaitOptions,
    what: string | (() => string),
    pick: (a: AddressInfo) => AddressInfo | undefined,
  ): Promise<AddressInfo> {
    const controller = new AbortController();
    const timer =
      options.timeoutMs === undefined ? undefined : setTimeout(() => controller.abort(), options.timeoutMs);
    const onAbort = () => controller.abort();
    options.signal?.addEventListener("abort", onAbort, { once: true });
    // Subscribe before looking, so an RTM_NEWADDR between the look and the wait is not lost.
    const events = this.events({ signal: controller.signal })[Symbol.asyncIterator]();
    try {
      const index = await this.indexOf(op, name);
      const verdict = (a: AddressInfo) => (a.index === index ? pick(a) : undefined);
      for (const a of await this.addresses(name)) {
        const done = verdict(a);
        if (done) return done;
      }
      for (;;) {
        const next = await events.next();
        if (next.done) {
          const wanted = typeof what === "string" ? what : what();
          throw new NetlinkError(
            "ETIMEDOUT",
            op,
            name,
            `${wanted} not usable within ${options.timeoutMs ?? "?"} ms`,
          );
        }
        const ev = next.value;
        if (ev.type === "address" && ev.action === "new") {
          const done = verdict(ev.address);
          if (done) return done;
        } else if (ev.type === "overflow") {
          // Events were lost: the address may have come meanwhile.
          for (const a of await this.addresses(name)) {
            const done = verdict(a);
            if (done) return done;
          }
        }
      }
    } finally {
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
      controller.abort();
      await events.return?.();
    }
  }

  async routes(filter: { table?: number; dev?: string } = {}): Promise<RouteInfo[]> {
    const table = filter.table ?? RT_TABLE_MAIN;
    const names = new Map((await this.links()).map((l) => [l.index, l.name]));
    const msgs = await this.run("list routes", filter.dev, () => this.sock.getRoutes({ family: AF_INET6 }));
    return msgs
      .map((m): RouteInfo => {
        const t = m.attrs.table ?? m.data.table ?? 0;
        const proto =
          typeof m.data.protocol === "number"
            ? m.data.protocol
            : nlRtStructs.RouteProtocol[m.data.protocol ?? 0];
        const dstLen = m.data.dstLen ?? 0;
        return {
          dst: dstLen === 0 ? "default" : `${addrText(AF_INET6, m.attrs.dst)}/${dstLen}`,
          dev: m.attrs.oif === undefined ? undefined : names.get(m.attrs.oif),
          gateway: m.attrs.gateway ? addrText(AF_INET6, m.attrs.gateway) : undefined,
          ...(m.attrs.prefsrc ? { prefsrc: addrText(AF_INET6, m.attrs.prefsrc) } : {}),
          metric: m.attrs.priority ?? 0,
          table: t,
          protocol: PROTOCOL_NAMES[proto as number] ?? String(proto),
        };
      })
      .filter((r) => r.table === table && (filter.dev === undefined || r.dev === filter.dev));
  }

  private async routeMessage(operation: string, spec: RouteSpec) {
    const { bytes, len } = routeDst(spec);
    const oif = await this.indexOf(operation, spec.dev);
    const table = spec.table ?? RT_TABLE_MAIN;
    const data: RtT.Route = {
      family: AF_INET6,
      dstLen: len,
      table: table < 256 ? table : 0,
      protocol: RTPROT_STATIC,
      scope: 0,
      type: 1,
    };
    const attrs: RtT.RouteAttrs = { oif, table, priority: spec.metric ?? 1024 };
    if (bytes) attrs.dst = bytes;
    if (spec.gateway) attrs.gateway = Buffer.from(ipv6ToBytes(parseIpv6(spec.gateway)));
    if (spec.prefsrc) attrs.prefsrc = Buffer.from(ipv6ToBytes(parseIpv6(spec.prefsrc)));
    return { data, attrs };
  }

  async addRoute(route: RouteSpec): Promise<void> {
    const { data, attrs } = await this.routeMessage("add route", route);
    await this.run("add route", route.dev, () => this.sock.newRoute(data, attrs, { flags: createExcl() }));
  }

  async deleteRoute(route: RouteSpec): Promise<void> {
    const { data, attrs } = await this.routeMessage("delete route", route);
    await this.run("delete route", route.dev, () =>
      this.sock.delRoute({ ...data, protocol: undefined }, attrs),
    );
  }

  async neighbours(dev?: string): Promise<NeighbourInfo[]> {
    const names = new Map((await this.links()).map((l) => [l.index, l.name]));
    const msgs = await this.run("list neighbours", dev, () => this.sock.getNeighbors({ family: AF_INET6 }));
    return msgs
      .filter((m) => m.attrs.dst)
      .map((m): NeighbourInfo => ({
        dev: names.get(m.data.ifindex ?? 0),
        index: m.data.ifindex ?? 0,
        address: addrText(AF_INET6, m.attrs.dst),
        mac: m.attrs.lladdr?.length === 6 ? [...m.attrs.lladdr].map(hex2).join(":") : undefined,
        state: neighbourState(m.data.state),
        router: m.data.flags?.router === true,
        ...(m.attrs.cacheInfo?.updated !== undefined ? { updatedAgoCs: m.attrs.cacheInfo.updated } : {}),
      }))
      .filter((n) => dev === undefined || n.dev === dev);
  }

  async flushNeighbours(dev: string): Promise<void> {
    for (const n of await this.neighbours(dev)) {
      if (n.state === "permanent" || n.state === "noarp") continue;
      await this.run("flush neighbours", dev, async () => {
        try {
          await this.sock.delNeighbor(
            { family: AF_INET6, ifindex: n.index },
            { dst: Buffer.from(ipv6ToBytes(parseIpv6(n.address))) },
          );
        } catch (err) {
          if (toNetlinkError(err, "", "").code !== "ENOENT") throw err;
        }
      });
    }
  }

  events(options: { signal?: AbortSignal } = {}): AsyncIterable<NetEvent> {
    const signal = options.signal;
    return {
      [Symbol.asyncIterator]: () => {
        const sock = nlRt.createRtNetlink({ ref: true, recvBufferSize: 1 << 20, sendBufferSize: 1 << 16 });
        sock.addMembership("LINK");
        sock.addMembership("IPV6_IFADDR");
        sock.addMembership("IPV4_IFADDR");
        const queue: NetEvent[] = [];
        let wake: (() => void) | undefined;
        let closed = false;
        const close = () => {
          if (closed) return;
          closed = true;
          sock.socket.close();
          wake?.();
        };
        // A receive failure — ENOBUFS, events lost because they came faster than they were read — is said as an
        // "overflow" event: whoever waits re-reads what it waits for (and the process does not abort, above).
        sock.socket.on("error", () => {
          queue.push({ type: "overflow" });
          wake?.();
        });
        sock.socket.on("message", (msgs) => {
          for (const m of msgs) {
            if (m.type === RTM.NEWLINK || m.type === RTM.DELLINK) {
              const link = toLinkInfo(nlRtStructs.parseLinkMessage(m.data));
              queue.push({ type: "link", action: m.type === RTM.NEWLINK ? "new" : "del", link });
            } else if (m.type === RTM.NEWADDR || m.type === RTM.DELADDR) {
              const address = toAddressInfo(nlRtStructs.parseAddressMessage(m.data));
              queue.push({ type: "address", action: m.type === RTM.NEWADDR ? "new" : "del", address });
            }
          }
          wake?.();
        });
        if (signal?.aborted) close();
        signal?.addEventListener("abort", close, { once: true });
        return {
          next: async (): Promise<IteratorResult<NetEvent>> => {
            for (;;) {
              const ev = queue.shift();
              if (ev) return { done: false, value: ev };
              if (closed) return { done: true, value: undefined };
              await new Promise<void>((resolve) => {
                wake = resolve;
              });
              wake = undefined;
            }
          },
          return: async (): Promise<IteratorResult<NetEvent>> => {
            signal?.removeEventListener("abort", close);
            close();
            return { done: true, value: undefined };
          },
        };
      },
    };
  }

  async readSysctl(ifname: string, key: string, family: 4 | 6 = 6): Promise<string> {
    const path = sysctlPath(ifname, key, family);
    try {
      return (await readFile(path, "utf8")).trim();
    } catch (err) {
      throw toNetlinkError(err, `read sysctl ${key}`, ifname);
    }
  }

  async writeSysctl(ifname: string, key: string, value: string | number, family: 4 | 6 = 6): Promise<void> {
    const path = sysctlPath(ifname, key, family);
    try {
      // No trailing newline: older kernels (6.1) answer a per-interface ignore_routes_with_linkdown write with
      // a short count, and the "\n" left over would then be written alone and refused (EINVAL).
      await writeFile(path, String(value));
    } catch (err) {
      throw toNetlinkError(err, `write sysctl ${key}=${value}`, ifname);
    }
  }

  close(): void {
    this.sock.socket.close();
  }
}

/** Opens rtnetlink in the calling process's network namespace. */
export function createNetlink(): Netlink {
  return new RtNetlink();
}

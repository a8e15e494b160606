// The Netlink port: what xenroam asks of the kernel's network configuration, in xenroam's own terms.
// createNetlink() (rtnetlink.ts) is the real one; FakeNetlink (fake.ts) records effects as `ip`-style text.

/** A network namespace to move a link into or create it in: by name (/run/netns/NAME), path, or open fd. */
export type NetnsRef = { readonly name: string } | { readonly path: string } | { readonly fd: number };

export interface LinkInfo {
  readonly index: number;
  readonly name: string;
  /** rtnetlink kind: "bridge", "veth", … ; undefined for physical or loopback. */
  readonly kind: string | undefined;
  readonly mac: string | undefined;
  readonly mtu: number;
  /** Administratively up (IFF_UP). */
  readonly up: boolean;
  /** Carrier present (IFF_LOWER_UP / RUNNING). */
  readonly carrier: boolean;
  /**
   * Operationally up (IFF_RUNNING): linkwatch has taken the carrier in (net/core/link_watch.c linkwatch_do_dev:
   * rfc2863_policy, then dev_activate), so the device's queue transmits. Until then a packet sent out of it
   * goes to the noop qdisc and is dropped, carrier or not. The kernel sets it asynchronously, after `carrier`.
   */
  readonly operUp: boolean;
  /** Index of the master (bridge) this link is enslaved to. */
  readonly master: number | undefined;
}

export interface AddressInfo {
  readonly index: number;
  readonly family: 4 | 6;
  /** Canonical address text, without prefix length. */
  readonly address: string;
  readonly prefixLength: number;
  readonly scope: "global" | "link" | "host" | "site" | number;
  readonly tentative: boolean;
  readonly dadFailed: boolean;
  readonly permanent: boolean;
  readonly deprecated: boolean;
  /**
   * Optimistic DAD (RFC 4429, IFA_F_OPTIMISTIC): usable while its DAD still runs (the kernel reports it
   * tentative too).
   */
  readonly optimistic?: boolean;
  /** A privacy extension address (RFC 8981, IFA_F_TEMPORARY): never a locator. */
  readonly temporary: boolean;
  /**
   * When the kernel last set its lifetimes, in hundredths of a second since boot (IFA_CACHEINFO tstamp): an
   * address made by SLAAC is refreshed by every RA that carries its prefix, so the newest one tells which
   * router the link hears now. Undefined where the kernel did not say.
   */
  readonly refreshedCs?: number;
}

export interface AddAddressOptions {
  /** Skip duplicate address detection (IFA_F_NODAD). */
  readonly nodad?: boolean;
  /** Do not install the on-link prefix route (IFA_F_NOPREFIXROUTE). */
  readonly noPrefixRoute?: boolean;
}

export interface RouteSpec {
  /** "default" or a prefix "2001:db8:b::/64". */
  readonly dst: string;
  readonly dev: string;
  readonly gateway?: string;
  readonly metric?: number;
  /** Routing table id; main (254) when omitted. */
  readonly table?: number;
  /** Preferred source address for traffic that takes this route (must be local). */
  readonly prefsrc?: string;
}

export interface RouteInfo {
  readonly dst: string;
  readonly dev: string | undefined;
  readonly gateway: string | undefined;
  readonly prefsrc?: string | undefined;
  readonly metric: number;
  readonly table: number;
  /** "kernel", "boot", "static", "ra", or the numeric protocol. */
  readonly protocol: string;
}

export type NeighbourState =
  "incomplete" | "reachable" | "stale" | "delay" | "probe" | "failed" | "noarp" | "permanent" | "none";

export interface NeighbourInfo {
  readonly dev: string | undefined;
  readonly index: number;
  readonly address: string;
  readonly mac: string | undefined;
  readonly state: NeighbourState;
  readonly router: boolean;
  /** How long ago the entry was last updated, in hundredths of a second (NDA_CACHEINFO ndm_updated). */
  readonly updatedAgoCs?: number;
}

export interface BridgeOptions {
  readonly mac?: string;
  readonly mtu?: number;
  /** IGMP/MLD snooping; off makes multicast (RA, NS) flood every port, as xenroam's staging bridges want. */
  readonly multicastSnooping?: boolean;
  readonly netns?: NetnsRef;
}

export interface VethOptions {
  readonly mac?: string;
  readonly peerMac?: string;
  readonly mtu?: number;
  /** Create this end directly in another namespace. */
  readonly netns?: NetnsRef;
  /** Create the peer directly in another namespace. */
  readonly peerNetns?: NetnsRef;
}

export interface LinkChange {
  readonly up?: boolean;
  readonly mtu?: number;
  readonly mac?: string;
  /** Bridge to enslave to; null releases the link from its master. */
  readonly master?: string | null;
  /** Move the link to another network namespace. */
  readonly netns?: NetnsRef;
  /** New name; with netns, the name it takes in the target namespace (`ip link set X netns N name Y`). */
  readonly name?: string;
}

export interface BridgePortChange {
  /** Port isolation: isolated ports cannot talk to each other, only to non-isolated ports. */
  readonly isolated?: boolean;
  /** Whether the bridge learns source MACs seen on this port (IFLA_BRPORT_LEARNING). */
  readonly learning?: boolean;
  /** Whether unknown unicast is flooded to this port (IFLA_BRPORT_UNICAST_FLOOD). */
  readonly unicastFlood?: boolean;
  /** Whether multicast without a known listener is flooded to this port (IFLA_BRPORT_MCAST_FLOOD). */
  readonly multicastFlood?: boolean;
  /** Whether broadcast is flooded to this port (IFLA_BRPORT_BCAST_FLOOD). */
  readonly broadcastFlood?: boolean;
}

export type NetEvent =
  | { readonly type: "link"; readonly action: "new" | "del"; readonly link: LinkInfo }
  | { readonly type: "address"; readonly action: "new" | "del"; readonly address: AddressInfo }
  /**
   * Events were lost (the kernel's ENOBUFS: they came faster than they were read): whatever the listener
   * follows must be read again.
   */
  | { readonly type: "overflow" };

export interface WaitOptions {
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
}

export interface Netlink {
  links(): Promise<LinkInfo[]>;
  /** The link, or undefined when there is none of that name. */
  link(name: string): Promise<LinkInfo | undefined>;
  createBridge(name: string, options?: BridgeOptions): Promise<void>;
  createVeth(name: string, peer: string, options?: VethOptions): Promise<void>;
  deleteLink(name: string): Promise<void>;
  setLink(name: string, change: LinkChange): Promise<void>;
  setBridgePort(name: string, change: BridgePortChange): Promise<void>;

  /** Addresses, of one link or of all. */
  addresses(name?: string): Promise<AddressInfo[]>;
  /** Adds "ADDR/LEN" to a link. */
  addAddress(name: string, cidr: string, options?: AddAddressOptions): Promise<void>;
  deleteAddress(name: string, cidr: string): Promise<void>;
  /**
   * Resolves once the address exists on the link and is no longer tentative, as reported by RTM_NEWADDR
   * events; rejects with a NetlinkError (EADDRNOTAVAIL) when DAD fails, (ETIMEDOUT) at the deadline.
   */
  waitAddress(name: string, address: string, options?: WaitOptions): Promise<AddressInfo>;
  /**
   * Resolves with the address the kernel itself made inside `prefix` ("2001:db8:b::/64") on the link, once it is
   * usable: global, not tentative, not deprecated, not temporary — whatever its interface identifier (EUI-64,
   * stable-privacy, random: `addr_gen_mode` 0-3). Rejects with ETIMEDOUT at the deadline (naming the addresses
   * that were there but not usable, a failed DAD among them).
   */
  waitAddressIn(name: string, prefix: string, options?: WaitOptions): Promise<AddressInfo>;

  routes(filter?: { readonly table?: number; readonly dev?: string }): Promise<RouteInfo[]>;
  addRoute(route: RouteSpec): Promise<void>;
  deleteRoute(route: RouteSpec): Promise<void>;

  neighbours(dev?: string): Promise<NeighbourInfo[]>;
  /** Removes every non-permanent IPv6 neighbour entry of a link (`ip -6 neigh flush dev X`). */
  flushNeighbours(dev: string): Promise<void>;

  /** Link and address changes as they happen. Ends when the signal aborts or the iterator returns. */
  events(options?: { readonly signal?: AbortSignal }): AsyncIterable<NetEvent>;

  /** /proc/sys/net/ipv6/conf/<ifname>/<key> (or ipv4 with family 4); "all" and "default" are accepted. */
  readSysctl(ifname: string, key: string, family?: 4 | 6): Promise<string>;
  writeSysctl(ifname: string, key: string, value: string | number, family?: 4 | 6): Promise<void>;

  close(): void;
}

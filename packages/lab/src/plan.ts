// What `xenroam-lab up` builds, as data: namespaces, veth pairs between them, the network operations each
// namespace applies through the Netlink port, and the services the supervisor runs. Pure.

import { createHash } from "node:crypto";
import { formatIpv6, parsePrefix, type RadvdInterface, slaacAddress } from "@xenroam/core";
import { applyOps, type LinkChange, type NetOp } from "@xenroam/netlink";
import { routerAddress } from "./addresses.js";

export { applyOps, type NetOp };
import { labVms, type Topology, type Vm } from "./topology.js";

export type Role = "router" | "correspondent" | "host" | "vm";

export interface NamespacePlan {
  readonly node: string;
  readonly role: Role;
  readonly netns: string;
  readonly ops: readonly NetOp[];
}

export interface VethPlan {
  readonly name: string;
  readonly netns: string;
  readonly peer: string;
  readonly peerNetns: string;
  readonly mac?: string;
  readonly peerMac?: string;
  /** Both ends' MTU, the topology's. */
  readonly mtu: number;
}

export interface ServicePlan {
  /** Unique, stable name: "radvd", "xenstored-hosta". */
  readonly name: string;
  readonly netns: string;
  readonly kind: "radvd" | "xenstored";
}

export interface XenstoredPlan {
  readonly host: string;
  readonly netns: string;
  /** File names inside the state directory. */
  readonly dom0Socket: string;
  readonly guests: ReadonlyArray<{ readonly domid: number; readonly socket: string }>;
}

export interface LabPlan {
  readonly namespaces: readonly NamespacePlan[];
  readonly veths: readonly VethPlan[];
  readonly radvd: { readonly netns: string; readonly interfaces: readonly RadvdInterface[] };
  readonly xenstored: readonly XenstoredPlan[];
  /** Every VM, the topology's `vm` first. */
  readonly vms: readonly VmPlan[];
}

export interface VmPlan {
  readonly name: string;
  /** The host it starts on, whose xenstored gets `xenstore`. */
  readonly host: string;
  /** Brought up last, once radvd runs, so the VM's first router solicitation is answered. */
  readonly primary: {
    readonly netns: string;
    readonly ifname: string;
    /** The site's prefix the primary takes its address in at lab up. */
    readonly prefix: string;
    /** Its EUI-64 address there: the address itself only with addrGenMode 0 (lab up reads the real one). */
    readonly expectedAddress: string;
  };
  /** What the toolstack writes for the domain in its host's xenstore. */
  readonly xenstore: Readonly<Record<string, string>>;
}

/** Xen's netback gives every vif this MAC on the Dom0 side. */
export const XEN_VIF_MAC = "fe:ff:ff:ff:ff:ff";

export const netnsName = (t: Topology, node: string) => `${t.name}-${node}`;
export const lanBridge = (segment: string) => `lan-${segment}`;
export const routerPort = (node: string) => `p-${node}`;
export const vifName = (domid: number, devid: number) => `vif${domid}.${devid}`;
export const dom0SocketFile = (host: string) => `xs-${host}.sock`;
export const guestSocketFile = (vm: string) => `xenbus-${vm}.sock`;

/** The VM's stable_secret (an IPv6-formatted 128-bit value, as the kernel takes it), fixed per VM name. */
export function stableSecretOf(vm: string): string {
  const h = createHash("sha256").update(`xenroam-lab stable_secret ${vm}`).digest();
  const words = Array.from({ length: 8 }, (_, i) => h.readUInt16BE(i * 2).toString(16));
  return words.join(":");
}

const sysctl = (ifname: string, key: string, value: string | number): NetOp => ({
  op: "writeSysctl",
  ifname,
  key,
  value,
});
const up = (name: string, extra: LinkChange = {}): NetOp => ({
  op: "setLink",
  name,
  change: { ...extra, up: true },
});
/** A pure layer-2 port: no IPv6 of its own (no link-local, no DAD, no RS), like Xen's vifs and peths. */
const l2Port = (name: string, master: string): NetOp[] => [
  sysctl(name, "disable_ipv6", 1),
  up(name, { master }),
];

export function planLab(t: Topology): LabPlan {
  const ns = (node: string) => netnsName(t, node);
  const router = ns(t.router.name);
  const segments = [
    ...t.sites.map((s) => ({ name: s.name, prefix: s.prefix, gateway: s.gateway })),
    { name: t.correspondent.name, prefix: t.correspondent.prefix, gateway: t.correspondent.gateway },
  ];
  const siteOf = (hostName: string) => {
    const host = t.hosts.find((h) => h.name === hostName);
    const site = t.sites.find((s) => s.name === host?.site);
    if (!host || !site) throw new Error(`topology was not validated: host ${hostName}`);
    return { host, site };
  };

  // The topology's MTU on every link: on each veth, both ends (the VM's interfaces, the vifs, the hosts' uplinks,
  // the router's ports), and on each bridge. A bridge's own MTU given at creation lasts only until a port joins:
  // from then on the kernel gives it the smallest of its ports' (br_mtu_auto_adjust), so the ports carry it too.
  const mtu = t.mtu;
  const veths: VethPlan[] = [
    {
      name: routerPort(t.correspondent.name),
      netns: router,
      peer: "eth0",
      peerNetns: ns(t.correspondent.name),
      mtu,
    },
    ...t.hosts.map((h) => ({
      name: routerPort(h.name),
      netns: router,
      peer: "peth0",
      peerNetns: ns(h.name),
      mtu,
    })),
    ...labVms(t).flatMap((vm) =>
      [vm.primaryMac, vm.secondaryMac].map((mac, devid) => ({
        name: vifName(vm.domid, devid),
        netns: ns(vm.host),
        mac: XEN_VIF_MAC,
        peer: `eth${devid}`,
        peerNetns: ns(vm.name),
        peerMac: mac,
        mtu,
      })),
    ),
  ];

  const routerOps: NetOp[] = [up("lo"), sysctl("all", "forwarding", 1), sysctl("default", "forwarding", 1)];
  for (const seg of segments) {
    const br = lanBridge(seg.name);
    routerOps.push(
      {
        op: "createBridge",
        name: br,
        options: { mac: seg.gateway.mac, mtu: t.mtu, multicastSnooping: false },
      },
      // Only the gateway's configured link-local, so RAs and NAs come from exactly the address guests learn.
      sysctl(br, "addr_gen_mode", 1),
      sysctl(br, "accept_dad", 0),
      up(br),
      { op: "addAddress", name: br, cidr: `${seg.gateway.linkLocal}/64`, options: { nodad: true } },
      { op: "addAddress", name: br, cidr: `${routerAddress(seg.prefix)}/64`, options: { nodad: true } },
    );
  }
  routerOps.push(...l2Port(routerPort(t.correspondent.name), lanBridge(t.correspondent.name)));
  for (const h of t.hosts) routerOps.push(...l2Port(routerPort(h.name), lanBridge(h.site)));

  const cnOps: NetOp[] = [
    up("lo"),
    sysctl("eth0", "accept_ra", 0),
    up("eth0", { mtu: t.mtu }),
    { op: "addAddress", name: "eth0", cidr: `${t.correspondent.address}/64`, options: { nodad: true } },
    { op: "addRoute", route: { dst: "default", gateway: t.correspondent.gateway.linkLocal, dev: "eth0" } },
  ];

  const hostPlans: NamespacePlan[] = t.hosts.map((h) => {
    const { site } = siteOf(h.name);
    const { real, parking } = t.bridges;
    const ops: NetOp[] = [
      up("lo"),
      { op: "createBridge", name: real, options: { mtu: t.mtu, multicastSnooping: false } },
      { op: "createBridge", name: parking, options: { mtu: t.mtu, multicastSnooping: false } },
      sysctl(real, "accept_ra", 0),
      sysctl(parking, "disable_ipv6", 1),
      ...l2Port("peth0", real),
    ];
    for (const vm of labVms(t).filter((v) => v.host === h.name)) {
      ops.push(...l2Port(vifName(vm.domid, 0), real), ...l2Port(vifName(vm.domid, 1), parking));
    }
    ops.push(
      up(real),
      up(parking),
      { op: "addAddress", name: real, cidr: `${h.address}/64`, options: { nodad: true } },
      { op: "addRoute", route: { dst: "default", gateway: site.gateway.linkLocal, dev: real } },
    );
    return { node: h.name, role: "host", netns: ns(h.name), ops };
  });

  // The VM: primary takes its address by SLAAC from the site's RAs; the secondary waits, down.
  // Its address mode as the topology says, on both interfaces before either has an address: a stable_secret
  // first (the kernel refuses stable-privacy without one; writing it selects that mode), then the mode.
  const vmOps = (vm: Vm): NetOp[] => {
    const addressing = (dev: string): NetOp[] => [
      ...(vm.addrGenMode === 2 ? [sysctl(dev, "stable_secret", stableSecretOf(vm.name))] : []),
      sysctl(dev, "addr_gen_mode", vm.addrGenMode),
      sysctl(dev, "use_tempaddr", vm.useTempaddr),
    ];
    return [
      up("lo"),
      sysctl("eth0", "accept_ra", 1),
      sysctl("eth0", "autoconf", 1),
      ...addressing("eth0"),
      ...addressing("eth1"),
      { op: "setLink", name: "eth1", change: { up: false } },
    ];
  };

  const xenstored: XenstoredPlan[] = t.hosts.map((h) => ({
    host: h.name,
    netns: ns(h.name),
    dom0Socket: dom0SocketFile(h.name),
    guests: labVms(t)
      .filter((v) => v.host === h.name)
      .map((v) => ({ domid: v.domid, socket: guestSocketFile(v.name) })),
  }));

  const vms: VmPlan[] = labVms(t).map((vm) => {
    const { site } = siteOf(vm.host);
    const dom = `/local/domain/${vm.domid}`;
    return {
      name: vm.name,
      host: vm.host,
      primary: {
        netns: ns(vm.name),
        ifname: "eth0",
        prefix: site.prefix,
        expectedAddress: formatIpv6(slaacAddress(parsePrefix(site.prefix), vm.primaryMac)),
      },
      xenstore: {
        [`${dom}/name`]: vm.name,
        [`${dom}/domid`]: String(vm.domid),
        [`${dom}/device/vif/0/mac`]: vm.primaryMac,
        [`${dom}/device/vif/1/mac`]: vm.secondaryMac,
      },
    };
  });

  return {
    namespaces: [
      { node: t.router.name, role: "router", netns: router, ops: routerOps },
      { node: t.correspondent.name, role: "correspondent", netns: ns(t.correspondent.name), ops: cnOps },
      ...hostPlans,
      ...labVms(t).map((vm) => ({ node: vm.name, role: "vm" as const, netns: ns(vm.name), ops: vmOps(vm) })),
    ],
    veths,
    radvd: {
      netns: router,
      interfaces: t.sites.map((s) => ({
        ifname: lanBridge(s.name),
        prefix: s.prefix,
        minIntervalMs: s.ra.minIntervalMs,
        maxIntervalMs: s.ra.maxIntervalMs,
        sourceLinkLocal: s.gateway.linkLocal,
        mtu: s.advertise?.mtu ?? t.mtu,
        ...(s.advertise?.rdnss ? { rdnss: s.advertise.rdnss } : {}),
        ...(s.advertise?.dnssl ? { dnssl: s.advertise.dnssl } : {}),
      })),
    },
    xenstored,
    vms,
  };
}

/** Every namespace the plan creates, in creation order. */
export function plannedNamespaces(plan: LabPlan): string[] {
  return plan.namespaces.map((n) => n.netns);
}

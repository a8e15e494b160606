// Plans for staging bridges (step 1): one per destination site, shared by every VM headed there. The bridge
// impersonates that site's gateway — its link-local address and its MAC — and radvd on it advertises the
// site's prefix. Ports are isolated so guests never see each other's preparation. Pure.

import type { RadvdInterface } from "@xenroam/core";
import type { NetOp } from "@xenroam/netlink";
import type { Site } from "@xenroam/protocol";

export const stagingBridge = (site: string) => `xr-${site}`;

export function planStagingBridge(site: Site, mtu?: number): NetOp[] {
  const br = stagingBridge(site.name);
  return [
    {
      op: "createBridge",
      name: br,
      options: { mac: site.gateway.mac, multicastSnooping: false, ...(mtu ? { mtu } : {}) },
    },
    // Only the gateway's link-local: RAs must come from exactly the address the guest will keep using.
    { op: "writeSysctl", ifname: br, key: "addr_gen_mode", value: 1 },
    { op: "writeSysctl", ifname: br, key: "accept_dad", value: 0 },
    { op: "writeSysctl", ifname: br, key: "accept_ra", value: 0 },
    { op: "setLink", name: br, change: { up: true } },
    { op: "addAddress", name: br, cidr: `${site.gateway.linkLocal}/64`, options: { nodad: true } },
  ];
}

export function planAttach(vif: string, bridge: string): NetOp[] {
  return [
    { op: "setLink", name: vif, change: { master: bridge, up: true } },
    { op: "setBridgePort", name: vif, change: { isolated: true } },
  ];
}

export function planDetach(vif: string, parking: string): NetOp[] {
  return [{ op: "setLink", name: vif, change: { master: parking } }];
}

export function radvdFor(site: Site, bridge: string = stagingBridge(site.name)): RadvdInterface {
  return {
    ifname: bridge,
    prefix: site.prefix,
    minIntervalMs: site.ra.minIntervalMs,
    maxIntervalMs: site.ra.maxIntervalMs,
    sourceLinkLocal: site.gateway.linkLocal,
    // "Not a default router": the secondary takes only the prefix (and the MTU and DNS below) from the
    // staging RA; its route via the gateway is the agent's own, at a metric that never competes with the
    // primary's. A guest whose network manager handles RAs itself on the vif being staged (systemd-networkd
    // and NetworkManager do, with the kernel's accept_ra off) would otherwise add a default route via the
    // staging bridge at that manager's metric (1024 and 100), ahead of the primary's: measured in the lab with
    // systemd-networkd 252 managing the vif staged on the way back, the VM's replies went to the staging
    // bridge until the switch.
    defaultLifetimeS: 0,
    // The RAs carry the gateway's MAC (radvd's default): the guest knows it before it moves, so its first
    // packet after resume needs no neighbour solicitation (see the agent's prepare for what that cost).
    // What the site's own RAs carry, so the new primary is right from the first instant after the switch.
    ...(site.advertise?.mtu !== undefined ? { mtu: site.advertise.mtu } : {}),
    ...(site.advertise?.rdnss ? { rdnss: site.advertise.rdnss } : {}),
    ...(site.advertise?.dnssl ? { dnssl: site.advertise.dnssl } : {}),
    // The guest keeps them until the site's own RAs take over (minutes apart with common radvd settings).
    ...(site.advertise?.rdnss || site.advertise?.dnssl ? { dnsLifetimeS: STAGING_DNS_LIFETIME_S } : {}),
  };
}

/**
 * How long a guest may use the DNS servers the staging RA gave it without another RA (s): long enough for the
 * site's own RAs to take over (radvd's longest default interval is 600 s), short enough that after an abort
 * the other site's servers do not linger for long.
 */
export const STAGING_DNS_LIFETIME_S = 600;

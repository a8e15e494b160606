// Staging on XAPI hosts (XCP-ng 8.x, XenServer 8): the staging bridge is a XAPI internal network, so XAPI
// itself attaches the secondary VIF there (VIF.move) and knows where every VIF is; xenroam adds only the
// gateway's MAC and link-local on Dom0's end of that bridge, and radvd.
//
// Read at xapi-project/xen-api e2ee48d6 (v26.17.0):
// - network.create takes the bridge name (ocaml/xapi/xapi_network.ml 254-270: not starting with xen, xapi,
//   vif, tap or eth, at most 15 characters): the staging network's bridge is named xr-<site> in every pool, as
//   on xl, and the cross-pool vif_map finds a network by its bridge (adapters/xapi.ts).
// - an internal network's bridge is made on a host lazily, by network.attach among others
//   (xapi_network.ml 34-48, 88-142, 160-161, 364-374), with no MAC and no IPv6 (networkd's Bridge.create,
//   ocaml/networkd/bin/network_server.ml 1088-1254); XAPI may destroy it when its last VIF leaves the host
//   (xapi_network.ml 176-211), so `ensure` re-applies the gateway's identity every time.
// - VIF.move re-bridges a running VM's vif in Dom0 without the guest seeing an unplug (xapi_vif.ml 67-101,
//   xenopsd's vif-real `move`).
// - on Open vSwitch (the default backend: /etc/xensource/network.conf) a bridge's MAC set with `ip link` does
//   not stick: ovs-vswitchd picks the bridge's address on each reconfiguration unless other-config:hwaddr is
//   set (Open vSwitch vswitchd/bridge.c, bridge_pick_local_hw_addr); a Linux bridge keeps a MAC set by hand
//   (net/bridge/br_stp_if.c, br_stp_recalculate_bridge_id).
// Guests preparing for one site share its staging network; unlike the Linux bridge of xl hosts, its ports are
// not isolated from each other (OVS would need OpenFlow rules XAPI also manages).

import { formatIpv6, parseIpv6 } from "@xenroam/core";
import type { Site, VifInfo } from "@xenroam/protocol";
import type { StagingNetwork } from "../ports.js";
import { stagingBridge } from "../staging.js";
import type { Xapi } from "./xapi.js";
import { vmRef, XapiAdapterError } from "./xapi.js";

/** The network's other_config key that marks it xenroam's, with the site it impersonates. */
export const STAGING_OTHER_CONFIG = "xenroam-staging";

export type NetworkBackend = "openvswitch" | "bridge";

/** What the XAPI staging needs of Dom0 itself (adapters/dom0-net.ts has the real one). */
export interface Dom0Net {
  backend(): Promise<NetworkBackend>;
  /** The gateway's MAC on the bridge, kept by the backend across its reconfigurations. */
  setBridgeMac(bridge: string, mac: string, backend: NetworkBackend): Promise<void>;
  writeSysctl(ifname: string, key: string, value: number): Promise<void>;
  up(ifname: string): Promise<void>;
  /** The link's IPv6 addresses (canonical text; none when the link is gone), from /proc/net/if_inet6. */
  addresses(ifname: string): Promise<string[]>;
  addAddress(ifname: string, cidr: string): Promise<void>;
  deleteAddress(ifname: string, cidr: string): Promise<void>;
}

interface NetworkRecord {
  bridge: string;
  name_label: string;
  other_config?: Record<string, string>;
}

export interface XapiStagingOptions {
  readonly xapi: Xapi;
  /** This host's name in the pool. */
  readonly host: string;
  /** The bridge of the network the secondary VIF waits on between migrations. */
  readonly parking: string;
  readonly dom0: Dom0Net;
}

export class XapiStaging implements StagingNetwork {
  constructor(private readonly o: XapiStagingOptions) {}

  private async networkOnBridge(bridge: string): Promise<string | undefined> {
    const all = await this.o.xapi.call<Record<string, NetworkRecord>>("network.get_all_records");
    return Object.entries(all).find(([, n]) => n.bridge === bridge)?.[0];
  }

  /** The site's staging network in this pool, created the first time. */
  private async stagingNetwork(site: Site): Promise<{ ref: string; created: boolean }> {
    const bridge = stagingBridge(site.name);
    const ref = await this.networkOnBridge(bridge);
    if (ref) return { ref, created: false };
    const created = await this.createNetwork(site, bridge);
    if (created) return { ref: created, created: true };
    // Another host of the pool (or another prepare here) made it first: BRIDGE_NAME_EXISTS.
    const theirs = await this.networkOnBridge(bridge);
    if (!theirs) throw new XapiAdapterError(`XAPI refused a network on bridge ${bridge} and has none there`);
    return { ref: theirs, created: false };
  }

  /** The network made, or undefined when XAPI says one on that bridge exists already. */
  private async createNetwork(site: Site, bridge: string): Promise<string | undefined> {
    return this.o.xapi
      .call<string>("network.create", {
        name_label: `xenroam staging: site ${site.name}`,
        name_description: `xenroam: impersonates site ${site.name}'s gateway (${site.gateway.linkLocal}, ${site.gateway.mac}) for guests about to move there. Made by xenroam; safe to delete when no VIF is on it.`,
        MTU: 1500,
        bridge,
        managed: true,
        tags: [],
        // A VM with its secondary here must still be movable by a plain migration inside the pool: xapi counts
        // an internal network as present on a host only with this key (xapi_network_attach_helpers.ml 117-199).
        other_config: { [STAGING_OTHER_CONFIG]: site.name, assume_network_is_shared: "true" },
      })
      .catch((err: unknown) => {
        if ((err as { code?: unknown }).code === "BRIDGE_NAME_EXISTS") return undefined;
        throw err;
      });
  }

  async ensure(site: Site): Promise<{ bridge: string; created: boolean }> {
    const { xapi } = this.o;
    const { ref, created } = await this.stagingNetwork(site);
    const [host] = await xapi.call<string[]>("host.get_by_name_label", this.o.host);
    if (!host) throw new XapiAdapterError(`no host named ${this.o.host} in this pool (--host)`);
    await xapi.call("network.attach", ref, host);
    const bridge = await xapi.call<string>("network.get_bridge", ref);
    await this.impersonate(bridge, site);
    return { bridge, created };
  }

  /**
   * Dom0's end of the staging bridge as the site's gateway. Again after every VIF.move onto it: XAPI destroys
   * an internal network's bridge when its last VIF leaves the host and makes it afresh (no MAC, no address)
   * for the next one — another guest's migration may do that between this guest's ensure and its move.
   */
  private async impersonate(bridge: string, site: Site): Promise<void> {
    const { dom0 } = this.o;
    // Only the gateway's link-local: RAs must come from exactly the address the guest will keep using. No
    // address of the kernel's own (before the MAC changes: a new MAC makes a new EUI-64 link-local), then IPv6
    // on (XCP-ng's xe-enable-ipv6 may have left it off by default).
    await dom0.writeSysctl(bridge, "addr_gen_mode", 1);
    await dom0.writeSysctl(bridge, "accept_dad", 0);
    await dom0.writeSysctl(bridge, "accept_ra", 0);
    await dom0.writeSysctl(bridge, "disable_ipv6", 0);
    await dom0.setBridgeMac(bridge, site.gateway.mac, await dom0.backend());
    await dom0.up(bridge);
    const gateway = formatIpv6(parseIpv6(site.gateway.linkLocal));
    const present = await dom0.addresses(bridge);
    for (const other of present.filter((a) => a.startsWith("fe80:") && a !== gateway)) {
      await dom0.deleteAddress(bridge, `${other}/64`);
    }
    if (!present.includes(gateway)) await dom0.addAddress(bridge, `${gateway}/64`);
  }

  private async vifOf(vm: string, devid: number): Promise<string | undefined> {
    const { xapi } = this.o;
    let ref: string;
    try {
      ref = await vmRef(xapi, vm);
    } catch (err) {
      // Gone from this pool (migrated away); any other failure is the caller's to see.
      const code = (err as { code?: unknown }).code;
      if (code === "UUID_INVALID" || /no VM named/.test((err as Error).message ?? "")) return undefined;
      throw err;
    }
    for (const v of await xapi.call<string[]>("VM.get_VIFs", ref)) {
      if (Number(await xapi.call<string>("VIF.get_device", v)) === devid) return v;
    }
    return undefined;
  }

  async attach(site: Site, vm: string, secondary: VifInfo): Promise<void> {
    const vif = await this.vifOf(vm, secondary.devid);
    if (!vif) throw new XapiAdapterError(`${vm} has no VIF with device ${secondary.devid}`);
    const net = await this.networkOnBridge(stagingBridge(site.name));
    if (!net) throw new XapiAdapterError(`the staging network of site ${site.name} is gone`);
    await this.o.xapi.call("VIF.move", vif, net);
    await this.impersonate(await this.o.xapi.call<string>("network.get_bridge", net), site);
  }

  async detach(vm: string, secondary: { readonly devid: number }): Promise<void> {
    const vif = await this.vifOf(vm, secondary.devid);
    if (!vif) return;
    const parking = await this.networkOnBridge(this.o.parking);
    if (!parking) {
      throw new XapiAdapterError(
        `no network on bridge ${this.o.parking} in this pool to park ${vm}'s secondary VIF on (--parking-bridge)`,
      );
    }
    await this.o.xapi.call("VIF.move", vif, parking);
  }

  /**
   * The network stays (a pool object the next migration to that site reuses, and XAPI's to remove with its
   * bridge); the gateway's link-local goes from Dom0's end, so this host stops answering as that gateway.
   */
  async remove(_site: string, bridge: string): Promise<void> {
    for (const address of await this.o.dom0.addresses(bridge)) {
      if (address.startsWith("fe80:")) await this.o.dom0.deleteAddress(bridge, `${address}/64`);
    }
  }
}

/**
 * The pool's parking network: an internal network on `bridge` (xrpark0) where each VM's second VIF waits
 * between migrations, made once per pool with the same bridge name everywhere (the cross-pool vif_map finds it
 * by that name). `assume_network_is_shared` lets xapi count it as present on every host, so a plain
 * migration inside the pool is not refused with VM_REQUIRES_NETWORK (xapi_network_attach_helpers.ml 117-199).
 */
export async function ensureParkingNetwork(
  xapi: Xapi,
  bridge: string,
): Promise<{ ref: string; uuid: string; created: boolean }> {
  const all = await xapi.call<Record<string, NetworkRecord & { uuid?: string }>>("network.get_all_records");
  const found = Object.entries(all).find(([, n]) => n.bridge === bridge);
  if (found) {
    const [ref, n] = found;
    return { ref, uuid: n.uuid ?? (await xapi.call<string>("network.get_uuid", ref)), created: false };
  }
  const ref = await xapi.call<string>("network.create", {
    name_label: "xenroam parking",
    name_description:
      "xenroam: where each VM's second VIF waits between migrations (no uplink). Made by xenroam xapi-parking.",
    MTU: 1500,
    bridge,
    managed: true,
    tags: [],
    other_config: { assume_network_is_shared: "true" },
  });
  return { ref, uuid: await xapi.call<string>("network.get_uuid", ref), created: true };
}

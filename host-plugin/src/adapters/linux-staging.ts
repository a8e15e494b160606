// Staging on xl hosts and in the lab: a Linux bridge xenroam makes per destination site (xr-<site>), with the
// site gateway's MAC and link-local, its ports isolated so guests preparing for one site never see each other;
// the secondary vif moves between it and the parking bridge by rtnetlink. The plans are in staging.ts.

import { applyOps, type Netlink } from "@xenroam/netlink";
import type { Site, VifInfo } from "@xenroam/protocol";
import type { StagingNetwork } from "../ports.js";
import { planAttach, planDetach, planStagingBridge, stagingBridge } from "../staging.js";

export class LinuxStaging implements StagingNetwork {
  constructor(
    private readonly netlink: Netlink,
    /** The bridge the secondary vif waits on between migrations. */
    private readonly parking: string,
  ) {}

  async ensure(site: Site): Promise<{ bridge: string; created: boolean }> {
    const bridge = stagingBridge(site.name);
    if (await this.netlink.link(bridge)) return { bridge, created: false };
    await applyOps(this.netlink, planStagingBridge(site));
    return { bridge, created: true };
  }

  async attach(site: Site, _vm: string, secondary: VifInfo): Promise<void> {
    await applyOps(this.netlink, planAttach(secondary.ifname, stagingBridge(site.name)));
  }

  async detach(_vm: string, secondary: { readonly ifname: string }): Promise<void> {
    if (!(await this.netlink.link(secondary.ifname))) return;
    await this.netlink.setBridgePort(secondary.ifname, { isolated: false }).catch(() => {});
    await applyOps(this.netlink, planDetach(secondary.ifname, this.parking));
  }

  async remove(_site: string, bridge: string): Promise<void> {
    if (await this.netlink.link(bridge)) await this.netlink.deleteLink(bridge);
  }
}

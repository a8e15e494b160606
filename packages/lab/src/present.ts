// Small views of a topology for people: node to namespace names, the router's addresses.
import { routerAddress } from "./addresses.js";
import type { Topology } from "./topology.js";

export { netnsName } from "./plan.js";

export function routerAddressOf(t: Topology): string {
  const site = t.sites.find((s) => s.name === t.hosts.find((h) => h.name === t.vm.host)?.site);
  return site ? `${site.gateway.linkLocal} / ${routerAddress(site.prefix)}` : t.router.name;
}

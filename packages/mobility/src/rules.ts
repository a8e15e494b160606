// The mobility layer's address translation as nftables scripts (what MAT did in its kernel): applications use
// the home address (HoA); on the wire the VM uses its current locator (MoA). Stateless (notrack), both
// directions, neighbour discovery and router messages never rewritten. Pure: text in, text out.

import { canonicalIpv6, isLinkLocal, parseIpv6 } from "@xenroam/core";

export const TABLE = "xenroam";

/** ICMPv6 133-137: RS, RA, NS, NA, redirect. Rewriting them breaks address resolution. */
const NDP =
  "icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, nd-redirect } accept";

export class MobilityError extends Error {
  override readonly name = "MobilityError";
}

function routable(what: string, text: string): string {
  let addr: string;
  try {
    addr = canonicalIpv6(text);
  } catch (err) {
    throw new MobilityError(`${what}: ${(err as Error).message}`);
  }
  if (isLinkLocal(parseIpv6(addr)))
    throw new MobilityError(`${what} ${addr} is link-local; it must be routable`);
  return addr;
}

/**
 * Replaces the whole table in one transaction: declaring it empty first makes the delete valid whether or
 * not it existed, so applying the same script twice converges.
 */
function replaceTable(body: string[]): string {
  return [
    `table ip6 ${TABLE} {}`,
    `delete table ip6 ${TABLE}`,
    `table ip6 ${TABLE} {`,
    ...body,
    "}",
    "",
  ].join("\n");
}

export interface MobileNodeState {
  readonly hoa: string;
  /** The active locator; undefined while the VM has none (no rewrite: the HoA is used as it is). */
  readonly moa: string | undefined;
}

/** The mobile node (the guest): egress source HoA→MoA, ingress destination MoA→HoA. */
export function renderMobileNode(state: MobileNodeState): string {
  const hoa = routable("HoA", state.hoa);
  if (state.moa === undefined) return replaceTable([]);
  const moa = routable("MoA", state.moa);
  if (moa === hoa) throw new MobilityError("the MoA must differ from the HoA");
  return replaceTable([
    "  chain ingress {",
    "    type filter hook prerouting priority raw; policy accept;",
    `    ${NDP}`,
    `    ip6 daddr ${moa} notrack ip6 daddr set ${hoa}`,
    "  }",
    "  chain egress {",
    "    type route hook output priority raw; policy accept;",
    `    ${NDP}`,
    `    ip6 saddr ${hoa} notrack ip6 saddr set ${moa}`,
    "  }",
  ]);
}

export interface Binding {
  readonly hoa: string;
  /** Where packets for the HoA go now. */
  readonly active: string;
  /** Every locator packets from this HoA may come from (the active one included). */
  readonly locators: readonly string[];
}

/** The correspondent: egress destination HoA→active MoA, ingress source any registered locator→HoA. */
export function renderCorrespondent(bindings: readonly Binding[]): string {
  const egress = new Map<string, string>();
  const ingress = new Map<string, string>();
  for (const b of bindings) {
    const hoa = routable("HoA", b.hoa);
    const active = routable(`active locator of ${hoa}`, b.active);
    if (egress.has(hoa)) throw new MobilityError(`two bindings for HoA ${hoa}`);
    egress.set(hoa, active);
    for (const l of new Set([active, ...b.locators.map((x) => routable(`locator of ${hoa}`, x))])) {
      const owner = ingress.get(l);
      if (owner !== undefined && owner !== hoa)
        throw new MobilityError(`locator ${l} is claimed by ${owner} and ${hoa}`);
      ingress.set(l, hoa);
    }
  }
  const elements = (m: Map<string, string>) =>
    m.size === 0 ? "" : ` elements = { ${[...m].map(([k, v]) => `${k} : ${v}`).join(", ")} };`;
  return replaceTable([
    `  map hoa_to_locator { type ipv6_addr : ipv6_addr;${elements(egress)} }`,
    `  map locator_to_hoa { type ipv6_addr : ipv6_addr;${elements(ingress)} }`,
    "  chain ingress {",
    "    type filter hook prerouting priority raw; policy accept;",
    `    ${NDP}`,
    "    ip6 saddr @locator_to_hoa notrack ip6 saddr set ip6 saddr map @locator_to_hoa",
    "  }",
    "  chain egress {",
    // A route chain: a packet whose destination was rewritten is routed again, towards the locator.
    "    type route hook output priority raw; policy accept;",
    `    ${NDP}`,
    "    ip6 daddr @hoa_to_locator notrack ip6 daddr set ip6 daddr map @hoa_to_locator",
    "  }",
  ]);
}

/** Removes the table; valid whether or not it exists. */
export function renderRemoval(): string {
  return [`table ip6 ${TABLE} {}`, `delete table ip6 ${TABLE}`, ""].join("\n");
}

// The mobility layer's address translation as nftables scripts (what MAT did in its kernel): applications use
// the home address (HoA); on the wire the VM uses its current locator (MoA). Stateless (notrack), both
// directions, neighbour discovery and router messages never rewritten. Pure: text in, text out.

import { canonicalIpv6, interfaceNameProblem, isLinkLocal, parseIpv6 } from "@xenroam/core";

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

export interface Locator {
  /** The interface this locator lives on. */
  readonly ifname: string;
  /** The MoA: a SLAAC address in the subnet that interface is attached to. */
  readonly moa: string;
}

export interface MobileNodeState {
  readonly hoa: string;
  /** The guest's locators: the active interface's and a prepared standby's. Empty: no rewrite at all. */
  readonly locators: readonly Locator[];
}

/**
 * The mobile node (the guest): egress source HoA→the MoA of the interface the packet leaves by, ingress
 * destination any own MoA→HoA. Keyed by the outgoing interface, the rewrite follows the kernel's routing:
 * when the agent moves the default route to the new primary at step 4, packets carry the new MoA from the
 * first one on, with no nftables change on the critical path.
 */
export function renderMobileNode(state: MobileNodeState): string {
  const hoa = routable("HoA", state.hoa);
  if (state.locators.length === 0) return replaceTable([]);
  const byIf = new Map<string, string>();
  const moas = new Set<string>();
  for (const l of state.locators) {
    const problem = interfaceNameProblem(l.ifname);
    if (problem) throw new MobilityError(`interface "${l.ifname}": ${problem}`);
    const moa = routable(`MoA of ${l.ifname}`, l.moa);
    if (moa === hoa) throw new MobilityError("the MoA must differ from the HoA");
    if (byIf.has(l.ifname)) throw new MobilityError(`two locators for interface ${l.ifname}`);
    if (moas.has(moa)) throw new MobilityError(`MoA ${moa} is given for two interfaces`);
    byIf.set(l.ifname, moa);
    moas.add(moa);
  }
  const egress = [...byIf].map(([i, m]) => `"${i}" : ${m}`).join(", ");
  return replaceTable([
    "  chain ingress {",
    "    type filter hook prerouting priority raw; policy accept;",
    `    ${NDP}`,
    `    ip6 daddr { ${[...moas].join(", ")} } notrack ip6 daddr set ${hoa}`,
    "  }",
    "  chain egress {",
    "    type route hook output priority raw; policy accept;",
    `    ${NDP}`,
    // A packet from the HoA leaving by an interface without a locator (lo: the VM talking to itself) is
    // left as it is: the failed map lookup ends the rule.
    `    ip6 saddr ${hoa} notrack ip6 saddr set oifname map { ${egress} }`,
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

/**
 * The correspondent's fast path when a signed binding arrives: no element or rule is deleted, because every
 * deletion waits for an RCU grace period in the kernel (~12 ms measured against ~3 ms for an addition). A rule
 * inserted at the head of the egress chain overrides the map for this HoA (first match wins: once the
 * destination is rewritten, no later rule matches the HoA), and locators not yet known are added to the
 * ingress map. The full table is re-rendered later, off the critical path, which drops the override.
 */
export function renderCorrespondentSwitch(
  hoaText: string,
  locatorText: string,
  newIngress: readonly string[],
): string {
  const hoa = routable("HoA", hoaText);
  const locator = routable(`locator of ${hoa}`, locatorText);
  const lines = [`insert rule ip6 ${TABLE} egress ip6 daddr ${hoa} notrack ip6 daddr set ${locator}`];
  const add = [...new Set(newIngress.map((l) => routable(`locator of ${hoa}`, l)))];
  if (add.length > 0) {
    lines.push(`add element ip6 ${TABLE} locator_to_hoa { ${add.map((l) => `${l} : ${hoa}`).join(", ")} }`);
  }
  return `${lines.join("\n")}\n`;
}

/** Removes the table; valid whether or not it exists. */
export function renderRemoval(): string {
  return [`table ip6 ${TABLE} {}`, `delete table ip6 ${TABLE}`, ""].join("\n");
}

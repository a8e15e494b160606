// Which of a link's addresses the kernel made inside a prefix, and which of those can be a locator: shared by
// the real port and its fake, so both wait for the same thing.

import { formatPrefix, isLinkLocal, parseIpv6, parsePrefix, prefixContains } from "@xenroam/core";
import { NetlinkError } from "./errors.js";
import type { AddressInfo } from "./port.js";

/** A predicate for "inside `prefix`"; a prefix that does not parse is the caller's error (EINVAL). */
export function addressInPrefix(op: string, name: string, prefix: string): (a: AddressInfo) => boolean {
  let p: ReturnType<typeof parsePrefix>;
  try {
    p = parsePrefix(prefix);
  } catch (err) {
    throw new NetlinkError("EINVAL", op, name, `${prefix} is not an IPv6 prefix: ${(err as Error).message}`);
  }
  return (a) => a.family === 6 && prefixContains(p, parseIpv6(a.address));
}

/**
 * An address the node can be reached at for as long as it is on the link: global, not link-local, its DAD over
 * and passed (or optimistic: RFC 4429 lets a node use it meanwhile), still preferred, and not a privacy
 * (temporary) address, which the kernel replaces on its own schedule and which correspondents must never be
 * bound to.
 */
export const usableLocator = (a: AddressInfo): boolean =>
  a.family === 6 &&
  a.scope === "global" &&
  !isLinkLocal(parseIpv6(a.address)) &&
  (!a.tentative || a.optimistic === true) &&
  !a.dadFailed &&
  !a.deprecated &&
  !a.temporary;

/** What a prefix wait saw but could not take, for its timeout's message. */
export function unusableIn(prefix: string, seen: ReadonlyMap<string, AddressInfo>): string {
  const why = (a: AddressInfo) =>
    a.dadFailed
      ? "DAD failed"
      : a.tentative
        ? "tentative"
        : a.temporary
          ? "temporary"
          : a.deprecated
            ? "deprecated"
            : "not global";
  const list = [...seen.values()].map((a) => `${a.address} ${why(a)}`);
  let text = prefix;
  try {
    text = formatPrefix(parsePrefix(prefix));
  } catch {
    /* the wait refused it before */
  }
  return `an address in ${text} (${list.length > 0 ? `saw ${list.join(", ")}` : "none made: no RA with that prefix?"})`;
}

/**
 * waitAddressIn's test, shared by the port and its fake: `pick` takes the first usable locator inside `prefix`
 * and remembers what else it saw there; `what` says it for the timeout's message.
 */
export function prefixWait(
  op: string,
  name: string,
  prefix: string,
): { pick: (a: AddressInfo) => AddressInfo | undefined; what: () => string } {
  const inside = addressInPrefix(op, name, prefix);
  const seen = new Map<string, AddressInfo>();
  return {
    pick: (a) => {
      if (!inside(a)) return undefined;
      seen.set(a.address, a);
      return usableLocator(a) ? a : undefined;
    },
    what: () => unusableIn(prefix, seen),
  };
}

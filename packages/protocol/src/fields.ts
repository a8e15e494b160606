// Validated fields shared by every schema xenroam reads (messages, the lab topology, the sites file): each
// parses text into canonical form or reports, in words, what is wrong with it.

import {
  canonicalIpv6,
  canonicalMac,
  isLinkLocal,
  isUnicastMac,
  parseIpv6,
  parseMac,
  parsePrefix,
} from "@xenroam/core";
import * as z from "zod/mini";

// zod/mini, not zod: the same schemas and messages from a fifth of the code, which the guest agent (it runs in
// every DomU, issue 11) does not load. Its English messages are zod's own, loaded here once for the process.
z.config(z.locales.en());

/** Runs a parser inside zod; its error message becomes the issue. */
export const parsed = <T>(parse: (s: string) => T) =>
  z.pipe(
    z.string(),
    z.transform((s: string, ctx) => {
      try {
        return parse(s);
      } catch (err) {
        ctx.issues.push({ code: "custom", message: (err as Error).message, input: s });
        return z.NEVER;
      }
    }),
  );

export const ipv6Field = (what: string) =>
  parsed((s) => {
    try {
      return canonicalIpv6(s);
    } catch (err) {
      throw new Error(`${what}: ${(err as Error).message}`);
    }
  });

export const linkLocalField = parsed((s) => {
  if (!isLinkLocal(parseIpv6(s))) throw new Error(`${s} is not link-local (fe80::/10)`);
  return canonicalIpv6(s);
});

export const globalAddressField = parsed((s) => {
  if (isLinkLocal(parseIpv6(s))) throw new Error(`${s} is link-local, not a routable address`);
  return canonicalIpv6(s);
});

/** A /64 (what SLAAC needs), canonical. */
export const prefix64Field = parsed((s) => {
  const p = parsePrefix(s);
  if (p.length !== 64) throw new Error(`"${s}" must be a /64 (SLAAC needs one)`);
  return `${canonicalIpv6(s.split("/")[0] ?? "")}/64`;
});

export const macField = parsed(canonicalMac);

export const unicastMacField = parsed((s) => {
  if (!isUnicastMac(parseMac(s))) throw new Error(`${s} is a multicast MAC; use a unicast one`);
  return canonicalMac(s);
});

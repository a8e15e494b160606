// IPv6 addresses and prefixes as values: parse, format (RFC 5952), prefix arithmetic, EUI-64 link-locals.
// Pure: no Node APIs, so planning code can reason about addresses without touching the system.

import { type Mac, parseMac } from "./mac.js";

/** An IPv6 address as 8 16-bit groups. */
export type Ipv6 = readonly [number, number, number, number, number, number, number, number];

export interface Ipv6Prefix {
  readonly address: Ipv6;
  readonly length: number;
}

export class AddressError extends Error {
  override readonly name = "AddressError";
}

const HEX_GROUP = /^[0-9a-fA-F]{1,4}$/;

/** Parses an IPv6 address in any RFC 4291 text form (no zone index, no embedded IPv4). */
export function parseIpv6(text: string): Ipv6 {
  const fail = (why: string): never => {
    throw new AddressError(`"${text}" is not an IPv6 address: ${why}`);
  };
  if (text.includes("%")) fail("zone indexes are not accepted here");
  const halves = text.split("::");
  if (halves.length > 2) fail('"::" may appear only once');
  const groupsOf = (part: string | undefined): number[] => {
    if (part === undefined || part === "") return [];
    return part.split(":").map((g) => {
      if (!HEX_GROUP.test(g)) fail(`"${g}" is not a group of 1-4 hex digits`);
      return Number.parseInt(g, 16);
    });
  };
  const head = groupsOf(halves[0]);
  const tail = groupsOf(halves[1]);
  let groups: number[];
  if (halves.length === 2) {
    const fill = 8 - head.length - tail.length;
    if (fill < 1) fail("too many groups around '::'");
    groups = [...head, ...new Array<number>(fill).fill(0), ...tail];
  } else {
    groups = head;
  }
  if (groups.length !== 8) fail(`expected 8 groups, found ${groups.length}`);
  return groups as unknown as Ipv6;
}

export function isIpv6(text: string): boolean {
  try {
    parseIpv6(text);
    return true;
  } catch {
    return false;
  }
}

/** Formats an address in RFC 5952 canonical form (lower case, longest zero run of 2+ groups compressed). */
export function formatIpv6(addr: Ipv6): string {
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (addr[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && addr[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (g: number) => g.toString(16);
  if (bestLen < 2) return addr.map(hex).join(":");
  const left = addr.slice(0, bestStart).map(hex).join(":");
  const right = addr
    .slice(bestStart + bestLen)
    .map(hex)
    .join(":");
  return `${left}::${right}`;
}

/** Canonical text of any IPv6 address text. */
export function canonicalIpv6(text: string): string {
  return formatIpv6(parseIpv6(text));
}

export function ipv6ToBytes(addr: Ipv6): Uint8Array {
  const out = new Uint8Array(16);
  addr.forEach((g, i) => {
    out[2 * i] = g >> 8;
    out[2 * i + 1] = g & 0xff;
  });
  return out;
}

export function ipv6FromBytes(bytes: Uint8Array): Ipv6 {
  if (bytes.length !== 16) throw new AddressError(`an IPv6 address has 16 bytes, got ${bytes.length}`);
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push(((bytes[2 * i] ?? 0) << 8) | (bytes[2 * i + 1] ?? 0));
  return groups as unknown as Ipv6;
}

/** Parses "2001:db8:a::/64". */
export function parsePrefix(text: string): Ipv6Prefix {
  const [addr, len, ...rest] = text.split("/");
  if (addr === undefined || len === undefined || rest.length > 0) {
    throw new AddressError(`"${text}" is not an IPv6 prefix: expected ADDRESS/LENGTH, like 2001:db8:a::/64`);
  }
  if (!/^\d{1,3}$/.test(len) || Number(len) > 128) {
    throw new AddressError(`"${text}" is not an IPv6 prefix: length must be 0-128`);
  }
  const length = Number(len);
  const address = parseIpv6(addr);
  if (!equalIpv6(maskIpv6(address, length), address)) {
    throw new AddressError(
      `"${text}" has host bits set; the prefix is ${formatIpv6(maskIpv6(address, length))}/${length}`,
    );
  }
  return { address, length };
}

export function formatPrefix(p: Ipv6Prefix): string {
  return `${formatIpv6(p.address)}/${p.length}`;
}

export function maskIpv6(addr: Ipv6, length: number): Ipv6 {
  return addr.map((g, i) => {
    const bits = Math.max(0, Math.min(16, length - 16 * i));
    const mask = bits === 0 ? 0 : (0xffff << (16 - bits)) & 0xffff;
    return g & mask;
  }) as unknown as Ipv6;
}

export function equalIpv6(a: Ipv6, b: Ipv6): boolean {
  return a.every((g, i) => g === b[i]);
}

export function prefixContains(prefix: Ipv6Prefix, addr: Ipv6): boolean {
  return equalIpv6(maskIpv6(addr, prefix.length), prefix.address);
}

export function prefixesOverlap(a: Ipv6Prefix, b: Ipv6Prefix): boolean {
  const len = Math.min(a.length, b.length);
  return equalIpv6(maskIpv6(a.address, len), maskIpv6(b.address, len));
}

export const LINK_LOCAL: Ipv6Prefix = { address: [0xfe80, 0, 0, 0, 0, 0, 0, 0], length: 10 };

export function isLinkLocal(addr: Ipv6): boolean {
  return prefixContains(LINK_LOCAL, addr);
}

/** Modified EUI-64 interface identifier from a MAC (RFC 4291 appendix A): the last 4 groups. */
export function eui64InterfaceId(mac: Mac | string): [number, number, number, number] {
  const b = typeof mac === "string" ? parseMac(mac) : mac;
  const [b0 = 0, b1 = 0, b2 = 0, b3 = 0, b4 = 0, b5 = 0] = b.bytes;
  return [((b0 ^ 0x02) << 8) | b1, (b2 << 8) | 0xff, (0xfe << 8) | b3, (b4 << 8) | b5];
}

/** The SLAAC address (EUI-64) a host with this MAC takes in a /64. */
export function slaacAddress(prefix: Ipv6Prefix, mac: Mac | string): Ipv6 {
  if (prefix.length !== 64) throw new AddressError(`SLAAC needs a /64 prefix, not /${prefix.length}`);
  const id = eui64InterfaceId(mac);
  const a = prefix.address;
  return [a[0], a[1], a[2], a[3], ...id] as unknown as Ipv6;
}

/** fe80::/64 link-local address derived from a MAC (what the kernel picks with addr_gen_mode eui64). */
export function linkLocalFromMac(mac: Mac | string): Ipv6 {
  return slaacAddress({ address: [0xfe80, 0, 0, 0, 0, 0, 0, 0], length: 64 }, mac);
}

/**
 * Why an address can never be a host's unicast locator, or undefined: the unspecified and loopback addresses,
 * multicast, link-local, IPv4-mapped and IPv4-compatible addresses (RFC 4291 2.5), and, in a /64, the
 * subnet-router anycast address (interface identifier 0, RFC 4291 2.6.1) and the reserved subnet anycast
 * identifiers (RFC 5453: fdff:ffff:ffff:ff80 to fdff:ffff:ffff:ffff).
 */
export function specialAddressProblem(addr: Ipv6): string | undefined {
  const [a0, , , , a4, a5, a6, a7] = addr;
  const zeros = (from: number, to: number) => addr.slice(from, to).every((x) => x === 0);
  if (zeros(0, 8)) return "the unspecified address";
  if (zeros(0, 7) && a7 === 1) return "the loopback address";
  if (a0 >> 8 === 0xff) return "a multicast address";
  if (isLinkLocal(addr)) return "a link-local address";
  if (zeros(0, 5) && a5 === 0xffff) return "an IPv4-mapped address";
  if (zeros(0, 6)) return "an IPv4-compatible (deprecated) address";
  if (zeros(4, 8)) return "the subnet-router anycast address of its /64";
  if (a4 === 0xfdff && a5 === 0xffff && a6 === 0xffff && a7 >= 0xff80)
    return "a reserved subnet anycast address (RFC 5453)";
  return undefined;
}

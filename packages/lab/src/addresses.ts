// Addresses the lab derives from a topology. Pure.
import { formatIpv6, ipv6FromBytes, ipv6ToBytes, parsePrefix } from "@xenroam/core";

/** The router's global address on a segment: the prefix's ::1. */
export function routerAddress(prefix: string): string {
  const bytes = ipv6ToBytes(parsePrefix(prefix).address);
  bytes[15] = 1;
  return formatIpv6(ipv6FromBytes(bytes));
}

// radvd configuration as text, from xenroam's terms. Pure: the lab's router and the host plugin's staging
// bridges render their configs here; only one module in each app runs radvd.

import { canonicalIpv6, formatPrefix, isLinkLocal, parseIpv6, parsePrefix } from "./ipv6.js";
import { interfaceNameProblem } from "./names.js";

export interface RadvdInterface {
  readonly ifname: string;
  /** The /64 advertised for SLAAC. */
  readonly prefix: string;
  readonly minIntervalMs: number;
  readonly maxIntervalMs: number;
  /** Router lifetime in seconds; 0 advertises "not a default router". Defaults to 3 × max interval, ≥ 1 s. */
  readonly defaultLifetimeS?: number;
  /** Source link-local address of the RAs (AdvRASrcAddress): the gateway being impersonated. */
  readonly sourceLinkLocal?: string;
  readonly mtu?: number;
  /**
   * Whether the RAs carry the router's link-layer address (AdvSourceLLAddress, default on). Staging bridges
   * leave it on: tried off (the guest then resolved the gateway at its first packet after resume, from the
   * MoA, so the router learned the MoA from it), that solicitation was lost on real Xen whenever it was
   * queued before the frontend's backend forwarded, and the kernel asked again only a second later.
   */
  readonly sourceLinkLayer?: boolean;
  /** Recursive DNS servers (RFC 8106 RDNSS) and search domains (DNSSL) the RAs carry. */
  readonly rdnss?: readonly string[];
  readonly dnssl?: readonly string[];
  /** How long a guest may use them without a new RA (s); default radvd's (2 × MaxRtrAdvInterval). */
  readonly dnsLifetimeS?: number;
}

export class RadvdConfigError extends Error {
  override readonly name = "RadvdConfigError";
}

/** radvd's own limits (radvd 2.x): intervals below 3 s need AdvIntervalOpt; 30 ms / 70 ms are the floors. */
export function radvdIntervalProblem(minMs: number, maxMs: number): string | undefined {
  if (!Number.isFinite(minMs) || !Number.isFinite(maxMs)) return "intervals must be numbers of milliseconds";
  if (minMs < 30) return `minimum interval ${minMs} ms is below radvd's floor of 30 ms`;
  if (maxMs < 70) return `maximum interval ${maxMs} ms is below radvd's floor of 70 ms`;
  if (maxMs > 1_800_000) return `maximum interval ${maxMs} ms is above radvd's limit of 1800 s`;
  if (minMs > 0.75 * maxMs)
    return `minimum interval ${minMs} ms must be at most 0.75 × maximum (${0.75 * maxMs} ms)`;
  return undefined;
}

const seconds = (ms: number) => String(Number((ms / 1000).toFixed(3)));

export function renderRadvdConf(interfaces: readonly RadvdInterface[]): string {
  const seen = new Set<string>();
  for (const i of interfaces) {
    if (seen.has(i.ifname)) throw new RadvdConfigError(`interface "${i.ifname}" appears twice`);
    seen.add(i.ifname);
  }
  const blocks = interfaces.map((i) => {
    const nameProblem = interfaceNameProblem(i.ifname);
    if (nameProblem) throw new RadvdConfigError(`interface "${i.ifname}" ${nameProblem}`);
    const intervalProblem = radvdIntervalProblem(i.minIntervalMs, i.maxIntervalMs);
    if (intervalProblem) throw new RadvdConfigError(`${i.ifname}: ${intervalProblem}`);
    const prefix = parsePrefix(i.prefix);
    if (prefix.length !== 64)
      throw new RadvdConfigError(`${i.ifname}: SLAAC needs a /64, not /${prefix.length}`);
    const lifetime = i.defaultLifetimeS ?? Math.max(1, Math.ceil((3 * i.maxIntervalMs) / 1000));
    if (lifetime !== 0 && lifetime * 1000 < i.maxIntervalMs) {
      throw new RadvdConfigError(
        `${i.ifname}: router lifetime ${lifetime} s is shorter than the maximum interval`,
      );
    }
    const lines = [
      `interface ${i.ifname} {`,
      "  AdvSendAdvert on;",
      `  MinRtrAdvInterval ${seconds(i.minIntervalMs)};`,
      `  MaxRtrAdvInterval ${seconds(i.maxIntervalMs)};`,
      `  MinDelayBetweenRAs ${seconds(Math.min(i.minIntervalMs, 3000))};`,
      `  AdvIntervalOpt ${i.maxIntervalMs < 4000 ? "on" : "off"};`,
      `  AdvDefaultLifetime ${lifetime};`,
    ];
    if (i.sourceLinkLayer === false) lines.push("  AdvSourceLLAddress off;");
    if (i.mtu !== undefined) lines.push(`  AdvLinkMTU ${i.mtu};`);
    lines.push(`  prefix ${formatPrefix(prefix)} {`, "    AdvOnLink on;", "    AdvAutonomous on;", "  };");
    const dnsLifetime = (kind: string) =>
      i.dnsLifetimeS === undefined
        ? []
        : [`    Adv${kind}Lifetime ${Math.max(1, Math.round(i.dnsLifetimeS))};`];
    if (i.rdnss && i.rdnss.length > 0) {
      if (i.rdnss.length > 3) throw new RadvdConfigError(`${i.ifname}: at most 3 RDNSS servers`);
      lines.push(
        `  RDNSS ${i.rdnss.map((a) => canonicalIpv6(a)).join(" ")} {`,
        ...dnsLifetime("RDNSS"),
        "  };",
      );
    }
    if (i.dnssl && i.dnssl.length > 0) {
      if (i.dnssl.length > 3) throw new RadvdConfigError(`${i.ifname}: at most 3 DNSSL domains`);
      if (i.dnssl.some((d) => !/^[A-Za-z0-9.-]{1,253}$/.test(d)))
        throw new RadvdConfigError(`${i.ifname}: a DNSSL entry is not a domain`);
      lines.push(`  DNSSL ${i.dnssl.join(" ")} {`, ...dnsLifetime("DNSSL"), "  };");
    }
    if (i.sourceLinkLocal !== undefined) {
      const ll = parseIpv6(i.sourceLinkLocal);
      if (!isLinkLocal(ll)) throw new RadvdConfigError(`${i.ifname}: ${i.sourceLinkLocal} is not link-local`);
      lines.push(`  AdvRASrcAddress {`, `    ${canonicalIpv6(i.sourceLinkLocal)};`, "  };");
    }
    lines.push("};");
    return lines.join("\n");
  });
  return `# Written by xenroam; do not edit.\n${blocks.join("\n\n")}\n`;
}

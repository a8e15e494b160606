// Site data: which site each host is in, and each site's prefix and gateway (link-local and MAC). One
// document, validated with clear errors: the host plugin reads it from a file or from the control server,
// and the control server validates what an admin uploads with the same rules.

import { parseIpv6, parsePrefix, prefixContains } from "@xenroam/core";
import { globalAddressField, ipv6Field, linkLocalField, macField, prefix64Field } from "./fields.js";
import * as z from "zod/mini";

export interface Site {
  readonly name: string;
  readonly prefix: string;
  /** The gateway's link-local address and MAC (the staging bridge takes them), and its global address if any. */
  readonly gateway: {
    readonly linkLocal: string;
    readonly mac: string;
    readonly address?: string | undefined;
  };
  /**
   * How the control server knows a locator a VM claims in this site is the VM's own. Either way, an address
   * whose interface identifier is the modified EUI-64 of one of the VM's registered MACs is its own.
   * "eui64": nothing else is taken. "host" (the default): any other address waits, unpublished and not
   * activatable, until a host of the sites (the source Dom0, which saw the guest answer with it at a
   * prepare) or an admin attests it.
   */
  readonly locatorProof?: "host" | "eui64" | undefined;
  /** RA intervals radvd uses on this site's staging bridges. */
  readonly ra: { readonly minIntervalMs: number; readonly maxIntervalMs: number };
  /**
   * What the site's own RAs carry beside the prefix, which the staging RA carries too: a guest's new primary
   * then has the site's MTU and DNS servers from the first instant, not from the site's next RA.
   */
  readonly advertise?:
    | {
        readonly mtu?: number | undefined;
        readonly rdnss?: readonly string[] | undefined;
        readonly dnssl?: readonly string[] | undefined;
      }
    | undefined;
}

export interface SiteDirectory {
  siteOfHost(host: string): Site;
  hosts(): readonly string[];
  /** The validated document, normalised (defaults filled in). */
  document(): SitesDocument;
}

export class SitesError extends Error {
  override readonly name = "SitesError";
}

/**
 * What a site's own RAs carry beside the prefix (and the staging RA carries too). Shared with the lab's
 * topology, which advertises the same on its routers.
 */
export const advertiseSchema = z.strictObject({
  // RFC 4861 4.6.4; IPv6 needs at least 1280 (RFC 8200 5).
  mtu: z.optional(z.int().check(z.gte(1280), z.lte(65535))),
  // RFC 8106: radvd takes up to 3 of each per line.
  rdnss: z.optional(z.array(globalAddressField).check(z.minLength(1), z.maxLength(3))),
  dnssl: z.optional(
    z
      .array(
        z
          .string()
          .check(
            z.regex(
              /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/i,
              "must be a DNS domain such as example.net",
            ),
          ),
      )
      .check(z.minLength(1), z.maxLength(3)),
  ),
});

const name = z.string().check(z.regex(/^[a-z][a-z0-9-]{0,11}$/, "must be 1-12 characters: a-z, 0-9, -"));
const schema = z.strictObject({
  sites: z
    .array(
      z.strictObject({
        name,
        prefix: prefix64Field,
        gateway: z.strictObject({
          linkLocal: linkLocalField,
          mac: macField,
          address: z.optional(globalAddressField),
        }),
        locatorProof: z._default(z.enum(["host", "eui64"]), "host"),
        ra: z._default(
          z.strictObject({
            minIntervalMs: z.number().check(z.gte(30)),
            maxIntervalMs: z.number().check(z.gte(70)),
          }),
          { minIntervalMs: 30, maxIntervalMs: 70 },
        ),
        advertise: z.optional(advertiseSchema),
      }),
    )
    .check(z.minLength(1)),
  hosts: z
    .array(
      z.strictObject({
        name: z.string().check(z.minLength(1), z.maxLength(64)),
        site: name,
        address: z.optional(ipv6Field("host address")),
      }),
    )
    .check(z.minLength(1)),
});

export type SitesFile = z.input<typeof schema>;
export type SitesDocument = z.output<typeof schema>;

export function parseSites(value: unknown, source = "sites file"): SiteDirectory {
  const r = schema.safeParse(value);
  if (!r.success) {
    throw new SitesError(
      `${source} is not valid:\n${r.error.issues.map((i) => `  - ${i.path.join(".") || "(top)"}: ${i.message}`).join("\n")}`,
    );
  }
  const problems: string[] = [];
  const sites = new Map(r.data.sites.map((s) => [s.name, s]));
  if (sites.size !== r.data.sites.length) problems.push("site names must be unique");
  const hosts = new Map<string, Site>();
  for (const h of r.data.hosts) {
    const site = sites.get(h.site);
    if (!site) problems.push(`host ${h.name}: no site named "${h.site}"`);
    else {
      if (h.address && !prefixContains(parsePrefix(site.prefix), parseIpv6(h.address))) {
        problems.push(`host ${h.name}: address ${h.address} is outside site ${site.name}'s ${site.prefix}`);
      }
      hosts.set(h.name, site);
    }
  }
  if (problems.length > 0)
    throw new SitesError(`${source} is not valid:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
  return {
    siteOfHost(host) {
      const s = hosts.get(host);
      if (!s)
        throw new SitesError(`host "${host}" is not in ${source} (hosts: ${[...hosts.keys()].join(", ")})`);
      return s;
    },
    hosts: () => [...hosts.keys()],
    document: () => r.data,
  };
}

// The lab topology: the paper's Figure 3 (a correspondent, an IPv6 router with one LAN per site, Xen-like
// hosts, a VM with two vifs) as a validated value. Pure: parsing and checks only, no system access.

import {
  formatIpv6,
  interfaceNameProblem,
  type Ipv6,
  isLinkLocal,
  parseIpv6,
  parsePrefix,
  prefixContains,
  prefixesOverlap,
  radvdIntervalProblem,
} from "@xenroam/core";
import {
  advertiseSchema,
  ipv6Field,
  linkLocalField,
  prefix64Field,
  unicastMacField,
} from "@xenroam/protocol";
import { z } from "zod";
import { routerAddress } from "./addresses.js";

const nodeName = z
  .string()
  .regex(/^[a-z][a-z0-9]{0,7}$/, "must be 1-8 characters: a lower-case letter, then letters or digits");

const ipv6 = ipv6Field;
const prefix64 = prefix64Field;
const mac = unicastMacField;

const gateway = z.strictObject({
  linkLocal: linkLocalField,
  mac,
});

const ra = z
  .strictObject({
    minIntervalMs: z.number().positive(),
    maxIntervalMs: z.number().positive(),
  })
  .superRefine((r, ctx) => {
    const problem = radvdIntervalProblem(r.minIntervalMs, r.maxIntervalMs);
    if (problem) ctx.addIssue({ code: "custom", message: problem });
  });

const site = z.strictObject({
  name: nodeName,
  prefix: prefix64,
  gateway,
  ra: ra.default({ minIntervalMs: 3000, maxIntervalMs: 4000 }),
  /** What the site's router advertises beside the prefix (and the sites document passes to staging RAs). */
  advertise: z.optional(advertiseSchema),
});

const host = z.strictObject({
  name: nodeName,
  site: nodeName,
  address: ipv6("host address"),
});

const vm = z.strictObject({
  name: nodeName,
  domid: z.number().int().min(1).max(32_000),
  host: nodeName,
  primaryMac: mac,
  secondaryMac: mac,
  /**
   * How the guest's kernel makes interface identifiers (net.ipv6.conf.*.addr_gen_mode): 0 EUI-64, 2
   * stable-privacy (RFC 7217, with a stable_secret), 3 random. 1 (none) would leave the guest without SLAAC.
   */
  addrGenMode: z.union([z.literal(0), z.literal(2), z.literal(3)]).default(0),
  /** Privacy extensions (use_tempaddr): 2 makes temporary addresses and prefers them as source. */
  useTempaddr: z.union([z.literal(0), z.literal(1), z.literal(2)]).default(0),
  /**
   * Its home address with the mobility layer. The first VM's is `mobility.hoa` (this is then optional and,
   * given, must equal it); every other VM needs its own.
   */
  hoa: z.optional(ipv6Field("home address")),
});

const port = z.number().int().min(1).max(65535);

/** The mobility layer: the VM keeps a home address; a control server runs on the router, on the CN segment. */
const mobility = z.strictObject({
  hoa: ipv6("home address"),
  controlPort: port.default(7360),
  bindingPort: port.default(7361),
  /**
   * Where the control server keeps its registry: one SQLite file, or a three-member etcd cluster (Debian's
   * etcd, its members under the lab's supervisor in the router's namespace, on its loopback).
   */
  store: z.enum(["sqlite", "etcd"]).default("sqlite"),
  /** Control server replicas on the router (ports controlPort, controlPort+10, ...); more than one needs etcd. */
  replicas: z.number().int().min(1).max(3).default(1),
});

/**
 * How the lab's toolstack restores the VM, to show what each real toolstack's users get. `restore`: "lab"
 * honours the engine's hold (the old primary attached but unplugged until the guest has switched); "xl" restores
 * every vif plugged, as `xl migrate-receive` does; "xapi" drives the lab through the lab's XAPI (xapi.ts), which
 * restores every vif plugged too, runs xenroam's real XAPI hooks where xenopsd runs them and serves the real
 * xen-api client. `reconnectMs`: the guest's frontends reconnect this long
 * after resume (no carrier on any vif until then), as netfront does on real Xen — 304–436 ms measured on the
 * real-Xen rig (docs/xen-test-2026-11-22-hoa.log); 0 gives the carrier back before resume, as the lab once did.
 */
const toolstackShape = z.strictObject({
  restore: z.enum(["lab", "xl", "xapi"]).default("lab"),
  reconnectMs: z.number().int().min(0).max(10_000).default(300),
  /**
   * "xapi": how long the memory copy takes between the destination plugging the incoming domain's VIFs and
   * the pause (what the vif-hotplug hook has to write the guest's arrival; xenopsd does not wait for it).
   * 1 s is a 256 MB guest's pre-copy at ~2 Gbit/s; the real-Xen rig's took 3-8 s.
   */
  precopyMs: z.number().int().min(0).max(60_000).default(1000),
});

const correspondent = z.strictObject({
  name: nodeName,
  prefix: prefix64,
  address: ipv6("correspondent address"),
  gateway,
});

export const topologySchema = z.strictObject({
  name: z
    .string()
    .regex(/^[a-z][a-z0-9]{0,5}$/, "must be 1-6 characters: a lower-case letter, then letters or digits"),
  mtu: z.number().int().min(1280).max(9000).default(1500),
  router: z.strictObject({ name: nodeName }).default({ name: "router" }),
  correspondent,
  sites: z.array(site).min(2, "needs at least two sites (a source and a destination subnet)"),
  hosts: z.array(host).min(2, "needs at least two hosts"),
  vm,
  /**
   * More VMs beside `vm` (two VMs prepared to one site at once, an evacuation): each with its own name, domid,
   * MACs and, with the mobility layer, home address. `xenroam-lab up --vms N` makes them.
   */
  extraVms: z.array(vm).max(127, "at most 127 extra VMs").default([]),
  bridges: z
    .strictObject({ real: z.string(), parking: z.string() })
    .default({ real: "xenbr0", parking: "xrpark0" }),
  mobility: mobility.optional(),
  toolstack: toolstackShape.default({ restore: "lab", reconnectMs: 300, precopyMs: 1000 }),
});

export type Topology = z.output<typeof topologySchema>;
export type TopologyInput = z.input<typeof topologySchema>;
export type Site = Topology["sites"][number];
export type Host = Topology["hosts"][number];
export type Vm = Topology["vm"];

/** Every VM of the lab, the first (`vm`) first. */
export const labVms = (t: Topology): readonly Vm[] => [t.vm, ...t.extraVms];

/** A VM's home address with the mobility layer (undefined without it). */
export function hoaOf(t: Topology, vm: Vm): string | undefined {
  if (!t.mobility) return undefined;
  return vm.name === t.vm.name ? t.mobility.hoa : vm.hoa;
}

/** The VM of that name, or an error naming the lab's VMs. */
export function vmOf(t: Topology, name: string): Vm {
  const vm = labVms(t).find((v) => v.name === name);
  if (!vm)
    throw new Error(
      `no VM named "${name}" in lab "${t.name}" (its VMs: ${labVms(t)
        .map((v) => v.name)
        .join(", ")})`,
    );
  return vm;
}

export class TopologyError extends Error {
  override readonly name = "TopologyError";
  constructor(
    readonly source: string,
    readonly problems: readonly string[],
  ) {
    super(`${source} is not a valid lab topology:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
  }
}

const pathText = (path: readonly PropertyKey[]) =>
  path.reduce<string>(
    (acc, k) => (typeof k === "number" ? `${acc}[${k}]` : acc ? `${acc}.${String(k)}` : String(k)),
    "",
  );

/** Cross-field rules a schema cannot express: names unique, references resolve, addresses fit prefixes. */
function semanticProblems(t: Topology): string[] {
  const problems: string[] = [];
  const vms = labVms(t);
  const names = [
    t.router.name,
    t.correspondent.name,
    ...vms.map((v) => v.name),
    ...t.hosts.map((h) => h.name),
  ];
  for (const n of new Set(names)) {
    if (names.filter((x) => x === n).length > 1) problems.push(`node name "${n}" is used twice`);
  }
  const siteNames = t.sites.map((s) => s.name);
  for (const n of new Set(siteNames)) {
    if (siteNames.filter((x) => x === n).length > 1) problems.push(`site name "${n}" is used twice`);
  }
  const segments = [
    ...t.sites.map((s) => ({ what: `sites.${s.name}`, ...s })),
    { what: "correspondent", ...t.correspondent },
  ];
  segments.forEach((a, i) => {
    for (const b of segments.slice(i + 1)) {
      if (prefixesOverlap(parsePrefix(a.prefix), parsePrefix(b.prefix))) {
        problems.push(`${a.what}.prefix ${a.prefix} overlaps ${b.what}.prefix ${b.prefix}`);
      }
      if (a.gateway.mac === b.gateway.mac)
        problems.push(`${a.what} and ${b.what} share gateway MAC ${a.gateway.mac}`);
    }
  });
  t.hosts.forEach((h, i) => {
    const s = t.sites.find((x) => x.name === h.site);
    if (!s) {
      problems.push(`hosts[${i}].site: no site named "${h.site}" (sites: ${siteNames.join(", ")})`);
    } else if (!prefixContains(parsePrefix(s.prefix), parseIpv6(h.address))) {
      problems.push(`hosts[${i}].address ${h.address} is not inside site ${s.name}'s prefix ${s.prefix}`);
    }
  });
  for (const [what, addr, prefix] of [
    ...t.hosts.map(
      (h) => [`host ${h.name}`, h.address, t.sites.find((s) => s.name === h.site)?.prefix] as const,
    ),
    ["correspondent", t.correspondent.address, t.correspondent.prefix] as const,
  ]) {
    if (prefix && addr === routerAddress(prefix))
      problems.push(`${what} address ${addr} is the router's (::1 of the prefix)`);
  }
  if (!prefixContains(parsePrefix(t.correspondent.prefix), parseIpv6(t.correspondent.address))) {
    problems.push(`correspondent.address ${t.correspondent.address} is not inside ${t.correspondent.prefix}`);
  }
  vms.forEach((v, i) => {
    const what = i === 0 ? "vm" : `extraVms[${i - 1}]`;
    if (!t.hosts.some((h) => h.name === v.host)) problems.push(`${what}.host: no host named "${v.host}"`);
    if (v.primaryMac === v.secondaryMac)
      problems.push(`${what}.primaryMac and ${what}.secondaryMac must differ`);
  });
  const unique = (what: string, values: readonly (string | number)[]) => {
    for (const x of new Set(values)) {
      if (values.filter((y) => y === x).length > 1) problems.push(`${what} ${x} is used by two VMs`);
    }
  };
  // One domid space for the whole lab (Xen's is per host; a lab-wide one keeps every xenstore path unique).
  unique(
    "domid",
    vms.map((v) => v.domid),
  );
  unique(
    "MAC",
    vms.flatMap((v) => [v.primaryMac, v.secondaryMac]),
  );
  if (vms.length > 1 && t.toolstack.restore === "xapi")
    problems.push(
      'extraVms: the lab\'s XAPI models a pool with one VM (toolstack.restore "xapi"); use "lab" or "xl" for several VMs',
    );
  if (new Set(t.hosts.map((h) => h.site)).size < 2) problems.push("hosts must span at least two sites");
  for (const [key, name] of Object.entries(t.bridges)) {
    const p = interfaceNameProblem(name);
    if (p) problems.push(`bridges.${key} "${name}" ${p}`);
  }
  if (t.bridges.real === t.bridges.parking) problems.push("bridges.real and bridges.parking must differ");
  if (t.mobility) {
    const hoa = parseIpv6(t.mobility.hoa);
    if (isLinkLocal(hoa)) problems.push(`mobility.hoa ${t.mobility.hoa} is link-local; it must be routable`);
    for (const seg of segments) {
      if (prefixContains(parsePrefix(seg.prefix), hoa)) {
        problems.push(
          `mobility.hoa ${t.mobility.hoa} is inside ${seg.what}.prefix ${seg.prefix}; a home address belongs to no site`,
        );
      }
    }
    if (t.vm.hoa !== undefined && t.vm.hoa !== t.mobility.hoa)
      problems.push(`vm.hoa ${t.vm.hoa} differs from mobility.hoa ${t.mobility.hoa}; give it once`);
    t.extraVms.forEach((v, i) => {
      if (v.hoa === undefined) problems.push(`extraVms[${i}].hoa: every VM needs its own home address`);
    });
    const hoas = vms.flatMap((v) => hoaOf(t, v) ?? []);
    unique(
      "home address",
      hoas.map((h) => formatIpv6(parseIpv6(h))),
    );
    for (const h of hoas.slice(1)) {
      const a = parseIpv6(h);
      if (isLinkLocal(a)) problems.push(`home address ${h} is link-local; it must be routable`);
      for (const seg of segments) {
        if (prefixContains(parsePrefix(seg.prefix), a))
          problems.push(
            `home address ${h} is inside ${seg.what}.prefix ${seg.prefix}; a home address belongs to no site`,
          );
      }
    }
    if (t.mobility.controlPort === t.mobility.bindingPort) {
      problems.push("mobility.controlPort and mobility.bindingPort must differ");
    }
    if (t.mobility.replicas > 1 && t.mobility.store !== "etcd") {
      problems.push(
        `mobility.replicas ${t.mobility.replicas} needs mobility.store "etcd": replicas share their registry through etcd, not one SQLite file`,
      );
    }
    if (t.mobility.controlPort + 10 * (t.mobility.replicas - 1) > 65535) {
      problems.push(
        `mobility.controlPort ${t.mobility.controlPort} leaves no port for replica ${t.mobility.replicas}`,
      );
    }
  }
  return problems;
}

/** Validates a parsed JSON value; `source` names it in errors (a file path, "default topology"). */
export function parseTopology(value: unknown, source = "topology"): Topology {
  const result = topologySchema.safeParse(value);
  if (!result.success) {
    throw new TopologyError(
      source,
      result.error.issues.map((i) => `${pathText(i.path) || "(top level)"}: ${i.message}`),
    );
  }
  const problems = semanticProblems(result.data);
  if (problems.length > 0) throw new TopologyError(source, problems);
  return result.data;
}

/**
 * Paper Figure 3: CN — router — site A (hosta, hosta2) and site B (hostb); the VM starts on hosta with the
 * home address 2001:db8:f::5, a control server on the router, and the correspondent agent on the CN.
 */
export const DEFAULT_TOPOLOGY: TopologyInput = {
  name: "xr",
  mtu: 1500,
  router: { name: "router" },
  correspondent: {
    name: "cn",
    prefix: "2001:db8:c::/64",
    address: "2001:db8:c::100",
    gateway: { linkLocal: "fe80::c:1", mac: "02:00:00:00:0c:01" },
  },
  sites: [
    {
      name: "a",
      prefix: "2001:db8:a::/64",
      gateway: { linkLocal: "fe80::a:1", mac: "02:00:00:00:0a:01" },
      ra: { minIntervalMs: 3000, maxIntervalMs: 4000 },
    },
    {
      name: "b",
      prefix: "2001:db8:b::/64",
      gateway: { linkLocal: "fe80::b:1", mac: "02:00:00:00:0b:01" },
      ra: { minIntervalMs: 3000, maxIntervalMs: 4000 },
    },
  ],
  hosts: [
    { name: "hosta", site: "a", address: "2001:db8:a::a" },
    { name: "hosta2", site: "a", address: "2001:db8:a::a2" },
    { name: "hostb", site: "b", address: "2001:db8:b::b" },
  ],
  vm: {
    name: "vm",
    domid: 5,
    host: "hosta",
    primaryMac: "00:16:3e:00:00:01",
    secondaryMac: "00:16:3e:00:00:02",
  },
  bridges: { real: "xenbr0", parking: "xrpark0" },
  mobility: { hoa: "2001:db8:f::5", controlPort: 7360, bindingPort: 7361 },
};

/** The most VMs a lab runs (each a namespace and a guest agent of ~50 MB: 128 take ~6 GB). */
export const MAX_LAB_VMS = 128;

/**
 * The topology with `total` VMs in all: the first as it is, the others beside it on its host, named vm2,
 * vm3, …, with the next domids, MACs 00:16:3e:00:NN:01 and :02 (NN the VM's number, hex), and home addresses
 * after the first's. Replaces any extra VMs the topology had.
 */
export function withVmCount(t: TopologyInput, total: number): TopologyInput {
  if (!Number.isInteger(total) || total < 1 || total > MAX_LAB_VMS)
    throw new TopologyError("--vms", [`${total} is not a VM count from 1 to ${MAX_LAB_VMS}`]);
  const hoa = t.mobility ? parseIpv6(t.mobility.hoa) : undefined;
  const hoaPlus = (k: number) => {
    if (!hoa) return undefined;
    const last = hoa[7] + k;
    if (last > 0xffff)
      throw new TopologyError("--vms", [`mobility.hoa ${t.mobility?.hoa} leaves no room for ${total} VMs`]);
    const groups = [...hoa.slice(0, 7), last] as unknown as Ipv6;
    return formatIpv6(groups);
  };
  const extraVms = Array.from({ length: total - 1 }, (_, i) => {
    const n = (i + 2).toString(16).padStart(2, "0");
    const h = hoaPlus(i + 1);
    return {
      name: `vm${i + 2}`,
      domid: t.vm.domid + i + 1,
      host: t.vm.host,
      primaryMac: `00:16:3e:00:${n}:01`,
      secondaryMac: `00:16:3e:00:${n}:02`,
      ...(t.vm.addrGenMode !== undefined ? { addrGenMode: t.vm.addrGenMode } : {}),
      ...(t.vm.useTempaddr !== undefined ? { useTempaddr: t.vm.useTempaddr } : {}),
      ...(h ? { hoa: h } : {}),
    };
  });
  return { ...t, extraVms };
}

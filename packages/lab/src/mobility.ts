// The lab's mobility layer: a control server (xenroam-control) on the router, on the correspondent's
// segment, serving TLS with a certificate from the lab's own CA, which every client pins; the VM's guest
// agent with a home address; the correspondent agent on the CN. Services are described here and run by the
// supervisor; provisioning (sites, the VM, the CN's token) goes through the control server's own CLI inside
// the router's namespace, as an admin would do it.

import { chmodSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createNft } from "@xenroam/mobility";
import { ETCD, etcdMemberArgs } from "@xenroam/process/etcd-cluster";
import { routerAddress } from "./addresses.js";
import { makeServerCertificate } from "./openssl.js";
import { netnsName } from "./plan.js";
import type { ServiceSpec } from "./supervisor.js";
import { netnsExec } from "./system.js";
import { hoaOf, labVms, type Topology, type Vm } from "./topology.js";

export type Mobility = NonNullable<Topology["mobility"]>;

export const FILES = {
  key: "control.key",
  publicKey: "control.key.pub",
  ca: "control-ca.pem",
  tlsCert: "control.crt",
  tlsKey: "control-tls.key",
  adminToken: "admin.token",
  database: "control.db",
  vmToken: "vm.token",
  cnToken: "cn.token",
  mobileState: "agent-mobile.json",
} as const;

/** A VM's token and its mobile state: the first VM's keep their old names (FILES), the others' carry theirs. */
export const vmTokenFile = (t: Topology, vm: string) => (vm === t.vm.name ? FILES.vmToken : `vm-${vm}.token`);
export const mobileStateFile = (t: Topology, vm: string) =>
  vm === t.vm.name ? FILES.mobileState : `agent-mobile-${vm}.json`;

/** A host's peer token: its xenroam relays the guest's activation at the pause (and rolls it back). */
export const hostTokenFile = (host: string) => `host-${host}.token`;

export const controlAddress = (t: Topology) => routerAddress(t.correspondent.prefix);

/** Each control server replica's port: controlPort, then 10 apart. */
export const replicaPort = (m: Mobility, i: number) => m.controlPort + 10 * i;

/** The supervisor's name for replica `i`: xenroam-control, then xenroam-control-2, -3. */
export const replicaServiceName = (i: number) => (i === 0 ? "xenroam-control" : `xenroam-control-${i + 1}`);

/** Each replica's URL, the first first. */
export function controlUrls(t: Topology, m: Mobility): string[] {
  return Array.from({ length: m.replicas }, (_, i) => `https://[${controlAddress(t)}]:${replicaPort(m, i)}`);
}

/** What every client is given: the replicas' URLs separated by commas (a client fails over between them). */
export function controlUrl(t: Topology, m: Mobility): string {
  return controlUrls(t, m).join(",");
}

/** The lab's etcd members: three, on the router's loopback, under the supervisor. */
export const ETCD_MEMBERS = 3;
const ETCD_CLIENT_PORT = 23790;
const ETCD_PEER_PORT = 23800;
export const etcdServiceName = (i: number) => `etcd-${i}`;
/** Member `i`'s client port on the router's loopback (127.0.0.1): where the replicas and the lab reach it. */
export const etcdClientPort = (i: number) => ETCD_CLIENT_PORT + i;

/**
 * The etcd members (with mobility.store "etcd"), each a supervisor service in the router's namespace with its
 * data under the lab's state directory: killed, the supervisor starts it again on its data and it catches up.
 */
export function etcdServices(t: Topology, stateDir: string): ServiceSpec[] {
  const cluster = Array.from({ length: ETCD_MEMBERS }, (_, i) => ({
    name: `m${i}`,
    peerPort: ETCD_PEER_PORT + i,
  }));
  return cluster.map((member, i) => ({
    name: etcdServiceName(i),
    netns: netnsName(t, t.router.name),
    argv: [
      ETCD,
      ...etcdMemberArgs({
        ...member,
        dataDir: join(stateDir, `etcd-${i}`),
        clientPort: etcdClientPort(i),
        gatewayPort: etcdClientPort(i),
        cluster,
        state: "new",
        token: `xenroam-lab-${t.name}`,
      }),
    ],
  }));
}

/** The control server replicas, run by the supervisor in the router's namespace. */
export function controlServices(
  t: Topology,
  m: Mobility,
  stateDir: string,
  control: readonly string[],
): ServiceSpec[] {
  const store =
    m.store === "etcd"
      ? [
          "--store",
          `etcd://${Array.from({ length: ETCD_MEMBERS }, (_, i) => `127.0.0.1:${etcdClientPort(i)}`).join(",")}`,
        ]
      : ["--database", join(stateDir, FILES.database)];
  return Array.from({ length: m.replicas }, (_, i) => controlService(t, m, stateDir, control, i, store));
}

function controlService(
  t: Topology,
  m: Mobility,
  stateDir: string,
  control: readonly string[],
  i: number,
  store: readonly string[],
): ServiceSpec {
  return {
    name: replicaServiceName(i),
    netns: netnsName(t, t.router.name),
    argv: [
      ...control,
      "serve",
      "--listen",
      `[${controlAddress(t)}]:${replicaPort(m, i)}`,
      ...store,
      "--key",
      join(stateDir, FILES.key),
      "--admin-token-file",
      join(stateDir, FILES.adminToken),
      "--tls-cert",
      join(stateDir, FILES.tlsCert),
      "--tls-key",
      join(stateDir, FILES.tlsKey),
    ],
  };
}

/** The guest agent's mobility options (appended to its command line). */
export function mobileAgentArgs(t: Topology, m: Mobility, stateDir: string, vm: Vm = t.vm): string[] {
  const hoa = hoaOf(t, vm);
  if (!hoa) throw new Error(`internal: VM ${vm.name} has no home address`);
  return [
    "--hoa",
    hoa,
    "--vm",
    vm.name,
    "--control",
    controlUrl(t, m),
    "--control-ca",
    join(stateDir, FILES.ca),
    "--token-file",
    join(stateDir, vmTokenFile(t, vm.name)),
    "--peer",
    `[${t.correspondent.address}]:${m.bindingPort}`,
    "--state-file",
    join(stateDir, mobileStateFile(t, vm.name)),
  ];
}

/** The correspondent agent on the CN. */
export function correspondentService(
  t: Topology,
  m: Mobility,
  stateDir: string,
  agent: readonly string[],
): ServiceSpec {
  return {
    name: "xenroam-correspondent",
    netns: netnsName(t, t.correspondent.name),
    argv: [
      ...agent,
      "--correspondent",
      "--control",
      controlUrl(t, m),
      "--control-ca",
      join(stateDir, FILES.ca),
      "--token-file",
      join(stateDir, FILES.cnToken),
      "--public-key",
      join(stateDir, FILES.publicKey),
      "--listen",
      `[${t.correspondent.address}]:${m.bindingPort}`,
    ],
  };
}

/**
 * Creates the signing key and admin token, and the lab's CA with the server's certificate for its address
 * (before the server starts).
 */
export async function initControl(t: Topology, stateDir: string, control: readonly string[]): Promise<void> {
  await netnsExec(netnsName(t, t.router.name), [
    ...control,
    "init",
    "--key",
    join(stateDir, FILES.key),
    "--admin-token-file",
    join(stateDir, FILES.adminToken),
  ]);
  await makeServerCertificate(
    { ca: join(stateDir, FILES.ca), cert: join(stateDir, FILES.tlsCert), key: join(stateDir, FILES.tlsKey) },
    controlAddress(t),
  );
}

/**
 * Once the server answers: the sites document, the VM (its HoA and vif MACs), a token for the CN and one for
 * each host (named as in the sites document, so the server knows them for hosts). The tokens go to files the
 * agents and the hosts' xenroam read. Retries while the server is still starting, up to `timeoutMs`.
 */
export async function provision(
  t: Topology,
  m: Mobility,
  stateDir: string,
  control: readonly string[],
  timeoutMs = 10_000,
): Promise<void> {
  const router = netnsName(t, t.router.name);
  const admin = [
    ...["--server", controlUrl(t, m), "--ca", join(stateDir, FILES.ca)],
    ...["--token-file", join(stateDir, FILES.adminToken)],
  ];
  const run = (args: string[]) => netnsExec(router, [...control, ...args, ...admin]);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await run(["put-sites", join(stateDir, "sites.json")]);
      break;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  const vms: Array<readonly [string, string]> = [];
  const all = labVms(t);
  // A few at a time: each is a CLI run (~0.3 s of CPU), and a lab may have a hundred VMs.
  for (let i = 0; i < all.length; i += 4) {
    const batch = await Promise.all(
      all.slice(i, i + 4).map(async (vm) => {
        const hoa = hoaOf(t, vm) ?? m.hoa;
        const added = JSON.parse(
          await run(["add-vm", vm.name, "--hoa", hoa, "--mac", vm.primaryMac, "--mac", vm.secondaryMac]),
        ) as { token: string };
        return [vmTokenFile(t, vm.name), added.token] as const;
      }),
    );
    vms.push(...batch);
  }
  const cn = JSON.parse(await run(["add-peer", t.correspondent.name])) as { token: string };
  const hosts = await Promise.all(
    t.hosts.map(async (h) => {
      const peer = JSON.parse(await run(["add-peer", h.name])) as { token: string };
      return [hostTokenFile(h.name), peer.token] as const;
    }),
  );
  for (const [file, token] of [...vms, [FILES.cnToken, cn.token] as const, ...hosts]) {
    writeFileSync(join(stateDir, file), `${token}\n`, { mode: 0o600 });
    chmodSync(join(stateDir, file), 0o600);
  }
}

/**
 * The admin vouches for a locator the VM registered that its MACs do not prove (the lab's VM at boot with
 * addr_gen_mode stable-privacy or random): `xenroam-control attest`, retried until the VM has registered it,
 * up to `timeoutMs`. Returns what the server answered.
 */
export async function attestLocator(
  t: Topology,
  m: Mobility,
  stateDir: string,
  control: readonly string[],
  locator: string,
  vm: string = t.vm.name,
  timeoutMs = 15_000,
): Promise<string> {
  const router = netnsName(t, t.router.name);
  const admin = [
    ...["--server", controlUrl(t, m), "--ca", join(stateDir, FILES.ca)],
    ...["--token-file", join(stateDir, FILES.adminToken)],
  ];
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await netnsExec(router, [...control, "attest", vm, locator, ...admin]);
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

/** The correspondent's egress map (HoA → locator), as nft lists it (empty while it has none). */
export async function cnLocators(t: Topology): Promise<ReadonlyMap<string, string>> {
  const nft = createNft({ netns: netnsName(t, t.correspondent.name) });
  return (await nft.mapElements("xenroam", "hoa_to_locator")) ?? new Map();
}

/** The correspondent's egress map for a HoA (the first VM's by default; undefined while it has none). */
export async function cnLocatorOf(t: Topology, m: Mobility, hoa = m.hoa): Promise<string | undefined> {
  return (await cnLocators(t)).get(hoa);
}

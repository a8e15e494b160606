// The XAPI adapter: the only code in xenroam that talks to XAPI (the npm `xen-api` client's session over the
// checked connections of xapi-wire.ts). Across pools: VM.migrate_send with a vif_map that maps each VIF to
// the destination network of its swapped bridge, which the destination applies before the VM resumes. Inside a pool the method is refused (see
// INTRA_POOL_REFUSAL): a plain VM.pool_migrate only. What the destination must tell the guest (it arrived)
// travels in the VM's other_config, which the cross-pool import copies into the destination's record before
// the domain is made there: its vif-hotplug hook writes it into the new domain as the VIFs are plugged,
// before the memory copy, and vm-post-migrate again after unpause (xapi-hooks.ts). The parking and staging
// networks have the same bridge names in every pool (xrpark0, xr-<site>), which the vif_map is matched by.

import { isIP } from "node:net";
import type { DomainInfo, MigrateRequest, Toolstack, VifInfo } from "@xenroam/protocol";
import type { XapiClient } from "xen-api";
import { HOOK_OTHER_CONFIG } from "../xapi-hooks.js";
import {
  jsonRpcTransport,
  type XapiEndpoint,
  xapiEndpoint,
  type XapiTrust,
  XapiTrustError,
} from "./xapi-wire.js";

export class XapiAdapterError extends Error {
  override readonly name = "XapiAdapterError";
}

/**
 * other_config keys the source sets before a migration with the method and the hooks read: the migration id
 * (pre-migrate checks the guest prepared it), the arrival (JSON: keys for the guest's vm-data/xenroam), the
 * swap (JSON: devid -> bridge).
 */
export const OTHER_CONFIG = HOOK_OTHER_CONFIG;

export interface Xapi {
  call<T = unknown>(method: string, ...args: unknown[]): Promise<T>;
  close(): Promise<void>;
}

/** How to reach a pool and whom to trust there (adapters/xapi-wire.ts). */
export interface XapiConnectOptions {
  /** A session XAPI handed a host plugin: no login, no password. */
  readonly sessionId?: string;
  readonly trust?: XapiTrust;
}

/**
 * The npm `xen-api` client keeps its session (login, HOST_IS_SLAVE, SESSION_INVALID) but runs over
 * xenroam's checked wire: its own transport takes no CA, pin or socket (and is Bun's `undici`, which ignores
 * connection options, in the XAPI bundle). The seam is the factory its `_setUrl` builds the transport with,
 * which it calls again when a pool member names the master; a client without it is refused rather than used
 * over its own, unchecked connection.
 */
function overChecked(client: XapiClient, endpoint: XapiEndpoint, trust: XapiTrust): void {
  const c = client as unknown as {
    _createTransport?: unknown;
    _setUrl?: (url: unknown) => void;
    _url?: { hostname?: string; hostnameRaw?: string };
  };
  if (typeof c._createTransport !== "function" || typeof c._setUrl !== "function" || !c._url)
    throw new XapiAdapterError(
      "this version of the xen-api package cannot be given xenroam's checked connection; refusing to talk to XAPI over its own",
    );
  c._createTransport = ({ url }: { url: { hostname: string; hostnameRaw?: string } }) => {
    if (endpoint.kind === "unix") return jsonRpcTransport(endpoint);
    // A pool member answered HOST_IS_SLAVE naming the master: the same scheme, port and trust, checked again.
    const host = (url.hostnameRaw ?? url.hostname).replace(/^\[|\]$/g, "");
    if (host === endpoint.host) return jsonRpcTransport(endpoint);
    try {
      const named = isIP(host) === 6 ? `[${host}]` : host;
      return jsonRpcTransport(xapiEndpoint(`${endpoint.kind}://${named}:${endpoint.port}`, trust));
    } catch (err) {
      const refused = err instanceof Error ? err : new Error(String(err));
      return () => Promise.reject(refused);
    }
  };
  c._setUrl(c._url);
}

/**
 * A session with a pool master (JSON-RPC): with a user and password, or with the session id XAPI hands a host
 * plugin. Over xapi's Unix socket in Dom0 (`unix:/var/lib/xcp/xapi`, no password needed), https:// with the
 * certificate checked (`trust`: a CA file, pinned SHA-256 fingerprints, else the system's CAs), or http://
 * on the loopback; a peer that fails the check gets nothing, not even the login.
 */
export async function connectXapi(
  url: string,
  user: string,
  password: string,
  options: XapiConnectOptions = {},
): Promise<Xapi> {
  let endpoint: XapiEndpoint;
  try {
    endpoint = xapiEndpoint(url, options.trust ?? {});
  } catch (err) {
    throw new XapiAdapterError((err as Error).message);
  }
  const { sessionId } = options;
  // xen-api (~27 MB of a Node.js process) is loaded only by a host that talks to XAPI.
  const { createClient } = await import("xen-api");
  const client: XapiClient = createClient({
    // The client parses this URL for its own bookkeeping only; the connection is xenroam's (overChecked).
    url: endpoint.kind === "unix" ? "http://localhost" : url,
    auth: sessionId ? { user, password, sessionId } : { user, password },
    allowUnauthorized: false,
    transport: "json-rpc",
    watchEvents: false,
  });
  overChecked(client, endpoint, options.trust ?? {});
  try {
    await client.connect();
  } catch (err) {
    if (err instanceof XapiTrustError) throw new XapiAdapterError(err.message);
    throw new XapiAdapterError(`cannot log in to XAPI at ${url}: ${(err as Error).message}`);
  }
  return {
    call: (method, ...args) => client.call(method, ...args),
    // A session XAPI handed the plugin is its caller's (xapi_host.ml 1494: Context.get_session_id): the
    // client's disconnect would log it out under them. Only a session xenroam opened is closed.
    close: sessionId ? async () => {} : () => client.disconnect(),
  };
}

interface VmRecord {
  uuid: string;
  name_label: string;
  domid: number | string;
  resident_on: string;
  VIFs: string[];
  other_config: Record<string, string>;
  power_state: string;
  /** Dom0's own VM record (xapi's datamodel: VM.is_control_domain). */
  is_control_domain?: boolean;
}

interface VifRecord {
  device: string;
  MAC: string;
  network: string;
}

interface NetworkRecord {
  bridge: string;
  name_label: string;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export async function vmRef(x: Xapi, vm: string): Promise<string> {
  if (UUID.test(vm)) return x.call<string>("VM.get_by_uuid", vm);
  const refs = await x.call<string[]>("VM.get_by_name_label", vm);
  if (refs.length === 0) throw new XapiAdapterError(`no VM named ${vm} in this pool`);
  if (refs.length > 1) throw new XapiAdapterError(`${refs.length} VMs are named ${vm}; give its uuid`);
  return refs[0] as string;
}

async function networksByBridge(x: Xapi): Promise<Map<string, string>> {
  const all = await x.call<Record<string, NetworkRecord>>("network.get_all_records");
  return new Map(Object.entries(all).map(([ref, n]) => [n.bridge, ref]));
}

export interface XapiOptions {
  readonly local: Xapi;
  /** A session with the destination's pool, for a host that is not in this one (cross-pool). */
  readonly remote?: () => Promise<Xapi>;
}

/**
 * Why xenroam refuses the method inside one pool. xenopsd plugs the VIFs of the incoming domain into the
 * bridges of their current networks before the memory copy (VM_receive_memory: VM_restore_vifs,
 * ocaml/xenopsd/lib/xenops_server.ml 1328-1333, 2693-2707; not again at restore, 1335), then unpauses and only
 * then runs vm-post-migrate (2820-2830). Inside a pool nothing can change a VIF's network before that:
 * VM.migrate_send refuses a vif_map (ocaml/xapi/xapi_vm_migrate.ml 1985-1994) and VM.pool_migrate passes none
 * (528); VIF.move re-bridges a running VM's vif (ocaml/xapi/xapi_vif.ml 67-77), so from vm-post-migrate it
 * lands after the guest resumed — with its old primary parked and its new one on the staging network's
 * isolated bridge: cut off until the move, worse than a plain migration. (xen-api e2ee48d6, v26.17.0.)
 */
export const INTRA_POOL_REFUSAL =
  "inside one XAPI pool the VIFs are attached to their current networks before the VM resumes and cannot be swapped until after it has (xenopsd plugs them before the memory copy; VM.migrate_send refuses a vif_map within a pool; VIF.move runs on the running VM), so the guest would be cut off until the swap; between pools (--xapi-remote) the vif_map swaps them before resume";

export class XapiToolstack implements Toolstack {
  constructor(private readonly o: XapiOptions) {}

  async methodRefusal(_vm: string, destination: string): Promise<string | undefined> {
    const hosts = await this.o.local.call<string[]>("host.get_by_name_label", destination);
    return hosts.length > 0 ? INTRA_POOL_REFUSAL : undefined;
  }

  /** The pool's record of what runs on `host` (host.resident_VMs), less the control domain and halted VMs. */
  async residents(host: string): Promise<string[]> {
    const x = this.o.local;
    const [ref] = await x.call<string[]>("host.get_by_name_label", host);
    if (!ref) throw new XapiAdapterError(`host ${host} is not in this pool`);
    const names: string[] = [];
    for (const vm of await x.call<string[]>("host.get_resident_VMs", ref)) {
      const rec = await x.call<VmRecord>("VM.get_record", vm);
      if (rec.is_control_domain || rec.power_state !== "Running") continue;
      names.push(rec.name_label);
    }
    return names.sort();
  }

  async domain(vm: string): Promise<DomainInfo> {
    const x = this.o.local;
    const ref = await vmRef(x, vm);
    const rec = await x.call<VmRecord>("VM.get_record", ref);
    if (rec.power_state !== "Running") throw new XapiAdapterError(`${vm} is ${rec.power_state}, not running`);
    const domid = Number(rec.domid);
    const host = await x.call<string>("host.get_name_label", rec.resident_on);
    const vifs: VifInfo[] = [];
    for (const v of rec.VIFs) {
      const r = await x.call<VifRecord>("VIF.get_record", v);
      const bridge = await x.call<string>("network.get_bridge", r.network);
      vifs.push({
        devid: Number(r.device),
        mac: r.MAC.toLowerCase(),
        ifname: `vif${domid}.${r.device}`,
        bridge,
      });
    }
    return { vm: rec.name_label, domid, host, vifs: vifs.sort((a, b) => a.devid - b.devid) };
  }

  async migrate(vm: string, destination: string, request: MigrateRequest): Promise<DomainInfo> {
    const x = this.o.local;
    const mark = request.mark ?? (() => {});
    const ref = await vmRef(x, vm);
    const hosts = await x.call<string[]>("host.get_by_name_label", destination);
    if (hosts.length === 0 && !this.o.remote) {
      throw new XapiAdapterError(
        `host ${destination} is not in this pool; give the destination pool with --xapi-remote URL`,
      );
    }
    // The destination's hook finds here what to tell the guest and how the VIFs must end up.
    // Only a migration with the method has anything for the hooks (a plain one leaves the VM untouched).
    const method = Object.keys(request.guestWrites ?? {}).length > 0;
    if (method && hosts.length > 0) throw new XapiAdapterError(`not with the method: ${INTRA_POOL_REFUSAL}`);
    const keys: Array<[string, string]> = method
      ? [
          [OTHER_CONFIG.migration, request.migrationId],
          [OTHER_CONFIG.arrival, JSON.stringify(request.guestWrites ?? {})],
        ]
      : [];
    for (const [k, v] of keys) {
      await x.call("VM.remove_from_other_config", ref, k);
      await x.call("VM.add_to_other_config", ref, k, v);
    }
    let crossed = false;
    try {
      if (hosts.length > 0) {
        // A plain migration: each VIF stays on its network (the method is refused above).
        mark("pool-migrate");
        await x.call("VM.pool_migrate", ref, hosts[0], { live: "true" });
        mark("running-on-destination");
      } else {
        if (!this.o.remote) throw new XapiAdapterError("internal: no remote pool");
        const remote = await this.o.remote();
        try {
          await this.migrateAcross(ref, destination, remote, request.bridges, mark);
          crossed = true;
        } finally {
          await remote.close().catch(() => {});
        }
      }
    } finally {
      // Across pools the keys left with the VM, for the destination's hook; otherwise they go now.
      if (!crossed) {
        for (const [k] of keys) await x.call("VM.remove_from_other_config", ref, k).catch(() => {});
      }
    }
    if (hosts.length > 0) return this.domain(vm);
    return { vm, domid: -1, host: destination, vifs: [] };
  }

  private async migrateAcross(
    ref: string,
    destination: string,
    remote: Xapi,
    bridges: Readonly<Record<number, string>>,
    mark: (phase: string) => void,
  ): Promise<void> {
    const x = this.o.local;
    const [destHost] = await remote.call<string[]>("host.get_by_name_label", destination);
    if (!destHost) throw new XapiAdapterError(`no host named ${destination} in the destination pool`);
    const pif = await remote.call<string>("host.get_management_interface", destHost);
    const mgmt = await remote.call<string>("PIF.get_network", pif);
    const theirs = await networksByBridge(remote);
    const vifMap: Record<string, string> = {};
    for (const v of await x.call<string[]>("VM.get_VIFs", ref)) {
      const r = await x.call<VifRecord>("VIF.get_record", v);
      const bridge = bridges[Number(r.device)] ?? (await x.call<string>("network.get_bridge", r.network));
      const net = theirs.get(bridge);
      if (!net) throw new XapiAdapterError(`the destination pool has no network on bridge ${bridge}`);
      vifMap[v] = net;
    }
    const token = await remote.call<Record<string, string>>("host.migrate_receive", destHost, mgmt, {});
    await x.call("VM.assert_can_migrate", ref, token, true, {}, vifMap, {});
    mark("migrate-send");
    await x.call("VM.migrate_send", ref, token, true, {}, vifMap, {});
    mark("running-on-destination");
  }
}

// An in-repo fake XAPI pool speaking JSON-RPC (POST /jsonrpc) as the real xen-api client expects: enough of
// session, pool, system, VM, VIF, network, host and PIF to check the adapter's call sequence and contract.
// Its migrations keep xapi's and xenopsd's order, read at xapi-project/xen-api e2ee48d6 (v26.17.0), in
// `timeline`: the incoming domain's VIFs are plugged into their networks' bridges before the memory copy
// (ocaml/xenopsd/lib/xenops_server.ml 1328-1333, 2693-2707), the domain is unpaused, and only then does
// vm-post-migrate run (2820-2830); VIF.move re-bridges the running VM's vif (ocaml/xapi/xapi_vif.ml 67-77).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";

export interface FakeVm {
  uuid: string;
  name_label: string;
  domid: number;
  resident_on: string;
  VIFs: string[];
  other_config: Record<string, string>;
  power_state: string;
}

export interface FakePool {
  hosts: Record<string, { name_label: string; pif: string }>;
  networks: Record<
    string,
    { bridge: string; name_label: string; other_config?: Record<string, string>; attached?: string[] }
  >;
  vms: Record<string, FakeVm>;
  vifs: Record<string, { device: string; MAC: string; network: string; VM: string }>;
  pifs: Record<string, { network: string }>;
}

export interface Call {
  readonly method: string;
  readonly args: unknown[];
}

/** What xenopsd does to a migrating VM, in order (the networks are refs of the pool that holds the VM then). */
export type Event =
  | {
      readonly event: "vifs-plugged";
      readonly pool: "local" | "remote";
      readonly networks: Record<string, string>;
    }
  | { readonly event: "unpaused" }
  | { readonly event: "hook"; readonly hook: "vm-post-migrate" }
  | { readonly event: "vif-moved"; readonly device: string; readonly network: string };

class Failure extends Error {
  constructor(
    readonly code: string,
    readonly params: string[] = [],
  ) {
    super(code);
  }
}

export class FakeXapi {
  readonly calls: Call[] = [];
  readonly timeline: Event[] = [];
  private server: Server | undefined;
  url = "";
  /** Set to make a method fail with an XAPI error code. */
  readonly failures = new Map<string, string>();

  constructor(readonly pool: FakePool) {}

  /**
   * Every request body that arrived, in order, before any parsing: the login's password is in one of them. A
   * client that refuses the server's certificate leaves this empty.
   */
  readonly bodies: string[] = [];
  /** Connections accepted: a client that then refused the server's certificate still counts here. */
  connections = 0;
  /** The session id the pool hands out and accepts. */
  session = "OpaqueRef:session";
  /** A pool member, not the master: logins answer HOST_IS_SLAVE with this (the master's address). */
  memberOf: string | undefined;
  /** Called with each request's body as it arrives (a test looks around while the client waits). */
  onRequest: ((body: string) => void) | undefined;
  private preauth = false;

  /**
   * Listens on 127.0.0.1 over HTTP (the default), over HTTPS with `tls`, or on a Unix socket as xapi's own
   * in Dom0 (`socketPath`: logins there need no password, as xapi's preauth).
   */
  async start(
    o: {
      readonly tls?: { key: string; cert: string };
      readonly socketPath?: string;
      /** Where to listen (127.0.0.1, any free port, by default). */
      readonly address?: string;
      readonly port?: number;
    } = {},
  ): Promise<this> {
    const handler = (req: IncomingMessage, res: ServerResponse) => {
      let body = "";
      req.on("data", (c) => (body += String(c)));
      req.on("end", () => {
        this.bodies.push(body);
        this.onRequest?.(body);
        const msg = JSON.parse(body) as { id: unknown; method: string; params: unknown[] };
        let reply: Record<string, unknown>;
        try {
          reply = { result: this.handle(msg.method, msg.params) };
        } catch (err) {
          const f = err instanceof Failure ? err : new Failure("INTERNAL_ERROR", [String(err)]);
          reply = { error: { code: 1, message: f.code, data: f.params } };
        }
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify({ jsonrpc: "2.0", id: msg.id, ...reply }));
      });
    };
    const server = o.tls ? createHttpsServer(o.tls, handler) : createServer(handler);
    server.on("connection", () => this.connections++);
    this.server = server;
    if (o.socketPath) {
      const path = o.socketPath;
      this.preauth = true;
      await new Promise<void>((r) => server.listen(path, () => r()));
      this.url = `unix:${path}`;
      return this;
    }
    const address = o.address ?? "127.0.0.1";
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(o.port ?? 0, address, () => resolve());
    });
    this.url = `${o.tls ? "https" : "http"}://${address}:${(server.address() as AddressInfo).port}`;
    return this;
  }

  async stop(): Promise<void> {
    await new Promise<void>((r) => this.server?.close(() => r()));
  }

  /** The calls after login, without the session argument; pool/system introspection left out. */
  sequence(): string[] {
    return this.calls.map((c) => c.method).filter((m) => !/^(session|pool|system)\./.test(m));
  }

  private networksOf(v: FakeVm): Record<string, string> {
    const out: Record<string, string> = {};
    for (const ref of v.VIFs) {
      const r = this.pool.vifs[ref];
      if (r) out[r.device] = r.network;
    }
    return out;
  }

  /** The bridge of each VIF (by device) when the migrated VM was unpaused, from `timeline`. */
  bridgesAtUnpause(remote?: FakePool): Record<string, string> | undefined {
    const at = this.timeline.findIndex((e) => e.event === "unpaused");
    if (at < 0) return undefined;
    const nets: Record<string, string> = {};
    let pool: FakePool = this.pool;
    for (const e of this.timeline.slice(0, at)) {
      if (e.event === "vifs-plugged") {
        Object.assign(nets, e.networks);
        pool = e.pool === "remote" && remote ? remote : this.pool;
      }
      if (e.event === "vif-moved") nets[e.device] = e.network;
    }
    return Object.fromEntries(Object.entries(nets).map(([d, n]) => [d, pool.networks[n]?.bridge ?? "?"]));
  }

  private handle(method: string, params: unknown[]): unknown {
    const [, ...args] = params;
    if (method === "session.login_with_password") {
      // A member names the master (ocaml/xapi/xapi_session.ml: login_with_password raises HOST_IS_SLAVE).
      if (this.memberOf !== undefined) throw new Failure("HOST_IS_SLAVE", [this.memberOf]);
      // xapi's own Unix socket is pre-authenticated as root (ocaml/xapi/xapi_session.ml, login_with_password).
      if (!this.preauth && (params[0] !== "root" || params[1] !== "secret"))
        throw new Failure("SESSION_AUTHENTICATION_FAILED");
      return this.session;
    }
    if (params[0] !== this.session && method !== "system.listMethods") throw new Failure("SESSION_INVALID");
    this.calls.push({ method, args });
    const fail = this.failures.get(method);
    if (fail) throw new Failure(fail);
    const p = this.pool;
    const vm = (ref: unknown) => {
      const v = p.vms[String(ref)];
      if (!v) throw new Failure("HANDLE_INVALID", ["VM", String(ref)]);
      return v;
    };
    switch (method) {
      case "session.logout":
        return "";
      case "pool.get_all_records":
        return { "OpaqueRef:pool": { master: Object.keys(p.hosts)[0], other_config: {} } };
      case "system.listMethods":
        return [
          "VM.get_all_records",
          "VIF.get_all_records",
          "network.get_all_records",
          "host.get_all_records",
        ];
      case "VM.get_by_name_label":
        return Object.entries(p.vms)
          .filter(([, v]) => v.name_label === args[0])
          .map(([r]) => r);
      case "VM.get_by_uuid": {
        const hit = Object.entries(p.vms).find(([, v]) => v.uuid === args[0]);
        if (!hit) throw new Failure("UUID_INVALID", ["VM", String(args[0])]);
        return hit[0];
      }
      case "VM.get_record":
        return vm(args[0]);
      case "VM.get_VIFs":
        return vm(args[0]).VIFs;
      case "VM.add_to_other_config": {
        const v = vm(args[0]);
        if (String(args[1]) in v.other_config) throw new Failure("MAP_DUPLICATE_KEY");
        v.other_config[String(args[1])] = String(args[2]);
        return "";
      }
      case "VM.remove_from_other_config":
        delete vm(args[0]).other_config[String(args[1])];
        return "";
      case "VM.pool_migrate": {
        const v = vm(args[0]);
        if (!p.hosts[String(args[1])]) throw new Failure("HANDLE_INVALID", ["host", String(args[1])]);
        // No vif_map inside a pool (xapi_vm_migrate.ml 528): each VIF goes to its current network's bridge.
        this.timeline.push({ event: "vifs-plugged", pool: "local", networks: this.networksOf(v) });
        v.resident_on = String(args[1]);
        v.domid += 1;
        this.timeline.push({ event: "unpaused" }, { event: "hook", hook: "vm-post-migrate" });
        return "";
      }
      case "VM.assert_can_migrate":
      case "VM.migrate_send": {
        const v = vm(args[0]);
        const token = args[1] as Record<string, string>;
        const vifMap = (args[4] ?? {}) as Record<string, string>;
        // xapi_vm_migrate.ml 1985-1994: within a pool a vif_map is refused.
        if (token.master === this.url && Object.keys(vifMap).length > 0) {
          throw new Failure("OPERATION_NOT_ALLOWED", [
            "VIF mapping is not allowed for intra-pool migration -all VIFs must be on the same network",
          ]);
        }
        if (method === "VM.assert_can_migrate") return "";
        // Across pools the map is applied before the VIFs are plugged (xapi_vm_migrate.ml 1657-1676, 697-706;
        // import.ml 1571-1592), so they reach the destination's mapped networks before unpause.
        const mapped: Record<string, string> = {};
        for (const ref of v.VIFs) {
          const r = p.vifs[ref];
          if (r) mapped[r.device] = vifMap[ref] ?? r.network;
        }
        this.timeline.push(
          { event: "vifs-plugged", pool: "remote", networks: mapped },
          { event: "unpaused" },
          { event: "hook", hook: "vm-post-migrate" },
        );
        v.power_state = "Halted"; // gone from this pool
        return "OpaqueRef:remote-vm";
      }
      case "VIF.get_record": {
        const r = p.vifs[String(args[0])];
        if (!r) throw new Failure("HANDLE_INVALID", ["VIF", String(args[0])]);
        return r;
      }
      case "VIF.move": {
        const r = p.vifs[String(args[0])];
        if (!r || !p.networks[String(args[1])]) throw new Failure("HANDLE_INVALID");
        r.network = String(args[1]);
        this.timeline.push({ event: "vif-moved", device: r.device, network: r.network });
        return "";
      }
      case "network.create": {
        // ocaml/xapi/xapi_network.ml 254-270: a given bridge name must not start with xen, xapi, vif, tap or
        // eth, nor be longer than 15 characters; without one xapi picks xapiN (213-234).
        const rec = args[0] as { name_label: string; bridge?: string; other_config?: Record<string, string> };
        let bridge = rec.bridge ?? "";
        if (bridge === "") {
          for (let n = 0; ; n++) {
            if (!Object.values(p.networks).some((x) => x.bridge === `xapi${n}`)) {
              bridge = `xapi${n}`;
              break;
            }
          }
        } else if (/^(xen|xapi|vif|tap|eth)/.test(bridge) || bridge.length > 15) {
          throw new Failure("INVALID_VALUE", ["bridge", bridge]);
        } else if (Object.values(p.networks).some((x) => x.bridge === bridge)) {
          throw new Failure("BRIDGE_NAME_EXISTS", [bridge]);
        }
        const ref = `OpaqueRef:net-${Object.keys(p.networks).length}`;
        p.networks[ref] = { bridge, name_label: rec.name_label, other_config: { ...rec.other_config } };
        return ref;
      }
      case "network.attach": {
        // xapi_network.ml 160-161, 88-142: makes an internal network's bridge on the host.
        const n = p.networks[String(args[0])];
        if (!n || !p.hosts[String(args[1])]) throw new Failure("HANDLE_INVALID");
        n.attached = [...new Set([...(n.attached ?? []), String(args[1])])];
        return "";
      }
      case "VIF.get_device": {
        const r = p.vifs[String(args[0])];
        if (!r) throw new Failure("HANDLE_INVALID", ["VIF", String(args[0])]);
        return r.device;
      }
      case "network.get_uuid": {
        if (!p.networks[String(args[0])]) throw new Failure("HANDLE_INVALID", ["network", String(args[0])]);
        return `5e1d4f4e-0000-4000-9000-${String(args[0])
          .replace(/[^a-z0-9]/gi, "")
          .slice(-12)
          .padStart(12, "0")}`;
      }
      case "network.get_bridge":
        return p.networks[String(args[0])]?.bridge ?? "";
      case "network.get_all_records":
        return p.networks;
      case "host.get_by_name_label":
        return Object.entries(p.hosts)
          .filter(([, h]) => h.name_label === args[0])
          .map(([r]) => r);
      case "host.get_name_label":
        return p.hosts[String(args[0])]?.name_label ?? "";
      case "host.get_management_interface":
        return p.hosts[String(args[0])]?.pif ?? "";
      case "PIF.get_network":
        return p.pifs[String(args[0])]?.network ?? "";
      case "host.migrate_receive":
        return { master: this.url, session_id: "OpaqueRef:dest-session", xenops: "…" };
      default:
        throw new Failure("MESSAGE_METHOD_UNKNOWN", [method]);
    }
  }
}

/** A pool with hosts a and a2 (site a), networks on xenbr0 and xrpark0, and VM web1 with two VIFs. */
export function poolA(): FakePool {
  return {
    hosts: {
      "OpaqueRef:ha": { name_label: "hosta", pif: "OpaqueRef:pifa" },
      "OpaqueRef:ha2": { name_label: "hosta2", pif: "OpaqueRef:pifa2" },
    },
    networks: {
      "OpaqueRef:n-real": { bridge: "xenbr0", name_label: "Pool-wide network on eth0" },
      "OpaqueRef:n-park": { bridge: "xrpark0", name_label: "xenroam parking" },
    },
    pifs: {
      "OpaqueRef:pifa": { network: "OpaqueRef:n-real" },
      "OpaqueRef:pifa2": { network: "OpaqueRef:n-real" },
    },
    vms: {
      "OpaqueRef:vm": {
        uuid: "5e1d4f4e-0000-4000-8000-000000000001",
        name_label: "web1",
        domid: 5,
        resident_on: "OpaqueRef:ha",
        VIFs: ["OpaqueRef:vif0", "OpaqueRef:vif1"],
        other_config: {},
        power_state: "Running",
      },
    },
    vifs: {
      "OpaqueRef:vif0": {
        device: "0",
        MAC: "00:16:3E:00:00:10",
        network: "OpaqueRef:n-real",
        VM: "OpaqueRef:vm",
      },
      "OpaqueRef:vif1": {
        device: "1",
        MAC: "00:16:3e:00:01:10",
        network: "OpaqueRef:n-park",
        VM: "OpaqueRef:vm",
      },
    },
  };
}

/** Another pool with host b, and its own networks on the same bridge names. */
export function poolB(): FakePool {
  return {
    hosts: { "OpaqueRef:hb": { name_label: "hostb", pif: "OpaqueRef:pifb" } },
    networks: {
      "OpaqueRef:b-real": { bridge: "xenbr0", name_label: "Pool-wide network on eth0" },
      "OpaqueRef:b-park": { bridge: "xrpark0", name_label: "xenroam parking" },
    },
    pifs: { "OpaqueRef:pifb": { network: "OpaqueRef:b-real" } },
    vms: {},
    vifs: {},
  };
}

// An in-repo fake XAPI pool speaking JSON-RPC (POST /jsonrpc) as the real xen-api client expects: enough of
// session, pool, system, VM, VIF, network, host and PIF to check the adapter's call sequence and contract.
import { createServer, type Server } from "node:http";
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
  networks: Record<string, { bridge: string; name_label: string }>;
  vms: Record<string, FakeVm>;
  vifs: Record<string, { device: string; MAC: string; network: string; VM: string }>;
  pifs: Record<string, { network: string }>;
}

export interface Call {
  readonly method: string;
  readonly args: unknown[];
}

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
  private server: Server | undefined;
  url = "";
  /** Set to make a method fail with an XAPI error code. */
  readonly failures = new Map<string, string>();

  constructor(readonly pool: FakePool) {}

  async start(): Promise<this> {
    this.server = createServer((req, res) => {
      let body = "";
      req.on("data", (c) => (body += String(c)));
      req.on("end", () => {
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
    });
    await new Promise<void>((r) => this.server?.listen(0, "127.0.0.1", () => r()));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  async stop(): Promise<void> {
    await new Promise<void>((r) => this.server?.close(() => r()));
  }

  /** The calls after login, without the session argument; pool/system introspection left out. */
  sequence(): string[] {
    return this.calls.map((c) => c.method).filter((m) => !/^(session|pool|system)\./.test(m));
  }

  private handle(method: string, params: unknown[]): unknown {
    const [, ...args] = params;
    if (method === "session.login_with_password") {
      if (params[0] !== "root" || params[1] !== "secret") throw new Failure("SESSION_AUTHENTICATION_FAILED");
      return "OpaqueRef:session";
    }
    if (params[0] !== "OpaqueRef:session" && method !== "system.listMethods")
      throw new Failure("SESSION_INVALID");
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
        v.resident_on = String(args[1]);
        v.domid += 1;
        return "";
      }
      case "VM.assert_can_migrate":
        return "";
      case "VM.migrate_send": {
        const v = vm(args[0]);
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
        return "";
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

// The lab's `xe`: the few commands xenroam's XAPI hooks run on a host (host-plugin/src/adapters/xe.ts), against
// the lab's XAPI over its unix socket, with xe's syntax (`vm-param-get uuid=U param-name=P [param-key=K]`,
// `vm-param-remove uuid=U param-name=P param-key=K`) and xe's way of failing: a message on stderr, exit 1.
// Anything else is refused, so a hook that starts using another command fails here first.

import { readFileSync } from "node:fs";
import { request } from "node:http";

export class XeUsageError extends Error {}

export interface XeCommand {
  readonly command: "vm-param-get" | "vm-param-remove";
  readonly uuid: string;
  readonly param: string;
  readonly key?: string;
}

export function parseXe(argv: readonly string[]): XeCommand {
  const [command, ...rest] = argv;
  const kv = new Map<string, string>();
  for (const a of rest) {
    const i = a.indexOf("=");
    if (i <= 0) throw new XeUsageError(`Syntax error: ${a}`);
    kv.set(a.slice(0, i), a.slice(i + 1));
  }
  if (command !== "vm-param-get" && command !== "vm-param-remove")
    throw new XeUsageError(
      `Unknown command: ${command ?? ""} (the lab's xe has vm-param-get and vm-param-remove)`,
    );
  const uuid = kv.get("uuid");
  const param = kv.get("param-name");
  if (!uuid || !param) throw new XeUsageError("Required parameter not found: uuid, param-name");
  const key = kv.get("param-key");
  if (command === "vm-param-remove" && !key)
    throw new XeUsageError("Required parameter not found: param-key");
  return { command, uuid, param, ...(key ? { key } : {}) };
}

/** One JSON-RPC call to the lab's XAPI on a unix socket. */
function rpc(socket: string, method: string, params: unknown[]): Promise<unknown> {
  const body = JSON.stringify({ jsonrpc: "2.0", id: 1, method, params });
  return new Promise((resolve, reject) => {
    const req = request(
      {
        socketPath: socket,
        path: "/jsonrpc",
        method: "POST",
        headers: { "content-type": "application/json" },
      },
      (res) => {
        let text = "";
        res.on("data", (c) => (text += String(c)));
        res.on("end", () => {
          const r = JSON.parse(text) as { result?: unknown; error?: { message: string; data?: string[] } };
          if (r.error) reject(new Error([r.error.message, ...(r.error.data ?? [])].join(" ")));
          else resolve(r.result);
        });
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

/** Runs one xe command; returns what xe prints. */
export async function runXe(cmd: XeCommand, socket: string, passwordFile: string): Promise<string> {
  const password = readFileSync(passwordFile, "utf8").trim();
  const session = String(await rpc(socket, "session.login_with_password", ["root", password, "1.0", "xe"]));
  try {
    let vm: string;
    try {
      vm = String(await rpc(socket, "VM.get_by_uuid", [session, cmd.uuid]));
    } catch {
      throw new Error(`The uuid you supplied was invalid.\ntype: VM\nuuid: ${cmd.uuid}`);
    }
    if (cmd.param === "dom-id" && cmd.command === "vm-param-get") {
      return String(await rpc(socket, "VM.get_domid", [session, vm]));
    }
    if (cmd.param !== "other-config")
      throw new Error(`Unknown field '${cmd.param}' (the lab's xe has dom-id, other-config)`);
    if (cmd.command === "vm-param-remove") {
      await rpc(socket, "VM.remove_from_other_config", [session, vm, cmd.key]);
      return "";
    }
    const oc = (await rpc(socket, "VM.get_other_config", [session, vm])) as Record<string, string>;
    if (cmd.key === undefined)
      return Object.entries(oc)
        .map(([k, v]) => `${k}: ${v}`)
        .join("; ");
    const value = oc[cmd.key];
    if (value === undefined) throw new Error(`Key ${cmd.key} not found in map`);
    return value;
  } finally {
    await rpc(socket, "session.logout", [session]).catch(() => {});
  }
}

#!/usr/bin/env node
// Runs inside one network namespace (started by `ip netns exec NS node nsworker.js`) and applies Netlink
// calls sent as JSON lines on stdin, answering on stdout. A netlink socket belongs to the namespace of the
// process that opens it, so the lab configures each namespace from a worker living in it.

import { createInterface } from "node:readline";
import { createNetlink, isNetlinkError, type Netlink } from "@xenroam/netlink";
import { applyOps, type NetOp } from "./plan.js";

export const WORKER_METHODS = [
  "apply",
  "links",
  "link",
  "addresses",
  "waitAddress",
  "waitAddressIn",
  "routes",
  "neighbours",
  "setLink",
  "addAddress",
  "deleteAddress",
  "addRoute",
  "deleteRoute",
  "flushNeighbours",
  "readSysctl",
  "writeSysctl",
  "createBridge",
  "deleteLink",
  "setBridgePort",
] as const;
export type WorkerMethod = (typeof WORKER_METHODS)[number];

function main(): void {
  const netlink: Netlink = createNetlink();
  // Method calls on the port itself (never detached), so `this` stays the Netlink instance.
  const port = netlink as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>;
  const handlers = new Map<string, (...args: unknown[]) => Promise<unknown>>(
    WORKER_METHODS.map((m) => [
      m,
      m === "apply"
        ? (ops: unknown) => applyOps(netlink, ops as NetOp[])
        : (...args: unknown[]) => port[m]!(...args),
    ]),
  );
  const send = (msg: unknown) => process.stdout.write(`${JSON.stringify(msg)}\n`);
  const rl = createInterface({ input: process.stdin });
  rl.on("line", (line) => {
    let req: { id: number; method: string; args: unknown[] };
    try {
      req = JSON.parse(line) as typeof req;
    } catch {
      send({ id: 0, ok: false, error: { code: "EINVAL", message: "bad request line" } });
      return;
    }
    const handler = handlers.get(req.method);
    if (!handler) {
      send({ id: req.id, ok: false, error: { code: "ENOSYS", message: `no method ${req.method}` } });
      return;
    }
    handler(...req.args.map((a) => (a === null ? undefined : a))).then(
      (result) => send({ id: req.id, ok: true, result: result ?? null }),
      (err: unknown) =>
        send({
          id: req.id,
          ok: false,
          error: isNetlinkError(err)
            ? { code: err.code, operation: err.operation, ifname: err.ifname, message: err.message }
            : { code: "EIO", message: err instanceof Error ? err.message : String(err) },
        }),
    );
  });
  rl.on("close", () => {
    netlink.close();
    process.exit(0);
  });
  send({ id: 0, ok: true, result: "ready" });
}

if (import.meta.url === `file://${process.argv[1]}`) main();

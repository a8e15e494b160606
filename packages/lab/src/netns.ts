// A handle on one network namespace for code running outside it: Netlink calls are carried to a worker
// process inside the namespace (nsworker.ts). The lab, its toolstack and its tests use this.

import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { type Netlink, NetlinkError } from "@xenroam/netlink";
import type { WorkerMethod } from "./nsworker.js";
import type { NetOp } from "./plan.js";

const WORKER = fileURLToPath(new URL("./nsworker.js", import.meta.url));

type Remote = Pick<Netlink, Exclude<WorkerMethod, "apply">>;

function trimTrailingUndefined(args: unknown[]): unknown[] {
  const out = [...args];
  while (out.length > 0 && out.at(-1) === undefined) out.pop();
  return out;
}

export class NsWorker {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  private exited: Promise<void>;
  private stderr = "";

  private constructor(
    readonly netns: string,
    private readonly child: ChildProcessWithoutNullStreams,
    ready: (err?: Error) => void,
  ) {
    child.stderr.on("data", (c) => {
      this.stderr = (this.stderr + String(c)).slice(-2000);
    });
    createInterface({ input: child.stdout }).on("line", (line) => {
      const msg = JSON.parse(line) as {
        id: number;
        ok: boolean;
        result?: unknown;
        error?: { code: string; operation?: string; ifname?: string; message: string };
      };
      if (msg.id === 0) {
        ready(msg.ok ? undefined : new Error(msg.error?.message));
        return;
      }
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (msg.ok) p.resolve(msg.result);
      else {
        const e = msg.error ?? { code: "EIO", message: "unknown" };
        p.reject(
          e.operation
            ? new NetlinkError(e.code, e.operation, e.ifname)
            : new NetlinkError(e.code, `in ${netns}`, undefined, e.message),
        );
      }
    });
    this.exited = new Promise((resolve) => {
      child.on("exit", (code) => {
        const err = new Error(`namespace worker for ${netns} exited (${code}): ${this.stderr.trim()}`);
        ready(err);
        for (const p of this.pending.values()) p.reject(err);
        this.pending.clear();
        resolve();
      });
    });
  }

  /** Starts a worker inside `netns` and waits until it is ready. */
  static start(netns: string): Promise<NsWorker> {
    return new Promise((resolve, reject) => {
      const child = spawn("ip", ["netns", "exec", netns, process.execPath, "--enable-source-maps", WORKER], {
        stdio: ["pipe", "pipe", "pipe"],
      });
      let settled = false;
      const worker = new NsWorker(netns, child, (err) => {
        if (settled) return;
        settled = true;
        if (err) reject(err);
        else resolve(worker);
      });
    });
  }

  call(method: WorkerMethod, ...args: unknown[]): Promise<unknown> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.child.stdin.write(`${JSON.stringify({ id, method, args })}\n`);
    });
  }

  apply(ops: readonly NetOp[]): Promise<void> {
    return this.call("apply", ops) as Promise<void>;
  }

  /** The Netlink port of that namespace (every call but events()). */
  get netlink(): Remote {
    return new Proxy({} as Remote, {
      get:
        (_, method: string) =>
        (...args: unknown[]) =>
          this.call(method as WorkerMethod, ...trimTrailingUndefined(args)),
    });
  }

  async close(): Promise<void> {
    this.child.stdin.end();
    await this.exited;
  }
}

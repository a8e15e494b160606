// Real `xenroam-control serve` processes for the client's failover tests: a signing key and an admin token as
// `init` makes them, and replicas on one store, each stopped or killed by its own PID. And the control server
// in this process, on a memory store, counting the connections it takes.
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { type AddressInfo, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { ExecutionContext } from "ava";
import {
  ControlService,
  createControlServer,
  exportPublicKey,
  generateSigningKeys,
  MemoryStore,
} from "../src/index.js";

const MAIN = fileURLToPath(new URL("../src/main.js", import.meta.url));

/** A directory with a signing key and an admin token, as `init` makes them. */
export function initialised(t: ExecutionContext): { key: string; tokenFile: string; token: string } {
  const dir = mkdtempSync(join(tmpdir(), "xr-failover-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const key = join(dir, "control.key");
  const tokenFile = join(dir, "admin.token");
  execFileSync(process.execPath, [MAIN, "init", "--key", key, "--admin-token-file", tokenFile]);
  return { key, tokenFile, token: readFileSync(tokenFile, "utf8").trim() };
}

/** A loopback port nothing listens on (just now). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export interface Replica {
  readonly url: string;
  readonly port: number;
  readonly pid: number;
  /** SIGTERM, and its exit code. */
  stop(): Promise<number | null>;
  /** SIGKILL by its PID: the server dies with whatever it held (connections, long polls). */
  kill(): Promise<number | null>;
}

/** `xenroam-control serve` on 127.0.0.1 (`port` 0: any) with `args`; resolves once it logs "ready". */
export async function serve(t: ExecutionContext, args: readonly string[], port = 0): Promise<Replica> {
  const child: ChildProcess = spawn(
    process.execPath,
    [MAIN, "serve", "--listen", `127.0.0.1:${port}`, ...args],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  let log = "";
  const closed = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)));
  const signal = (s: NodeJS.Signals) => {
    if (child.exitCode === null && child.signalCode === null) child.kill(s);
    return closed;
  };
  t.teardown(() => signal("SIGKILL").then(() => undefined));
  const ready = await Promise.race([
    new Promise<Record<string, unknown>>((resolve) => {
      child.stderr?.on("data", (c) => {
        log += String(c);
        const line = log.split("\n").find((l) => l.includes('"ready"'));
        if (line) resolve(JSON.parse(line) as Record<string, unknown>);
      });
    }),
    closed.then((code) => Promise.reject(new Error(`serve exited ${code}: ${log}`))),
  ]);
  return {
    url: `http://127.0.0.1:${String(ready.port)}`,
    port: Number(ready.port),
    pid: child.pid as number,
    stop: () => signal("SIGTERM"),
    kill: () => signal("SIGKILL"),
  };
}

/**
 * The control server on 127.0.0.1 in this process, on a memory store of its own, with the admin token "adm";
 * `seen.connections` counts the connections it has taken. `kill` stops it as a dead process would: no more
 * connections taken, the open ones cut.
 */
export async function inProcess(t: ExecutionContext) {
  const keys = generateSigningKeys();
  const service = new ControlService({ store: new MemoryStore(), ...keys, adminTokens: ["adm"] });
  const server = createControlServer(service, exportPublicKey(keys.publicKey));
  const seen = { connections: 0 };
  server.on("connection", () => (seen.connections += 1));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const kill = () => {
    server.close();
    server.closeAllConnections();
  };
  t.teardown(kill);
  return { service, server, seen, kill, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

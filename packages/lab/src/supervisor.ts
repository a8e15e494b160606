// The lab supervisor: a detached daemon that runs the lab's long-lived processes (radvd on the router, a
// xenstored per host) inside their namespaces, restarts them when they die, keeps the ones held.json names
// stopped until they leave it, logs JSON lines, and on SIGTERM stops them all and removes its own state file.

import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { identify, isRunning, type ProcessId, stopProcess } from "./system.js";

export interface ServiceSpec {
  readonly name: string;
  readonly netns: string;
  readonly argv: readonly string[];
}

export interface SupervisorState {
  readonly supervisor: ProcessId;
  readonly services: Record<
    string,
    {
      readonly process: ProcessId | undefined;
      readonly restarts: number;
      readonly state: ServiceState;
    }
  >;
}

/** "held": stopped on purpose (held.json names it), not restarted until it leaves the list. */
export type ServiceState = "running" | "restarting" | "failed" | "held";

export const SERVICES_FILE = "services.json";
export const SUPERVISOR_FILE = "supervisor.json";
/** The services the supervisor keeps stopped: a JSON array of names, read at SIGHUP. */
export const HELD_FILE = "held.json";

function readHeld(stateDir: string): Set<string> {
  const file = join(stateDir, HELD_FILE);
  if (!existsSync(file)) return new Set();
  const names = JSON.parse(readFileSync(file, "utf8")) as unknown;
  return new Set(Array.isArray(names) ? names.filter((n): n is string => typeof n === "string") : []);
}

export function readSupervisorState(stateDir: string): SupervisorState | undefined {
  try {
    return JSON.parse(readFileSync(join(stateDir, SUPERVISOR_FILE), "utf8")) as SupervisorState;
  } catch {
    return undefined;
  }
}

/**
 * Stops a service (held) or starts it again (released) through the supervisor — the lab's `systemctl stop`
 * and `start` — and waits until the supervisor reports it so.
 */
export async function holdService(
  stateDir: string,
  name: string,
  held: boolean,
  timeoutMs = 10_000,
): Promise<void> {
  const before = readSupervisorState(stateDir);
  if (!before?.services[name]) throw new Error(`the lab's supervisor runs no service named "${name}"`);
  if (!isRunning(before.supervisor)) throw new Error("the lab's supervisor is not running");
  const names = readHeld(stateDir);
  if (held) names.add(name);
  else names.delete(name);
  writeFileSync(join(stateDir, `${HELD_FILE}.tmp`), JSON.stringify([...names]));
  renameSync(join(stateDir, `${HELD_FILE}.tmp`), join(stateDir, HELD_FILE));
  process.kill(before.supervisor.pid, "SIGHUP");
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const s = readSupervisorState(stateDir)?.services[name];
    const done = held
      ? s?.state === "held" && s.process === undefined
      : s?.state === "running" && s.process !== undefined;
    if (done) return;
    if (Date.now() > deadline)
      throw new Error(
        `the supervisor did not ${held ? "stop" : "start"} ${name} within ${timeoutMs} ms (state ${s?.state ?? "unknown"})`,
      );
    await new Promise((r) => setTimeout(r, 50));
  }
}

const MAX_RESTARTS_PER_MINUTE = 5;

export function runSupervisor(stateDir: string): void {
  const log = (event: string, fields: Record<string, unknown> = {}) =>
    process.stdout.write(
      `${JSON.stringify({ ts: new Date().toISOString(), component: "lab-supervisor", event, ...fields })}\n`,
    );
  const specs = JSON.parse(readFileSync(join(stateDir, SERVICES_FILE), "utf8")) as ServiceSpec[];
  const self = identify(process.pid);
  if (!self) throw new Error("cannot read own /proc entry");
  const children = new Map<
    string,
    {
      child: ChildProcess | undefined;
      id: ProcessId | undefined;
      restarts: number[];
      state: ServiceState;
    }
  >();
  let stopping = false;

  const persist = () => {
    const state: SupervisorState = {
      supervisor: self,
      services: Object.fromEntries(
        [...children].map(([name, c]) => [
          name,
          { process: c.id, restarts: c.restarts.length, state: c.state },
        ]),
      ),
    };
    // Write then rename: readers never see half a file.
    writeFileSync(join(stateDir, `${SUPERVISOR_FILE}.tmp`), JSON.stringify(state, null, 2));
    renameSync(join(stateDir, `${SUPERVISOR_FILE}.tmp`), join(stateDir, SUPERVISOR_FILE));
  };

  const start = (spec: ServiceSpec) => {
    const entry = children.get(spec.name) ?? {
      child: undefined,
      id: undefined,
      restarts: [],
      state: "running" as const,
    };
    children.set(spec.name, entry);
    const child = spawn("ip", ["netns", "exec", spec.netns, ...spec.argv], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    entry.child = child;
    entry.id = child.pid === undefined ? undefined : identify(child.pid);
    entry.state = "running";
    log("service_started", { service: spec.name, netns: spec.netns, pid: child.pid });
    for (const [stream, input] of [
      ["stdout", child.stdout],
      ["stderr", child.stderr],
    ] as const) {
      createInterface({ input }).on("line", (line) =>
        log("service_output", { service: spec.name, stream, line }),
      );
    }
    child.on("exit", (code, signal) => {
      // A child replaced meanwhile (held, then started again before it had exited) is old news.
      if (entry.child !== child) return;
      entry.child = undefined;
      entry.id = undefined;
      if (stopping) return;
      if (entry.state === "held") {
        log("service_held", { service: spec.name, code, signal });
        persist();
        return;
      }
      const now = Date.now();
      entry.restarts = entry.restarts.filter((t) => now - t < 60_000);
      if (entry.restarts.length >= MAX_RESTARTS_PER_MINUTE) {
        entry.state = "failed";
        log("service_failed", {
          service: spec.name,
          code,
          signal,
          reason: `${MAX_RESTARTS_PER_MINUTE} restarts in a minute`,
        });
        persist();
        return;
      }
      entry.restarts.push(now);
      entry.state = "restarting";
      const delay = Math.min(5000, 250 * 2 ** (entry.restarts.length - 1));
      log("service_exited", { service: spec.name, code, signal, restartInMs: delay });
      persist();
      setTimeout(() => {
        if (!stopping && entry.state === "restarting") {
          start(spec);
          persist();
        }
      }, delay);
    });
  };

  for (const spec of specs) start(spec);
  persist();
  log("ready", { pid: process.pid, services: specs.map((s) => s.name) });

  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log("stopping", { signal });
    await Promise.all(
      [...children].map(async ([name, c]) => {
        if (c.id) log("service_stopped", { service: name, how: await stopProcess(c.id) });
      }),
    );
    rmSync(join(stateDir, SUPERVISOR_FILE), { force: true });
    log("stopped");
    process.exit(0);
  };
  process.once("SIGTERM", () => void stop("SIGTERM"));
  process.once("SIGINT", () => void stop("SIGINT"));
  // SIGHUP: start the services services.json has gained (the lab adds the agents once their tokens exist),
  // stop the ones held.json names, start again the held ones it no longer names.
  process.on("SIGHUP", () => {
    if (stopping) return;
    const all = JSON.parse(readFileSync(join(stateDir, SERVICES_FILE), "utf8")) as ServiceSpec[];
    const held = readHeld(stateDir);
    // New services, and held ones no longer named.
    const started = all.filter(
      (spec) => !held.has(spec.name) && (children.get(spec.name)?.state ?? "held") === "held",
    );
    for (const spec of started) start(spec);
    const stopped: string[] = [];
    for (const name of held) {
      const entry = children.get(name);
      if (!entry || entry.state === "held") continue;
      entry.state = "held";
      stopped.push(name);
      if (entry.id) void stopProcess(entry.id);
    }
    persist();
    log("reloaded", { started: started.map((s) => s.name), held: stopped });
  });
}

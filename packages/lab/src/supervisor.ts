// The lab supervisor: a detached daemon that runs the lab's long-lived processes (radvd on the router, a
// xenstored per host) inside their namespaces, restarts them when they die, logs JSON lines, and on SIGTERM
// stops them all and removes its own state file.

import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { identify, type ProcessId, stopProcess } from "./system.js";

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
      readonly state: "running" | "restarting" | "failed";
    }
  >;
}

export const SERVICES_FILE = "services.json";
export const SUPERVISOR_FILE = "supervisor.json";

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
      state: "running" | "restarting" | "failed";
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
      entry.child = undefined;
      entry.id = undefined;
      if (stopping) return;
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
        if (!stopping) {
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
  // SIGHUP: start the services services.json has gained (the lab adds the agents once their tokens exist).
  process.on("SIGHUP", () => {
    if (stopping) return;
    const added = (JSON.parse(readFileSync(join(stateDir, SERVICES_FILE), "utf8")) as ServiceSpec[]).filter(
      (spec) => !children.has(spec.name),
    );
    for (const spec of added) start(spec);
    persist();
    log("reloaded", { added: added.map((s) => s.name) });
  });
}

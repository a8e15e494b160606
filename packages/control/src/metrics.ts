// The control server's Prometheus metrics (prom-client), on a registry of its own per server, and the plain
// HTTP listener that serves them to scrapers (`serve --metrics-listen`). Labels are bounded: route templates,
// status classes, refusal reasons and outcomes, never a VM, an address or a token.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { performance } from "node:perf_hooks";
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import type { ControlService } from "./service.js";
import type { Change } from "./store.js";

/** Why the server refused a request or a connection: one per HTTP status it answers, 429 and 409 split. */
export const REFUSAL_REASONS = [
  "bad_request", // 400
  "unauthenticated", // 401
  "forbidden", // 403
  "not_found", // 404
  "conflict", // 409 from the registry (a HoA, MAC or locator taken; nothing to roll back)
  "binding_refused", // 409: an activation the binding rules refuse (stale, replayed, expired, bad signature)
  "rate_limited", // 429: the token's bucket is empty
  "too_many_polls", // 429: the token has its long polls open already
  "too_many_connections", // a connection cut before any request: per source, or all clients together
] as const;
export type RefusalReason = (typeof REFUSAL_REASONS)[number];

/**
 * What became of a signed activation: accepted (POST /v1/bindings), attested (an attestation activated a
 * standby that waited for its proof), already_active (a copy of the active binding), awaiting_proof, refused.
 */
export const ACTIVATION_OUTCOMES = [
  "accepted",
  "attested",
  "already_active",
  "awaiting_proof",
  "refused",
] as const;
export type ActivationOutcome = (typeof ACTIVATION_OUTCOMES)[number];

/** How long commit times are kept for the fan-out: longer than the longest long poll (30 s). */
const COMMIT_MEMORY_MS = 60_000;
const COMMIT_MEMORY_MAX = 10_000;
/** The bindings are counted by reading the change stream from revision 0, this many a page. */
const SCAN_PAGE = 500;

export interface ControlMetricsOptions {
  /** Node's process and runtime metrics (process_cpu_seconds_total, nodejs_eventloop_lag_seconds, …) too. */
  readonly processMetrics?: boolean;
}

export interface ControlMetrics {
  readonly registry: Registry;
  /** One answered (or abandoned) request: its route template, its status, how long it took. */
  request(route: string, status: number | "aborted", seconds: number): void;
  refused(reason: RefusalReason): void;
  activation(outcome: ActivationOutcome): void;
  rolledBack(): void;
  /** A long poll opened; the function closes it. */
  watchOpened(): () => void;
  /** What a long poll that started at `polledAt` (metrics clock, ms) just handed its watcher. */
  delivered(changes: readonly Change[], polledAt: number): void;
  /** The metrics clock (ms, monotonic). */
  now(): number;
  /** Stops following the service's commits. */
  close(): void;
}

interface BindingCounts {
  readonly bindings: number;
  readonly active: number;
  readonly standbys: { readonly proven: number; readonly unproven: number };
  readonly revision: number;
}

/** Every HoA's newest record, read from the compacted change stream a page at a time. */
async function countBindings(service: ControlService): Promise<BindingCounts> {
  let since = 0;
  let bindings = 0;
  let active = 0;
  let proven = 0;
  let unproven = 0;
  let revision = 0;
  for (;;) {
    const page = await service.changes(since, 0, SCAN_PAGE);
    for (const { binding } of page.changes) {
      bindings += 1;
      if (binding.active !== undefined) active += 1;
      for (const s of binding.standbys) {
        if (s.proven) proven += 1;
        else unproven += 1;
      }
    }
    revision = page.revision;
    if (page.changes.length < SCAN_PAGE || page.revision <= since) break;
    since = page.revision;
  }
  return { bindings, active, standbys: { proven, unproven }, revision };
}

export function createControlMetrics(
  service: ControlService,
  options: ControlMetricsOptions = {},
): ControlMetrics {
  const registry = new Registry();
  if (options.processMetrics) collectDefaultMetrics({ register: registry });
  // One scan answers every bindings gauge of a scrape (prom-client collects them at once), and scrapes that
  // overlap share it.
  let scan: Promise<BindingCounts> | undefined;
  const counts = () => (scan ??= countBindings(service).finally(() => (scan = undefined)));
  new Gauge({
    name: "xenroam_control_bindings",
    help: "Home addresses with a binding record (every registered VM has one).",
    registers: [registry],
    async collect() {
      this.set((await counts()).bindings);
    },
  });
  new Gauge({
    name: "xenroam_control_bindings_active",
    help: "Bindings with an active locator.",
    registers: [registry],
    async collect() {
      this.set((await counts()).active);
    },
  });
  new Gauge({
    name: "xenroam_control_standbys",
    help: "Standby locators registered for a next move and not activated yet, by whether they are proven (published to correspondents) or wait for an attestation.",
    labelNames: ["proven"] as const,
    registers: [registry],
    async collect() {
      const { standbys } = await counts();
      this.set({ proven: "true" }, standbys.proven);
      this.set({ proven: "false" }, standbys.unproven);
    },
  });
  new Gauge({
    name: "xenroam_control_revision",
    help: "The store's latest revision of the change stream.",
    registers: [registry],
    async collect() {
      this.set((await counts()).revision);
    },
  });
  const activations = new Counter({
    name: "xenroam_control_activations_total",
    help: "Signed activations received, by outcome (accepted, attested, already_active, awaiting_proof, refused).",
    labelNames: ["outcome"] as const,
    registers: [registry],
  });
  const refusals = new Counter({
    name: "xenroam_control_refusals_total",
    help: "Requests and connections refused, by reason (one per HTTP status; 409 and 429 split).",
    labelNames: ["reason"] as const,
    registers: [registry],
  });
  const rollbacks = new Counter({
    name: "xenroam_control_rollbacks_total",
    help: "Activations undone (a move that failed after its binding was relayed).",
    registers: [registry],
  });
  const watchers = new Gauge({
    name: "xenroam_control_watch_clients",
    help: "Long polls of the watch stream open now.",
    registers: [registry],
  });
  const requests = new Histogram({
    name: "xenroam_control_http_request_duration_seconds",
    help: 'API requests by route template and status class ("aborted": the client left first); long polls are the route "GET /v1/bindings?wait".',
    labelNames: ["route", "status"] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [registry],
  });
  const fanout = new Histogram({
    name: "xenroam_control_watch_fanout_seconds",
    help: "From a binding change's commit to its answer to each long poll that was waiting for it.",
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [registry],
  });
  for (const reason of REFUSAL_REASONS) refusals.inc({ reason }, 0);
  for (const outcome of ACTIVATION_OUTCOMES) activations.inc({ outcome }, 0);

  // When each revision this server committed was committed, for the fan-out (other servers' commits, on a
  // shared store, are not seen here and not measured).
  const committedAt = new Map<number, number>();
  const stopFollowing = service.onCommit((revision) => {
    const at = performance.now();
    committedAt.set(revision, at);
    for (const [rev, t] of committedAt) {
      if (committedAt.size <= COMMIT_MEMORY_MAX && at - t < COMMIT_MEMORY_MS) break;
      committedAt.delete(rev);
    }
  });

  return {
    registry,
    request(route, status, seconds) {
      requests.observe(
        { route, status: status === "aborted" ? status : `${Math.floor(status / 100)}xx` },
        seconds,
      );
    },
    refused: (reason) => refusals.inc({ reason }),
    activation: (outcome) => activations.inc({ outcome }),
    rolledBack: () => rollbacks.inc(),
    watchOpened() {
      watchers.inc();
      let open = true;
      return () => {
        if (open) watchers.dec();
        open = false;
      };
    },
    delivered(changes, polledAt) {
      const now = performance.now();
      for (const c of changes) {
        const at = committedAt.get(c.revision);
        // Only changes committed while this poll waited: older ones were a watcher catching up.
        if (at !== undefined && at >= polledAt) fanout.observe((now - at) / 1000);
      }
    },
    now: () => performance.now(),
    close: stopFollowing,
  };
}

/**
 * The scrape endpoint: GET /metrics and nothing else, on a listener of its own (no token: bind it to a
 * management address). Small limits of its own, apart from the API's: a scraper never takes an API slot.
 */
export function createMetricsServer(metrics: ControlMetrics): Server {
  const server = createServer(
    { connectionsCheckingInterval: 1000 },
    (req: IncomingMessage, res: ServerResponse) => {
      const path = (req.url ?? "/").split("?")[0];
      if (path !== "/metrics") {
        res.writeHead(404, { "content-type": "text/plain" });
        res.end("xenroam-control serves its metrics at /metrics\n");
        return;
      }
      if (req.method !== "GET" && req.method !== "HEAD") {
        res.writeHead(405, { allow: "GET, HEAD", "content-type": "text/plain" });
        res.end("GET /metrics\n");
        return;
      }
      metrics.registry.metrics().then(
        (text) => {
          res.writeHead(200, { "content-type": metrics.registry.contentType });
          res.end(req.method === "HEAD" ? undefined : text);
        },
        (err: unknown) => {
          res.writeHead(500, { "content-type": "text/plain" });
          res.end(`collecting the metrics failed: ${err instanceof Error ? err.message : String(err)}\n`);
        },
      );
    },
  );
  server.maxConnections = 64;
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  return server;
}

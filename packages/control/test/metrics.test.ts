// The control server's metrics, scraped over HTTP from their own listener and read with a Prometheus
// text-format parser: bindings, activations and refusals by reason, the watch and its fan-out, request latency.
import type { Server } from "node:http";
import { createRequire } from "node:module";
import type { AddressInfo } from "node:net";
import test, { type ExecutionContext } from "ava";
import {
  ControlService,
  createControlServer,
  DEFAULT_LIMITS,
  exportPublicKey,
  generateSigningKeys,
  MemoryStore,
  routeTemplate,
  type SignedBinding,
} from "../src/index.js";
import { createControlMetrics, createMetricsServer } from "../src/metrics.js";

/** A family as parse-prometheus-text-format (prom2json's shape) gives it. */
interface Family {
  readonly name: string;
  readonly help: string;
  readonly type: string;
  readonly metrics: ReadonlyArray<{
    readonly value?: string;
    readonly labels?: Readonly<Record<string, string>>;
    readonly buckets?: Readonly<Record<string, string>>;
    readonly count?: string;
    readonly sum?: string;
  }>;
}
const parsePrometheusText = createRequire(import.meta.url)("parse-prometheus-text-format") as (
  text: string,
) => Family[];

const keys = generateSigningKeys();
const ADMIN = "adm-secret-for-metrics";
const SITES = {
  sites: [
    { name: "a", prefix: "2001:db8:a::/64", gateway: { linkLocal: "fe80::a:1", mac: "02:00:00:00:0a:01" } },
    { name: "b", prefix: "2001:db8:b::/64", gateway: { linkLocal: "fe80::b:1", mac: "02:00:00:00:0b:01" } },
  ],
  hosts: [
    { name: "hosta", site: "a" },
    { name: "hostb", site: "b" },
  ],
};
/** The VM's MAC and the addresses it makes (EUI-64) in sites a and b: proven to be the VM's. */
const VM_MAC = "00:16:3e:00:00:05";
const VM_A = "2001:db8:a:0:216:3eff:fe00:5";
const VM_B = "2001:db8:b:0:216:3eff:fe00:5";

async function listen(t: ExecutionContext, srv: Server) {
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", () => r()));
  t.teardown(
    () =>
      new Promise<void>((r) => {
        srv.closeAllConnections();
        srv.close(() => r());
      }),
  );
  return `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
}

async function setup(t: ExecutionContext) {
  const service = new ControlService({ store: new MemoryStore(), ...keys, adminTokens: [ADMIN] });
  await service.putSites(SITES);
  const metrics = createControlMetrics(service);
  t.teardown(() => metrics.close());
  // A VM's token may make 10 requests, and a token hold one long poll.
  const limits = { ...DEFAULT_LIMITS, vmRate: 0.0001, vmBurst: 10, pollsPerToken: 1 };
  const api = await listen(
    t,
    createControlServer(service, exportPublicKey(keys.publicKey), () => {}, limits, undefined, metrics),
  );
  const scrapeAt = await listen(t, createMetricsServer(metrics));
  const call = async (method: string, path: string, token?: string, payload?: unknown) => {
    const res = await fetch(`${api}${path}`, {
      method,
      headers: token ? { authorization: `Bearer ${token}` } : {},
      ...(payload === undefined ? {} : { body: JSON.stringify(payload) }),
    });
    return { status: res.status, json: (await res.json().catch(() => ({}))) as Record<string, unknown> };
  };
  const scrape = async () => {
    const res = await fetch(`${scrapeAt}/metrics`);
    t.is(res.status, 200);
    t.regex(res.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    return { text, families: parsePrometheusText(text) };
  };
  const tokens = {
    vm: (await service.registerVm("vm", "fd00:1::5", [VM_MAC])).token,
    vm2: (await service.registerVm("vm2", "fd00:1::6", ["00:16:3e:00:00:06"])).token,
    cn: (await service.registerPeer("cn")).token,
  };
  return { service, call, scrape, scrapeAt, tokens };
}

/** The value of the sample of `name` whose labels include `labels`. */
function value(families: readonly Family[], name: string, labels: Record<string, string> = {}): number {
  const family = families.find((f) => f.name === name);
  if (!family) throw new Error(`no family ${name}`);
  const sample = family.metrics.find((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v));
  if (sample?.value === undefined) throw new Error(`no sample ${name}${JSON.stringify(labels)}`);
  return Number(sample.value);
}

/**
 * A labelled histogram's `_count` series: the parser folds the series of a labelled histogram into one, so
 * its `_count` lines are read on their own, as the plain samples they are.
 */
function histogramCounts(
  text: string,
  name: string,
): Array<{ labels: Record<string, string>; count: number }> {
  const lines = text.split("\n").filter((l) => l.startsWith(`${name}_count{`));
  const [family] = parsePrometheusText(`${lines.join("\n")}\n`);
  return (family?.metrics ?? []).map((m) => ({ labels: { ...m.labels }, count: Number(m.value) }));
}

test("route templates bound the request label: parameters, queries and unknown paths never reach it", (t) => {
  t.is(routeTemplate("POST", "/v1/vms/web1/standby"), "POST /v1/vms/:vm/standby");
  t.is(routeTemplate("DELETE", "/v1/vms/web1/standby/2001:db8::1"), "DELETE /v1/vms/:vm/standby/:locator");
  t.is(routeTemplate("GET", "/v1/bindings"), "GET /v1/bindings");
  t.is(routeTemplate("GET", "/v1/bindings/fd00::5"), "GET /v1/bindings/:hoa");
  t.is(routeTemplate("GET", "/v1/vms/a/b/c"), "unmatched");
  t.is(routeTemplate("BREW", "/v1/vms"), "unmatched");
  t.is(routeTemplate("GET", "/metrics"), "unmatched");
});

test("/metrics, scraped and parsed: bindings, activations and refusals by reason, the watch and its fan-out", async (t) => {
  const { service, call, scrape, scrapeAt, tokens } = await setup(t);

  // A move: the VM registers its MoA in site b (proven by its MAC) and activates it; then once more to a.
  const moveTo = async (locator: string) => {
    const standby = await call("POST", "/v1/vms/vm/standby", tokens.vm, { locator });
    t.is(standby.status, 200);
    return standby.json as unknown as SignedBinding;
  };
  const toB = await moveTo(VM_B);
  t.is((await call("POST", "/v1/bindings", tokens.vm, toB)).status, 200);
  // Dom0 relayed it at the pause, then the VM sends its own copy: already active, not a refusal.
  t.like((await call("POST", "/v1/bindings", tokens.vm, toB)).json, { code: "already-active" });
  // A forged one: refused by the binding rules.
  t.is((await call("POST", "/v1/bindings", tokens.vm, { ...toB, seq: toB.seq + 5 })).status, 409);
  const toA = await moveTo(VM_A); // a standby, proven, not activated yet
  t.truthy(toA.sig);

  t.is((await call("GET", "/v1/vms")).status, 401);
  t.is((await call("GET", "/v1/vms", "not-a-token")).status, 401);
  t.is((await call("GET", "/v1/vms", tokens.vm)).status, 403);
  t.is((await call("GET", "/v1/nothing/here", ADMIN)).status, 404);
  t.is((await call("POST", "/v1/vms", ADMIN, { name: "x" })).status, 400);
  // /metrics is not an API route: no way around the API's tokens, and nothing to scrape there.
  t.is((await call("GET", "/metrics")).status, 401);
  t.is((await call("GET", "/metrics", ADMIN)).status, 404);
  // vm2's token has 10 requests: the 11th is refused.
  const answers = [];
  for (let i = 0; i < 11; i++) answers.push((await call("GET", "/v1/vms/vm2", tokens.vm2)).status);
  t.deepEqual(answers, [...Array<number>(10).fill(200), 429]);

  // A correspondent watches from the current revision; a change is committed while its poll waits.
  const { revision } = await service.changes(0);
  const poll = call("GET", `/v1/bindings?since=${revision}&wait=10000`, tokens.cn);
  for (let i = 0; i < 200; i++) {
    if (value((await scrape()).families, "xenroam_control_watch_clients") === 1) break;
    await new Promise((r) => setTimeout(r, 10));
  }
  t.is(value((await scrape()).families, "xenroam_control_watch_clients"), 1, "the poll is open");
  // The same token may hold one poll: a second is refused.
  t.is((await call("GET", `/v1/bindings?since=${revision}&wait=10000`, tokens.cn)).status, 429);
  t.is((await call("POST", "/v1/bindings", tokens.vm, toA)).status, 200);
  const delivered = await poll;
  t.is(delivered.status, 200);
  t.is((delivered.json.changes as unknown[]).length, 1);

  const { text, families } = await scrape();
  t.is(value(families, "xenroam_control_watch_clients"), 0);
  t.is(value(families, "xenroam_control_bindings"), 2);
  t.is(value(families, "xenroam_control_bindings_active"), 1);
  t.is(value(families, "xenroam_control_standbys", { proven: "true" }), 0);
  t.is(value(families, "xenroam_control_standbys", { proven: "false" }), 0);
  t.is(value(families, "xenroam_control_revision"), (await service.changes(0)).revision);
  const activations = (outcome: string) => value(families, "xenroam_control_activations_total", { outcome });
  t.deepEqual(
    ["accepted", "already_active", "refused", "awaiting_proof", "attested"].map(activations),
    [2, 1, 1, 0, 0],
  );
  const refusals = (reason: string) => value(families, "xenroam_control_refusals_total", { reason });
  t.deepEqual(
    Object.fromEntries(
      [
        "bad_request",
        "unauthenticated",
        "forbidden",
        "not_found",
        "conflict",
        "binding_refused",
        "rate_limited",
        "too_many_polls",
        "too_many_connections",
      ].map((r) => [r, refusals(r)]),
    ),
    {
      bad_request: 1,
      unauthenticated: 3,
      forbidden: 1,
      not_found: 2,
      conflict: 0,
      binding_refused: 1,
      rate_limited: 1,
      too_many_polls: 1,
      too_many_connections: 0,
    },
  );
  t.is(families.find((f) => f.name === "xenroam_control_refusals_total")?.type, "COUNTER");

  // The fan-out: one change, committed while one poll waited, delivered once.
  const fanout = families.find((f) => f.name === "xenroam_control_watch_fanout_seconds");
  t.is(fanout?.type, "HISTOGRAM");
  t.is(Number(fanout?.metrics[0]?.count), 1);
  t.true(Number(fanout?.metrics[0]?.sum) < 5);
  t.is(Number(fanout?.metrics[0]?.buckets?.["+Inf"]), 1);

  // Request latency by route template and status class; the long poll has a route of its own.
  const requests = histogramCounts(text, "xenroam_control_http_request_duration_seconds");
  const count = (route: string, status: string) =>
    requests.find((r) => r.labels.route === route && r.labels.status === status)?.count ?? 0;
  t.is(count("POST /v1/bindings", "2xx"), 2);
  t.is(count("POST /v1/bindings", "4xx"), 2);
  t.is(count("GET /v1/vms/:vm", "2xx"), 10);
  t.is(count("GET /v1/vms/:vm", "4xx"), 1);
  t.is(count("GET /v1/bindings?wait", "2xx"), 1);
  t.is(count("GET /v1/bindings?wait", "4xx"), 1);
  t.is(count("unmatched", "4xx"), 3);
  for (const r of requests) t.notRegex(JSON.stringify(r.labels), /vm2|fd00|2001:db8|nothing/);

  // The scrape listener serves /metrics and nothing else.
  t.is((await fetch(`${scrapeAt}/`)).status, 404);
  t.is((await fetch(`${scrapeAt}/metrics`, { method: "POST" })).status, 405);
});

test("each server has its own registry: two in one process do not clash; process metrics on request", async (t) => {
  const service = new ControlService({ store: new MemoryStore(), ...keys, adminTokens: [ADMIN] });
  const one = createControlMetrics(service);
  const two = createControlMetrics(service, { processMetrics: true });
  t.teardown(() => {
    one.close();
    two.close();
  });
  one.refused("forbidden");
  const first = parsePrometheusText(await one.registry.metrics());
  const second = parsePrometheusText(await two.registry.metrics());
  t.is(value(first, "xenroam_control_refusals_total", { reason: "forbidden" }), 1);
  t.is(value(second, "xenroam_control_refusals_total", { reason: "forbidden" }), 0);
  t.is(value(first, "xenroam_control_bindings"), 0);
  t.false(first.some((f) => f.name.startsWith("process_")));
  t.true(second.some((f) => f.name === "process_cpu_seconds_total"));
  t.true(second.some((f) => f.name === "nodejs_eventloop_lag_seconds"));
});

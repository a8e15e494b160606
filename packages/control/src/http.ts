// The control server's HTTP+JSON API over ControlService. Every request but the public key and health is
// authenticated with a bearer token: admin tokens manage the registry; a VM's token may register standby
// locators and activate bindings only for that VM; host and correspondent (peer) tokens may read the sites,
// watch, and relay signed bindings. Bad input gets a 4xx with a reason and changes nothing.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createHttpsServer, type Server as HttpsServer } from "node:https";
import type { Socket } from "node:net";
import { bindingShapeProblem, type SignedBinding } from "./bindings.js";
import type { ControlMetrics, RefusalReason } from "./metrics.js";
import { ControlError, type ControlService } from "./service.js";
import type { Principal } from "./store.js";

/** Every route, for the 404 answer and the docs. */
export const ROUTES = [
  "GET  /v1/health",
  "GET  /v1/public-key",
  "GET  /v1/sites                 (admin, peer; a VM: sites and gateways only)",
  "PUT  /v1/sites                 (admin)",
  "GET  /v1/vms                   (admin)",
  "POST /v1/vms                   (admin) {name, hoa, macs}",
  "GET  /v1/vms/:vm               (admin, peer, the VM)",
  "POST /v1/peers                 (admin) {name}",
  "POST /v1/vms/:vm/standby       (admin, the VM) {locator}",
  "DELETE /v1/vms/:vm/standby/:locator (admin, the VM)",
  "POST /v1/vms/:vm/attest        (admin, a host of the sites) {locator} vouch for an unproven standby",
  "POST /v1/vms/:vm/reset         (admin) {to?} drop every standby, stale every activation, bind to `to`",
  "POST /v1/vms/:vm/rollback      (admin {locator, seq}; a host of the sites: the signed binding) undo it",
  "POST /v1/bindings              (anyone with a token; the VM only its own) signed binding",
  "GET  /v1/bindings?since=R&wait=MS (admin, peer)",
  "GET  /v1/bindings/:hoa         (admin, peer)",
] as const;

/** Each route's template and what matches it: the metrics' route label, bounded whatever the path. */
const TEMPLATES = ROUTES.map((r) => {
  const [method = "", target = ""] = r.split(/\s+/);
  const path = target.split("?")[0] ?? "";
  return { name: `${method} ${path}`, method, match: new RegExp(`^${path.replace(/:[a-z]+/g, "[^/]+")}$`) };
});

/** The route a request is for, as its template ("POST /v1/vms/:vm/standby"); "unmatched" for any other. */
export function routeTemplate(method: string, path: string): string {
  return TEMPLATES.find((t) => t.method === method && t.match.test(path))?.name ?? "unmatched";
}

const REFUSED_BY_STATUS: Record<ControlError["status"], RefusalReason> = {
  400: "bad_request",
  401: "unauthenticated",
  403: "forbidden",
  404: "not_found",
  409: "conflict",
  429: "rate_limited",
};

const MAX_BODY = 16 * 1024;

/** What one token may ask for: a token bucket per principal (admins are not limited). */
export interface HttpLimits {
  /** Requests a second, and the burst, for a VM's token (a migration costs it a handful). */
  readonly vmRate: number;
  readonly vmBurst: number;
  /** The same for hosts and correspondents (a host relays for all its VMs). */
  readonly peerRate: number;
  readonly peerBurst: number;
  /** Long polls of the watch stream open at once per token. */
  readonly pollsPerToken: number;
  /** Connections open at once, all clients together. */
  readonly maxConnections: number;
  /** Connections open at once from one source address (before any token: strangers included). */
  readonly connectionsPerSource: number;
}

export const DEFAULT_LIMITS: HttpLimits = {
  vmRate: 5,
  vmBurst: 20,
  peerRate: 100,
  peerBurst: 400,
  pollsPerToken: 4,
  maxConnections: 4096,
  connectionsPerSource: 64,
};

class Buckets {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  constructor(private readonly now: () => number = Date.now) {}
  /** Takes one token from `key`'s bucket; false when it is empty. */
  take(key: string, rate: number, burst: number): boolean {
    const now = this.now();
    const b = this.buckets.get(key) ?? { tokens: burst, at: now };
    b.tokens = Math.min(burst, b.tokens + ((now - b.at) / 1000) * rate);
    b.at = now;
    this.buckets.set(key, b);
    if (this.buckets.size > 100_000) this.buckets.clear(); // a bound, not a policy: tokens are registered
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }
}

function bearer(req: IncomingMessage): string | undefined {
  return /^Bearer (\S+)$/.exec(req.headers.authorization ?? "")?.[1];
}

async function body(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > MAX_BODY) throw new ControlError(400, `request body larger than ${MAX_BODY} bytes`);
    chunks.push(c as Buffer);
  }
  try {
    const v = JSON.parse(Buffer.concat(chunks).toString("utf8")) as unknown;
    if (typeof v !== "object" || v === null || Array.isArray(v)) throw new Error("not an object");
    return v as Record<string, unknown>;
  } catch {
    throw new ControlError(400, "the body must be a JSON object");
  }
}

/** A percent-encoded path segment; a malformed escape ("%zz", a lone "%") is the client's error: 400. */
function pathPart(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw new ControlError(400, `malformed percent-escape in the path: "${segment.slice(0, 64)}"`);
  }
}

const str = (o: Record<string, unknown>, k: string): string => {
  const v = o[k];
  if (typeof v !== "string" || v.length === 0 || v.length > 256)
    throw new ControlError(400, `"${k}" must be a non-empty string`);
  return v;
};

function signedBinding(o: Record<string, unknown>): SignedBinding {
  const shape = bindingShapeProblem(o);
  if (shape) throw new ControlError(400, `malformed binding: ${shape}`);
  const seq = o.seq;
  const expiresAt = o.expiresAt;
  if (typeof seq !== "number" || typeof expiresAt !== "number") {
    throw new ControlError(400, '"seq" and "expiresAt" must be numbers');
  }
  return {
    vm: str(o, "vm"),
    hoa: str(o, "hoa"),
    locator: str(o, "locator"),
    seq,
    expiresAt,
    kid: str(o, "kid"),
    sig: str(o, "sig"),
  };
}

function need(who: Principal, ok: boolean, what: string): void {
  if (!ok) throw new ControlError(403, `this token (${who.kind}) may not ${what}`);
}

export type HttpLog = (event: string, fields: Record<string, unknown>) => void;

export function createControlServer(
  service: ControlService,
  publicKeyPem: string,
  log: HttpLog = () => {},
  limits: HttpLimits = DEFAULT_LIMITS,
  /** The server's certificate and key (PEM, tls.ts loadTlsCredentials): HTTPS, TLS 1.2 at least. */
  tls?: { readonly cert: string; readonly key: string },
  /** Where requests, refusals, activations and the watch are counted (served apart: createMetricsServer). */
  metrics?: ControlMetrics,
): Server | HttpsServer {
  const buckets = new Buckets();
  const polls = new Map<string, number>();
  const principalKey = (who: Principal) => (who.kind === "admin" ? "admin" : `${who.kind}:${who.name}`);
  const reply = (res: ServerResponse, status: number, type: string, body: string) => {
    // Sized, not chunked (writeHead would choose chunks): one write, and a kept connection's answer ends where
    // its length says. Once the server is closing, answers end their connection so shutdown does not wait for
    // keep-alive.
    res.writeHead(status, {
      "content-type": type,
      "content-length": Buffer.byteLength(body),
      ...(server.listening ? {} : { connection: "close" }),
    });
    res.end(body);
  };
  const send = (res: ServerResponse, status: number, value: unknown) =>
    reply(res, status, "application/json", JSON.stringify(value));
  const handler = (req: IncomingMessage, res: ServerResponse) => {
    let routeLabel = "unmatched";
    let limited: RefusalReason | undefined;
    if (metrics) {
      const started = metrics.now();
      res.once("close", () =>
        metrics.request(
          routeLabel,
          res.headersSent ? res.statusCode : "aborted",
          (metrics.now() - started) / 1000,
        ),
      );
    }
    void (async () => {
      // The request target is a path, always: "//host/x" is not a URL relative to another host here.
      let url: URL;
      try {
        const target = req.url ?? "/";
        url = new URL(`http://control${target.startsWith("/") ? "" : "/"}${target}`);
      } catch {
        throw new ControlError(400, "malformed request target");
      }
      const path = url.pathname;
      const route = `${req.method ?? ""} ${path}`;
      routeLabel = routeTemplate(req.method ?? "", path);
      if (route === "GET /v1/public-key") {
        reply(res, 200, "application/x-pem-file", publicKeyPem);
        return;
      }
      if (route === "GET /v1/health") {
        send(res, 200, { ok: true, revision: (await service.changes(Number.MAX_SAFE_INTEGER)).revision });
        return;
      }
      const token = bearer(req);
      if (!token) throw new ControlError(401, "missing bearer token (Authorization: Bearer TOKEN)");
      const who = await service.authenticate(token);
      if (!who) throw new ControlError(401, "unknown bearer token");
      const admin = who.kind === "admin";
      const peer = who.kind === "peer";
      const key = principalKey(who);
      if (!admin) {
        const [rate, burst] =
          who.kind === "vm" ? [limits.vmRate, limits.vmBurst] : [limits.peerRate, limits.peerBurst];
        if (!buckets.take(key, rate, burst)) {
          res.setHeader("retry-after", "1");
          throw new ControlError(
            429,
            `too many requests for this token (${rate}/s, burst ${burst}); retry later`,
          );
        }
      }
      const vmPath = /^\/v1\/vms\/([^/]+)$/.exec(path);
      const standby = /^\/v1\/vms\/([^/]+)\/standby$/.exec(path);
      const standbyLocator = /^\/v1\/vms\/([^/]+)\/standby\/([^/]+)$/.exec(path);
      const rollback = /^\/v1\/vms\/([^/]+)\/rollback$/.exec(path);
      const attest = /^\/v1\/vms\/([^/]+)\/attest$/.exec(path);
      const reset = /^\/v1\/vms\/([^/]+)\/reset$/.exec(path);
      const bindingPath = /^\/v1\/bindings\/([^/]+)$/.exec(path);
      if (route === "GET /v1/sites") {
        const vm = who.kind === "vm";
        need(who, admin || peer || vm, "read the sites");
        const doc = await service.sites();
        // A VM sees what its own RAs tell it anyway, to find its gateway after a move: sites, prefixes and
        // gateways; never the hosts and their addresses.
        send(
          res,
          200,
          vm
            ? { sites: doc.sites.map((s) => ({ name: s.name, prefix: s.prefix, gateway: s.gateway })) }
            : doc,
        );
      } else if (route === "PUT /v1/sites") {
        need(who, admin, "change the sites");
        send(res, 200, await service.putSites(await body(req)));
      } else if (route === "GET /v1/vms") {
        need(who, admin, "list VMs");
        send(res, 200, await service.vms());
      } else if (route === "POST /v1/vms") {
        need(who, admin, "register VMs");
        const b = await body(req);
        const macs = b.macs ?? [];
        if (!Array.isArray(macs) || macs.some((m) => typeof m !== "string") || macs.length > 8) {
          throw new ControlError(400, '"macs" must be a list of at most 8 MAC addresses');
        }
        send(res, 200, await service.registerVm(str(b, "name"), str(b, "hoa"), macs as string[]));
      } else if (req.method === "GET" && vmPath) {
        const vm = pathPart(vmPath[1] ?? "");
        need(who, admin || peer || (who.kind === "vm" && who.name === vm), `read VM ${vm}`);
        send(res, 200, await service.vm(vm));
      } else if (route === "POST /v1/peers") {
        need(who, admin, "register peers");
        send(res, 200, await service.registerPeer(str(await body(req), "name")));
      } else if (req.method === "POST" && standby) {
        const vm = pathPart(standby[1] ?? "");
        need(who, admin || (who.kind === "vm" && who.name === vm), `register locators for ${vm}`);
        const activation = await service.registerStandby(vm, str(await body(req), "locator"));
        log("standby", { vm, hoa: activation.hoa, locator: activation.locator, seq: activation.seq });
        send(res, 200, activation);
      } else if (req.method === "DELETE" && standbyLocator) {
        const vm = pathPart(standbyLocator[1] ?? "");
        const locator = pathPart(standbyLocator[2] ?? "");
        need(who, admin || (who.kind === "vm" && who.name === vm), `withdraw locators of ${vm}`);
        const result = await service.withdrawStandby(vm, locator);
        log("standby_withdrawn", { vm, locator, ...result });
        send(res, 200, result);
      } else if (req.method === "POST" && attest) {
        const vm = pathPart(attest[1] ?? "");
        // The source Dom0 saw the guest answer with this MoA at a prepare; an admin knows.
        need(who, admin || (peer && (await service.isHost(who.name))), `attest locators of ${vm}`);
        const result = await service.attest(vm, str(await body(req), "locator"));
        if (result.activated) metrics?.activation("attested");
        log("attested", { by: who.kind, ...(peer ? { host: who.name } : {}), vm, ...result });
        send(res, 200, result);
      } else if (req.method === "POST" && reset) {
        const vm = pathPart(reset[1] ?? "");
        need(who, admin, `reset the binding of ${vm}`);
        const b = await body(req);
        const result = await service.reset(vm, b.to === undefined ? undefined : str(b, "to"));
        log("reset", { vm, to: result.binding.active ?? null, seq: result.binding.seq });
        send(res, 200, result);
      } else if (req.method === "POST" && rollback) {
        const vm = pathPart(rollback[1] ?? "");
        // Hosts relay a guest's activation at the pause; the one whose move then failed undoes it.
        need(who, admin || (peer && (await service.isHost(who.name))), `roll back bindings of ${vm}`);
        // A host presents the activation it relayed (server-signed); an admin may name it by locator and seq.
        const b = await body(req);
        const seq = b.seq;
        if (typeof seq !== "number") throw new ControlError(400, '"seq" must be a number');
        const undo = typeof b.sig === "string" ? signedBinding(b) : { locator: str(b, "locator"), seq };
        const binding = await service.rollback(vm, undo, { proof: !admin });
        metrics?.rolledBack();
        log("rolled_back", { by: who.kind, ...(peer ? { host: who.name } : {}), vm, undone: b.locator, seq });
        send(res, 200, binding);
      } else if (route === "POST /v1/bindings") {
        const signed = signedBinding(await body(req));
        need(who, who.kind !== "vm" || who.name === signed.vm, `activate bindings of ${signed.vm}`);
        const verdict = await service.activate(signed);
        const fields = {
          by: who.kind,
          vm: signed.vm,
          hoa: signed.hoa,
          locator: signed.locator,
          seq: signed.seq,
        };
        if (verdict.ok) {
          metrics?.activation("accepted");
          log("activated", { ...fields, revision: verdict.revision });
          send(res, 200, { revision: verdict.revision });
        } else {
          if (verdict.alreadyActive) metrics?.activation("already_active");
          else if (verdict.awaitingProof) metrics?.activation("awaiting_proof");
          else {
            metrics?.activation("refused");
            metrics?.refused("binding_refused");
          }
          log("refused", { ...fields, reason: verdict.reason });
          send(res, 409, {
            error: verdict.reason,
            ...(verdict.alreadyActive ? { code: "already-active" } : {}),
            ...(verdict.awaitingProof ? { code: "awaiting-proof" } : {}),
          });
        }
      } else if (route === "GET /v1/bindings") {
        need(who, admin || peer, "watch bindings");
        const since = Number(url.searchParams.get("since") ?? "0");
        const wait = Number(url.searchParams.get("wait") ?? "0");
        if (!Number.isSafeInteger(since) || since < 0 || !Number.isInteger(wait) || wait < 0) {
          throw new ControlError(400, "since and wait must be non-negative whole numbers");
        }
        if (wait > 0) routeLabel = "GET /v1/bindings?wait";
        const open = polls.get(key) ?? 0;
        if (wait > 0 && open >= limits.pollsPerToken) {
          limited = "too_many_polls";
          res.setHeader("retry-after", "1");
          throw new ControlError(
            429,
            `this token has ${open} long polls open already (the most is ${limits.pollsPerToken}); wait for one to answer`,
          );
        }
        if (wait > 0) polls.set(key, open + 1);
        const closeWatch = wait > 0 ? metrics?.watchOpened() : undefined;
        const polledAt = metrics?.now();
        // A watcher that hangs up (its host gone, a restart) frees its slot now, not when its wait ends.
        const hungUp = new AbortController();
        const onClose = () => hungUp.abort();
        res.once("close", onClose);
        try {
          const answer = await service.changes(since, Math.min(wait, 30_000), undefined, hungUp.signal);
          if (hungUp.signal.aborted) return;
          send(res, 200, answer);
          if (wait > 0 && polledAt !== undefined) metrics?.delivered(answer.changes, polledAt);
        } finally {
          res.off("close", onClose);
          closeWatch?.();
          if (wait > 0) {
            const left = (polls.get(key) ?? 1) - 1;
            if (left > 0) polls.set(key, left);
            else polls.delete(key);
          }
        }
      } else if (req.method === "GET" && bindingPath) {
        need(who, admin || peer, "read bindings");
        send(res, 200, await service.binding(pathPart(bindingPath[1] ?? "")));
      } else {
        throw new ControlError(404, `no route ${route}; the routes are:\n${ROUTES.join("\n")}`);
      }
    })().catch((err: unknown) => {
      if (res.headersSent) return;
      if (err instanceof ControlError) {
        metrics?.refused(err.status === 429 ? (limited ?? "rate_limited") : REFUSED_BY_STATUS[err.status]);
        send(res, err.status, { error: err.message });
      } else {
        log("error", {
          method: req.method,
          url: req.url,
          error: err instanceof Error ? err.message : String(err),
        });
        send(res, 500, { error: "internal error" });
      }
    });
  };
  // Idle and half-open connections hold a slot: headers within 10 s (checked every second), a TLS handshake
  // within 5 s, and at most connectionsPerSource from one address, so strangers cannot fill the server.
  const server = tls
    ? createHttpsServer(
        {
          cert: tls.cert,
          key: tls.key,
          minVersion: "TLSv1.2",
          handshakeTimeout: 5000,
          connectionsCheckingInterval: 1000,
        },
        handler,
      )
    : createServer({ connectionsCheckingInterval: 1000 }, handler);
  const perSource = new Map<string, number>();
  let connections = 0;
  let swept = 0;
  server.on("connection", (socket: Socket) => {
    const from = socket.remoteAddress ?? "?";
    const open = (perSource.get(from) ?? 0) + 1;
    if (open > limits.connectionsPerSource) {
      metrics?.refused("too_many_connections");
      socket.destroy();
      return;
    }
    perSource.set(from, open);
    // Kept-alive connections between two requests hold slots too: once three quarters are taken, those go
    // (their clients connect again) rather than new clients being turned away.
    // At most once a second: a sweep catches watchers between two polls, and their reconnections must not
    // each set off another.
    if (++connections > limits.maxConnections * 0.75 && Date.now() - swept >= 1000) {
      swept = Date.now();
      server.closeIdleConnections();
    }
    socket.once("close", () => {
      connections -= 1;
      const left = (perSource.get(from) ?? 1) - 1;
      if (left > 0) perSource.set(from, left);
      else perSource.delete(from);
    });
  });
  server.maxConnections = limits.maxConnections;
  server.on("drop", () => metrics?.refused("too_many_connections"));
  // A client that trickles its headers or body is cut; a long poll answers within 30 s. Neither runs while a
  // request waits for its answer, nor between requests: there keepAliveTimeout does, and a watcher's next
  // poll follows its answer at once (client.ts drops a connection it kept after 4 s).
  server.headersTimeout = 10_000;
  server.requestTimeout = 45_000;
  server.keepAliveTimeout = 5000;
  return server;
}

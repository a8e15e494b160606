// `xenroam-lab scale --fanout`, the figure (a): how long an activation takes to reach every correspondent that
// watches the control server, with 10, 100 and 1,000 watching, on SQLite and on a three-member etcd. A real
// `xenroam-control serve` (TLS, its own CA) in a namespace of the bench's own, watchers that long-poll it as
// correspondents do (a token each, one TLS connection kept from poll to poll) in child processes of their own,
// and a few real correspondent agents, each in its own namespace, applying the bindings to nftables. Each time
// is taken from the activating request's sending to a watcher's whole answer, on the monotonic clock all
// processes share.

import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { request as httpsRequest, type RequestOptions } from "node:https";
import { join } from "node:path";
import { createInterface } from "node:readline";
import {
  type ConnectionOptions,
  connect as tlsConnect,
  createSecureContext,
  type SecureContext,
  type TLSSocket,
} from "node:tls";
import { fileURLToPath } from "node:url";
import { formatIpv6, parsePrefix, slaacAddress } from "@xenroam/core";
import { createNft } from "@xenroam/mobility";
import { createNetlink } from "@xenroam/netlink";
import { EtcdCluster } from "@xenroam/process/etcd-cluster";
import { DEFAULT_STATE_ROOT, findWorkspaceCommand, LabError, sitesFileOf } from "./lab.js";
import { NsWorker } from "./netns.js";
import { makeServerCertificate } from "./openssl.js";
import type { NetOp } from "./plan.js";
import { percentile } from "./stats.js";
import { identify, netnsAdd, netnsDel, netnsExec, netnsList, netnsPids, stopProcess } from "./system.js";
import { DEFAULT_TOPOLOGY, parseTopology } from "./topology.js";

const FANOUT_MAIN = fileURLToPath(import.meta.url);

export const FANOUT_STORES = ["sqlite", "etcd"] as const;
export type FanoutStore = (typeof FANOUT_STORES)[number];

/** The bench's own addresses (a ULA /48): the server on the bridge, the watchers' sources on lo. */
export const FANOUT_SERVER = "fd58:7266::1";
const CONTROL_PORT = 7360;
const METRICS_PORT = 9360;
const BINDING_PORT = 7361;
/**
 * Watchers a source address: the server takes 64 connections from one (DEFAULT_LIMITS), and a watcher may hold
 * two for a moment (its next poll connects before the server has seen the last one close).
 */
export const WATCHERS_PER_SOURCE = 30;
/** The long poll a watcher holds, as the correspondent agent's (25 s). */
const WAIT_MS = 25_000;
/** How long a watcher process's answers must have stopped before its watchers poll again; how many a turn. */
const QUIET_MS = 20;
const REPOLL_SLICE = 10;
/** Activations run before those counted, at every count. */
const WARMUP = 2;
/** A pause after every watcher waits again, before the next activation. */
const SETTLE_MS = 200;
/** The VM's token may make 5 requests a second; an activation is two (its standby, then itself). */
const MIN_SPACING_MS = 500;

export interface FanoutOptions {
  /** Simulated watchers, one run each. */
  readonly counts: readonly number[];
  readonly stores: readonly FanoutStore[];
  /** Activations per count and store. */
  readonly activations?: number;
  /** Real correspondent agents watching beside the simulated ones. */
  readonly correspondents?: number;
  /** Namespace prefix: the bench's namespaces are NAME-fan and NAME-fcnI. */
  readonly labName: string;
  readonly stateRoot?: string;
  readonly progress?: (line: string) => void;
  /** The control server's command ([node, script]): this workspace's xenroam-control, or a build to compare. */
  readonly control?: readonly string[];
}

/** What the real correspondent agents did: received (their log) and applied (their nftables map). */
export interface AgentFigure {
  readonly agents: number;
  /** Agents that applied every activation. */
  readonly complete: number;
  /** From the activating request to the agent's `binding_learned` log line (ms resolution). */
  readonly receivedP50Ms: number;
  readonly receivedMaxMs: number;
  /** From the activating request to the first look at its nftables map that shows it: an upper bound. */
  readonly appliedMaxMs: number;
}

export interface FanoutFigure {
  readonly store: FanoutStore;
  readonly watchers: number;
  readonly activations: number;
  /** From the activating request (POST /v1/bindings sent) to each watcher's receipt, watchers × activations. */
  readonly p50Ms: number;
  readonly p95Ms: number;
  readonly maxMs: number;
  /** The same from the activating request's answer (the server wakes its watchers before it answers). */
  readonly fromAnswerP95Ms: number;
  /** The activating request's own round trip (a TLS connection, the commit). */
  readonly activateP50Ms: number;
  /**
   * The server's own view of the same runs (its histogram xenroam_control_watch_fanout_seconds, from a commit
   * to each waiting poll's answer written, standbys' changes included): the upper bound of the p95's bucket.
   */
  readonly serverP95Ms: number;
  /** Its mean (the histogram's sum over its count). */
  readonly serverMeanMs?: number;
  /** Watchers that received every activation, and the receipts missing in all. */
  readonly complete: number;
  readonly missing: number;
  readonly agents: AgentFigure;
}

// ---- The plan: namespaces, links, addresses (pure) ----

export interface FanoutPlan {
  /** Where the server, etcd, the driver and the simulated watchers run. */
  readonly control: string;
  readonly correspondents: ReadonlyArray<{ readonly netns: string; readonly address: string }>;
  /** The watchers' source addresses, on lo in `control`: one for every WATCHERS_PER_SOURCE watchers. */
  readonly sources: readonly string[];
  readonly veths: ReadonlyArray<{
    readonly name: string;
    readonly netns: string;
    readonly peer: string;
    readonly peerNetns: string;
  }>;
  readonly namespaces: ReadonlyArray<{ readonly netns: string; readonly ops: readonly NetOp[] }>;
}

const FANOUT_BRIDGE = "xrfan0";

export const fanoutNamespaces = (name: string, correspondents: number): string[] => [
  `${name}-fan`,
  ...Array.from({ length: correspondents }, (_, i) => `${name}-fcn${i + 1}`),
];

/** The server's namespace with a bridge the agents' namespaces hang off, and sources for `watchers`. */
export function planFanout(name: string, watchers: number, correspondents: number): FanoutPlan {
  const [control = "", ...cns] = fanoutNamespaces(name, correspondents);
  const sources = Array.from(
    { length: Math.max(1, Math.ceil(watchers / WATCHERS_PER_SOURCE)) },
    (_, k) => `fd58:7266:0:1::${(k + 1).toString(16)}`,
  );
  const agents = cns.map((netns, i) => ({ netns, address: `fd58:7266::c:${(i + 1).toString(16)}` }));
  const up = (n: string, master?: string): NetOp => ({
    op: "setLink",
    name: n,
    change: { up: true, ...(master ? { master } : {}) },
  });
  const sysctl = (ifname: string, key: string, value: number): NetOp => ({
    op: "writeSysctl",
    ifname,
    key,
    value,
  });
  const controlOps: NetOp[] = [
    up("lo"),
    ...sources.map((a): NetOp => ({ op: "addAddress", name: "lo", cidr: `${a}/128`, options: {} })),
    { op: "createBridge", name: FANOUT_BRIDGE, options: { mtu: 1500, multicastSnooping: false } },
    sysctl(FANOUT_BRIDGE, "accept_dad", 0),
    up(FANOUT_BRIDGE),
    { op: "addAddress", name: FANOUT_BRIDGE, cidr: `${FANOUT_SERVER}/64`, options: { nodad: true } },
    // The agents' ports are layer 2 only.
    ...agents.flatMap((_, i) => [sysctl(`fcn${i + 1}`, "disable_ipv6", 1), up(`fcn${i + 1}`, FANOUT_BRIDGE)]),
  ];
  return {
    control,
    correspondents: agents,
    sources,
    veths: agents.map((a, i) => ({ name: `fcn${i + 1}`, netns: control, peer: "eth0", peerNetns: a.netns })),
    namespaces: [
      { netns: control, ops: controlOps },
      ...agents.map((a) => ({
        netns: a.netns,
        ops: [
          up("lo"),
          sysctl("eth0", "accept_ra", 0),
          up("eth0"),
          { op: "addAddress", name: "eth0", cidr: `${a.address}/64`, options: { nodad: true } },
        ] satisfies NetOp[],
      })),
    ],
  };
}

// ---- The figures (pure) ----

/** An activation as the driver saw it: sentAt, answeredAt on the monotonic clock (ms); sentWall, the wall's. */
export interface ActivationTimes {
  readonly revision: number;
  readonly seq: number;
  readonly sentAt: number;
  readonly answeredAt: number;
  readonly sentWall: number;
}

/** watcher → revision → when it arrived (ms, the monotonic clock every process on the machine shares). */
export type Receipts = ReadonlyMap<number, ReadonlyMap<number, number>>;

/** An agent's activations by sequence number: when it logged it (wall clock, ms) and when its map showed it. */
export interface AgentTimes {
  readonly received: ReadonlyMap<number, number>;
  readonly applied: ReadonlyMap<number, number>;
}

const tenth = (x: number) => (Number.isFinite(x) ? Math.round(x * 10) / 10 : x);

/** The figure of one run: every watcher × every activation, matched by the activation's revision. */
export function fanoutFigure(
  store: FanoutStore,
  watchers: number,
  activations: readonly ActivationTimes[],
  receipts: Receipts,
  agents: readonly AgentTimes[],
  serverP95Ms = Number.NaN,
): FanoutFigure {
  const fromSent: number[] = [];
  const fromAnswer: number[] = [];
  let complete = 0;
  let missing = 0;
  for (let w = 0; w < watchers; w++) {
    const got = receipts.get(w);
    let all = true;
    for (const a of activations) {
      const at = got?.get(a.revision);
      if (at === undefined) {
        all = false;
        missing++;
        continue;
      }
      fromSent.push(at - a.sentAt);
      fromAnswer.push(at - a.answeredAt);
    }
    if (all) complete++;
  }
  const received = agents.flatMap((g) =>
    activations.flatMap((a) => {
      const at = g.received.get(a.seq);
      return at === undefined ? [] : [at - a.sentWall];
    }),
  );
  const applied = agents.flatMap((g) =>
    activations.flatMap((a) => {
      const at = g.applied.get(a.seq);
      return at === undefined ? [] : [at - a.sentWall];
    }),
  );
  return {
    store,
    watchers,
    activations: activations.length,
    p50Ms: tenth(percentile(fromSent, 50)),
    p95Ms: tenth(percentile(fromSent, 95)),
    maxMs: tenth(fromSent.length > 0 ? Math.max(...fromSent) : Number.NaN),
    fromAnswerP95Ms: tenth(percentile(fromAnswer, 95)),
    serverP95Ms,
    activateP50Ms: tenth(
      percentile(
        activations.map((a) => a.answeredAt - a.sentAt),
        50,
      ),
    ),
    complete,
    missing,
    agents: {
      agents: agents.length,
      complete: agents.filter((g) => activations.every((a) => g.applied.has(a.seq))).length,
      receivedP50Ms: tenth(percentile(received, 50)),
      receivedMaxMs: tenth(received.length > 0 ? Math.max(...received) : Number.NaN),
      appliedMaxMs: tenth(applied.length > 0 ? Math.max(...applied) : Number.NaN),
    },
  };
}

const ms = (x: number) => (Number.isFinite(x) ? `${x} ms` : "-");

/** The fan-out table the README shows. */
export function fanoutMarkdown(figures: readonly FanoutFigure[]): string {
  if (figures.length === 0) return "";
  return [
    "| correspondents watching | store | activations | got every one | activation → receipt p50 | p95 | max | p95 from its answer | server's own p95 | real agents (nftables) applied every one | their receipt p50 / max |",
    "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ...figures.map(
      (f) =>
        `| ${f.watchers.toLocaleString("en")} | ${f.store} | ${f.activations} | ${f.complete} | ${ms(f.p50Ms)} | ${ms(f.p95Ms)} | ${ms(f.maxMs)} | ${ms(f.fromAnswerP95Ms)} | ${Number.isFinite(f.serverP95Ms) ? `≤ ${f.serverP95Ms} ms` : "-"} | ${f.agents.complete} of ${f.agents.agents} | ${ms(f.agents.receivedP50Ms)} / ${ms(f.agents.receivedMaxMs)} |`,
    ),
  ].join("\n");
}

// ---- HTTPS, as the correspondents speak it: a connection a request ----

interface Target {
  readonly address: string;
  readonly port: number;
  readonly ca: string;
}

interface Answer {
  readonly status: number;
  readonly text: string;
  /** When the answer was whole (the monotonic clock, ms). */
  readonly at: number;
  readonly retryAfter?: number;
}

/** The monotonic clock (CLOCK_MONOTONIC, ms): one for every process on the machine. */
const mono = () => Number(process.hrtime.bigint()) / 1e6;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The server as clients reach it: its address, and one TLS context for all connections (the CA parsed once). */
interface Server {
  readonly address: string;
  readonly port: number;
  readonly tls: SecureContext;
}

const serverOf = (t: Target): Server => ({
  address: t.address,
  port: t.port,
  tls: createSecureContext({ ca: t.ca }),
});

interface CallOptions {
  readonly body?: unknown;
  readonly timeoutMs?: number;
}

function call(
  server: Server,
  method: string,
  path: string,
  token: string,
  options: CallOptions = {},
): Promise<Answer> {
  const body = options.body === undefined ? undefined : JSON.stringify(options.body);
  // node:https hands the TLS options on to tls.connect; its types list only some of them.
  const request: RequestOptions & Pick<ConnectionOptions, "secureContext"> = {
    host: server.address,
    port: server.port,
    method,
    path,
    secureContext: server.tls,
    agent: false,
    headers: {
      authorization: `Bearer ${token}`,
      ...(body ? { "content-type": "application/json", "content-length": Buffer.byteLength(body) } : {}),
    },
    timeout: options.timeoutMs ?? 10_000,
  };
  return new Promise((resolve, reject) => {
    const req = httpsRequest(request, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => {
        const at = mono();
        const retry = Number(res.headers["retry-after"]);
        resolve({
          status: res.statusCode ?? 0,
          text: Buffer.concat(chunks).toString("utf8"),
          at,
          ...(Number.isFinite(retry) ? { retryAfter: retry } : {}),
        });
      });
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error(`${method} ${path}: no answer in time`)));
    req.on("error", reject);
    req.end(body);
  });
}

/**
 * An HTTP/1.1 answer once it is whole (its Content-Length read, or its last chunk), else undefined. The
 * control server sizes its answers; chunked ones are read all the same.
 */
export function wholeAnswer(raw: Buffer): { status: number; text: string } | undefined {
  const head = raw.indexOf("\r\n\r\n");
  if (head < 0) return undefined;
  const headers = raw.subarray(0, head).toString("latin1");
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(headers)?.[1]);
  const length = /\r\ncontent-length: *(\d+)/i.exec(headers)?.[1];
  if (length !== undefined) {
    const end = head + 4 + Number(length);
    return raw.length < end ? undefined : { status, text: raw.subarray(head + 4, end).toString("utf8") };
  }
  if (!/\r\ntransfer-encoding: *chunked/i.test(headers)) return undefined;
  const parts: Buffer[] = [];
  for (let at = head + 4; ;) {
    const eol = raw.indexOf("\r\n", at);
    if (eol < 0) return undefined;
    const size = Number.parseInt(raw.subarray(at, eol).toString("latin1"), 16);
    if (size === 0) return { status, text: Buffer.concat(parts).toString("utf8") };
    if (!(size > 0) || raw.length < eol + 2 + size + 2) return undefined;
    parts.push(raw.subarray(eol + 2, eol + 2 + size));
    at = eol + 2 + size + 2;
  }
}

/** A watcher's TLS connection kept for its next poll (and what ends the keeping); the TLS session to resume. */
interface Line {
  kept?: { readonly socket: TLSSocket; readonly drop: () => void };
  session?: Buffer;
}

/**
 * One long poll as the correspondent agent makes it (ControlClient): on the TLS connection the last poll kept,
 * else a new one from `source` resuming `line`'s session, the request written whole, the answer read to its
 * Content-Length, and the connection kept for the next poll unless the server closes it. A poll the server
 * drops unanswered on a kept connection (closing it as the poll went out) goes again on a new one, once.
 */
function poll(server: Server, path: string, token: string, source: string, line: Line): Promise<Answer> {
  const request = Buffer.from(
    `GET ${path} HTTP/1.1\r\nHost: [${server.address}]:${server.port}\r\nAuthorization: Bearer ${token}\r\nConnection: keep-alive\r\n\r\n`,
  );
  const attempt = (kept: TLSSocket | undefined) =>
    new Promise<Answer>((resolve, reject) => {
      let socket: TLSSocket;
      if (kept) {
        socket = kept;
        socket.write(request);
      } else {
        // tls.connect hands the TCP options on to net.connect; its types list only the TLS ones.
        const options: ConnectionOptions & { localAddress: string } = {
          host: server.address,
          port: server.port,
          localAddress: source,
          secureContext: server.tls,
          ...(line.session ? { session: line.session } : {}),
        };
        socket = tlsConnect(options, () => socket.write(request));
        socket.on("session", (session: Buffer) => (line.session = session));
      }
      let raw: Buffer = Buffer.alloc(0);
      const detach = () => {
        socket.off("data", data);
        socket.off("error", failed);
        socket.off("close", closed);
        socket.off("timeout", late);
        socket.setTimeout(0);
      };
      const data = (chunk: Buffer) => {
        raw = raw.length === 0 ? chunk : Buffer.concat([raw, chunk]);
        const answer = wholeAnswer(raw);
        if (!answer) return;
        const at = mono();
        detach();
        const head = raw.subarray(0, raw.indexOf("\r\n\r\n") + 2).toString("latin1");
        if (/\r\nconnection: *close\r\n/i.test(head)) socket.destroy();
        else keep(line, socket);
        resolve({ ...answer, at });
      };
      // Closed unanswered on a kept connection: the server closed it as the poll went out.
      const failed = (err: Error, again = kept !== undefined && raw.length === 0) => {
        detach();
        socket.destroy();
        if (again) resolve(attempt(undefined));
        else reject(err);
      };
      const closed = () => failed(new Error(`${path}: the connection closed before a whole answer`));
      const late = () => failed(new Error(`${path}: no answer in time`), false);
      socket.on("data", data);
      socket.on("error", failed);
      socket.on("close", closed);
      socket.on("timeout", late);
      socket.setTimeout(WAIT_MS + 10_000);
    });
  const kept = line.kept;
  line.kept = undefined;
  if (!kept || kept.socket.destroyed) return attempt(undefined);
  kept.socket.off("error", kept.drop);
  kept.socket.off("close", kept.drop);
  return attempt(kept.socket);
}

/** Keeps a watcher's connection for its next poll, until the server closes it. */
function keep(line: Line, socket: TLSSocket): void {
  const drop = () => {
    if (line.kept?.socket === socket) line.kept = undefined;
    socket.destroy();
  };
  socket.on("error", drop);
  socket.on("close", drop);
  line.kept = { socket, drop };
}

/** A call that must succeed: its JSON, retried while the token's rate limit says so. */
async function api<T>(
  server: Server,
  method: string,
  path: string,
  token: string,
  body?: unknown,
): Promise<T> {
  for (let tries = 0; ; tries++) {
    const a = await call(server, method, path, token, body === undefined ? {} : { body });
    if (a.status === 429 && tries < 10) {
      await sleep(1000 * (a.retryAfter ?? 1));
      continue;
    }
    if (a.status !== 200) throw new Error(`${method} ${path}: ${a.status} ${a.text.slice(0, 300)}`);
    return JSON.parse(a.text) as T;
  }
}

// ---- The simulated watchers (a child process: `node fanout.js watchers`, its config on stdin) ----

interface WatchersConfig {
  readonly target: Target;
  readonly since: number;
  readonly watchers: ReadonlyArray<{ readonly id: number; readonly token: string; readonly source: string }>;
}

/** A line a watcher process writes: a receipt, or a failed poll. */
type WatcherLine =
  | { readonly w: number; readonly rev: number; readonly at: number }
  | { readonly w: number; readonly error: string };

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

async function watchersMain(): Promise<void> {
  const config = JSON.parse(await readStdin()) as WatchersConfig;
  process.once("SIGTERM", () => process.exit(0));
  process.once("SIGINT", () => process.exit(0));
  // Lines go out a batch a turn of the event loop: a thousand answers at once are not a thousand writes.
  let pending: string[] = [];
  const emit = (line: WatcherLine) => {
    if (pending.length === 0)
      setImmediate(() => {
        process.stdout.write(`${pending.join("\n")}\n`);
        pending = [];
      });
    pending.push(JSON.stringify(line));
  };
  // Lightweight: the CA parsed once, and each watcher keeps its connection from poll to poll, as the agent
  // does, and resumes its TLS session when it must connect again: a full handshake's certificate checks for
  // every poll of a thousand watchers would make this process, not the server, what the figures measure.
  const server = serverOf(config.target);
  // And a watcher polls again once this process's answers have stopped coming for a moment, a few watchers a
  // turn of the event loop: a poll (a connection when its kept one is gone) costs this process CPU that would
  // delay the receipts still to come (and be counted in them). The server sees the next polls a little later
  // than a thousand machines would send them.
  const next: Array<() => void> = [];
  let quiet: NodeJS.Timeout | undefined;
  let draining = false;
  const drain = () => {
    for (const go of next.splice(0, REPOLL_SLICE)) go();
    if (next.length > 0) setImmediate(drain);
    else draining = false;
  };
  const afterBurst = () =>
    new Promise<void>((resolve) => {
      next.push(resolve);
      clearTimeout(quiet);
      quiet = setTimeout(() => {
        if (draining) return;
        draining = true;
        drain();
      }, QUIET_MS);
    });
  const watch = async (w: WatchersConfig["watchers"][number]) => {
    let since = config.since;
    const line: Line = {};
    for (;;) {
      try {
        const path = `/v1/bindings?since=${since}&wait=${WAIT_MS}`;
        const a = await poll(server, path, w.token, w.source, line);
        if (a.status !== 200) throw new Error(`${a.status} ${a.text.slice(0, 200)}`);
        const answer = JSON.parse(a.text) as { revision: number; changes: Array<{ revision: number }> };
        for (const c of answer.changes) emit({ w: w.id, rev: c.revision, at: a.at });
        since = answer.revision;
        await afterBurst();
      } catch (err) {
        emit({ w: w.id, error: (err as Error).message });
        await sleep(500);
      }
    }
  };
  await Promise.all(config.watchers.map(watch));
}

// ---- The driver, inside the server's namespace (`node fanout.js measure`, its config on stdin) ----

interface MeasureConfig {
  readonly dir: string;
  readonly counts: readonly number[];
  readonly stores: readonly FanoutStore[];
  readonly activations: number;
  readonly control: readonly string[];
  readonly agent: readonly string[];
  readonly sources: readonly string[];
  readonly correspondents: FanoutPlan["correspondents"];
}

/** The files the bench keeps in its directory. */
const FILES = {
  key: "control.key",
  adminToken: "admin.token",
  ca: "ca.pem",
  cert: "control.crt",
  tlsKey: "control-tls.key",
  database: "control.db",
} as const;

/** Stops a child this process started, by its handle: SIGTERM, SIGKILL after 3 s. */
export async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 3000);
  await exited;
  clearTimeout(timer);
}

/** Every process the driver starts, stopped by its own handle. */
class Children {
  private readonly all = new Set<ChildProcess>();

  spawn(argv: readonly string[], stdio: Array<"ignore" | "pipe">): ChildProcess {
    const child = spawn(argv[0] as string, argv.slice(1), { stdio });
    this.all.add(child);
    child.once("exit", () => this.all.delete(child));
    return child;
  }

  stop(child: ChildProcess): Promise<void> {
    return stopChild(child);
  }

  async stopAll(): Promise<void> {
    await Promise.all([...this.all].map(stopChild));
  }
}

/** The last lines a child wrote on a stream, for the error that says why it failed. */
function tail(stream: NodeJS.ReadableStream | null, keep = 20): string[] {
  const lines: string[] = [];
  if (stream)
    createInterface({ input: stream }).on("line", (l) => {
      lines.push(l);
      if (lines.length > keep) lines.shift();
    });
  return lines;
}

async function waitUntil(
  check: () => boolean | Promise<boolean>,
  timeoutMs: number,
  everyMs = 5,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > deadline) return false;
    await sleep(everyMs);
  }
}

/** The server's Prometheus text (its --metrics-listen), or "" when it does not answer. */
async function scrape(): Promise<string> {
  try {
    const res = await fetch(`http://[::1]:${METRICS_PORT}/metrics`, { signal: AbortSignal.timeout(2000) });
    return await res.text();
  } catch {
    return "";
  }
}

/** A sample's value in Prometheus text: `name` with its labels as written (`x_total{reason="y"}`). */
export function metricValue(text: string, sample: string): number {
  const line = text.split("\n").find((l) => l.startsWith(`${sample} `));
  return Number(line?.slice(sample.length + 1) ?? Number.NaN);
}

/** A histogram's cumulative buckets in Prometheus text: [upper bound in seconds, count], in order. */
export function histogramBuckets(text: string, name: string): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const m of text.matchAll(new RegExp(`^${name}_bucket\\{le="([^"]+)"\\} (\\d+)`, "gm")))
    out.push([m[1] === "+Inf" ? Infinity : Number(m[1]), Number(m[2])]);
  return out;
}

/** The upper bound (ms) of the bucket holding the p-th percentile of what was observed between two scrapes. */
export function bucketPercentile(
  before: ReadonlyArray<[number, number]>,
  after: ReadonlyArray<[number, number]>,
  p: number,
): number {
  const counts = after.map(([le, n]) => [le, n - (before.find(([b]) => b === le)?.[1] ?? 0)] as const);
  const total = counts.at(-1)?.[1] ?? 0;
  if (total <= 0) return Number.NaN;
  const bucket = counts.find(([, n]) => n >= (p / 100) * total);
  return bucket ? bucket[0] * 1000 : Number.NaN;
}

const FANOUT_HISTOGRAM = "xenroam_control_watch_fanout_seconds";

/** Long polls open at the server now (its gauge). */
const openPolls = async () => metricValue(await scrape(), "xenroam_control_watch_clients");

/** Refusals the server counted, by reason, those it counted at all. */
async function refusals(): Promise<Record<string, number>> {
  const text = await scrape();
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^xenroam_control_refusals_total\{reason="([a-z_]+)"\} (\d+)/gm))
    if (Number(m[2]) > 0) out[m[1] as string] = Number(m[2]);
  return out;
}

/** The lab's sites, its first VM (HoA, MAC) and that MAC's SLAAC locator in each of the two sites. */
function registry() {
  const topology = parseTopology(DEFAULT_TOPOLOGY, "the default topology");
  const vm = topology.vm;
  const locators = topology.sites
    .slice(0, 2)
    .map((s) => formatIpv6(slaacAddress(parsePrefix(s.prefix), vm.primaryMac)));
  return {
    sites: sitesFileOf(topology),
    vm: vm.name,
    hoa: topology.mobility?.hoa ?? "",
    mac: vm.primaryMac,
    locators,
  };
}

async function measureStore(
  store: FanoutStore,
  config: MeasureConfig,
  children: Children,
  progress: (line: string) => void,
  onCluster: (c: EtcdCluster | undefined) => void,
): Promise<FanoutFigure[]> {
  const file = (f: string) => join(config.dir, f);
  const target: Target = {
    address: FANOUT_SERVER,
    port: CONTROL_PORT,
    ca: readFileSync(file(FILES.ca), "utf8"),
  };
  const server = serverOf(target);
  const adminToken = readFileSync(file(FILES.adminToken), "utf8").trim();
  let cluster: EtcdCluster | undefined;
  const started: ChildProcess[] = [];
  try {
    if (store === "etcd") {
      progress("etcd: starting a three-member cluster");
      cluster = await EtcdCluster.start(3);
      onCluster(cluster);
    } else rmSync(file(FILES.database), { force: true });
    const serve = children.spawn(
      [
        ...config.control,
        "serve",
        ...["--listen", `[${FANOUT_SERVER}]:${CONTROL_PORT}`, "--metrics-listen", `[::1]:${METRICS_PORT}`],
        ...["--key", file(FILES.key), "--admin-token-file", file(FILES.adminToken)],
        ...["--tls-cert", file(FILES.cert), "--tls-key", file(FILES.tlsKey)],
        ...(cluster ? ["--store", cluster.url] : ["--database", file(FILES.database)]),
      ],
      ["ignore", "ignore", "pipe"],
    );
    started.push(serve);
    const serverLog = tail(serve.stderr, 40);
    const ready = await waitUntil(
      () => serve.exitCode !== null || serverLog.some((l) => l.includes('"event":"ready"')),
      20_000,
      20,
    );
    if (!ready || serve.exitCode !== null)
      throw new Error(`xenroam-control serve did not start (${store}):\n${serverLog.join("\n")}`);

    const reg = registry();
    const most = Math.max(...config.counts);
    progress(
      `${store}: registering the sites, a VM, ${most} watchers and ${config.correspondents.length} agents`,
    );
    await api(server, "PUT", "/v1/sites", adminToken, reg.sites);
    const vmToken = (
      await api<{ token: string }>(server, "POST", "/v1/vms", adminToken, {
        name: reg.vm,
        hoa: reg.hoa,
        macs: [reg.mac],
      })
    ).token;
    const peer = async (name: string) =>
      (await api<{ token: string }>(server, "POST", "/v1/peers", adminToken, { name })).token;
    const tokens: string[] = [];
    for (let i = 0; i < most; i += 8) {
      const batch = Array.from({ length: Math.min(8, most - i) }, (_, k) => peer(`w${i + k + 1}`));
      tokens.push(...(await Promise.all(batch)));
    }

    // The real correspondent agents, each in its namespace: their log says what they learned, when.
    const agents = await Promise.all(
      config.correspondents.map(async (cn, i) => {
        const tokenFile = file(`cn${i + 1}.token`);
        writeFileSync(tokenFile, `${await peer(`cn${i + 1}`)}\n`, { mode: 0o600 });
        const child = children.spawn(
          [
            ...["ip", "netns", "exec", cn.netns, ...config.agent, "--correspondent"],
            ...["--control", `https://[${FANOUT_SERVER}]:${CONTROL_PORT}`, "--control-ca", file(FILES.ca)],
            ...["--token-file", tokenFile, "--public-key", file(`${FILES.key}.pub`)],
            ...["--listen", `[${cn.address}]:${BINDING_PORT}`],
          ],
          ["ignore", "pipe", "pipe"],
        );
        started.push(child);
        const received = new Map<number, number>();
        const applied = new Map<number, number>();
        const errors = tail(child.stderr);
        if (child.stdout)
          createInterface({ input: child.stdout }).on("line", (l) => {
            try {
              const e = JSON.parse(l) as { event?: string; ts?: string; seq?: number; hoa?: string };
              if (e.event === "binding_learned" && e.hoa === reg.hoa && typeof e.seq === "number" && e.ts)
                received.set(e.seq, Date.parse(e.ts));
            } catch {
              /* not a log line */
            }
          });
        return { netns: cn.netns, child, errors, received, applied, nft: createNft({ netns: cn.netns }) };
      }),
    );
    const agentsPolling = await waitUntil(async () => (await openPolls()) >= agents.length, 20_000, 50);
    if (!agentsPolling)
      throw new Error(
        `the correspondent agents do not watch the server: ${agents.flatMap((a) => a.errors).join("\n")}`,
      );

    const figures: FanoutFigure[] = [];
    let revision = (await api<{ revision: number }>(server, "GET", "/v1/health", "")).revision;
    let turn = 0;
    let lastSent = 0;
    for (const n of config.counts) {
      // Two processes of watchers (the machine's two cores), none shared with the server or this driver.
      const receipts = new Map<number, Map<number, number>>();
      const latest = new Array<number>(n).fill(revision);
      let failures = 0;
      let lastFailure = "";
      const groups = Math.min(2, n);
      const watchers: ChildProcess[] = [];
      for (let g = 0; g < groups; g++) {
        const mine = Array.from({ length: n }, (_, id) => id).filter((id) => id % groups === g);
        const child = children.spawn([process.execPath, FANOUT_MAIN, "watchers"], ["pipe", "pipe", "pipe"]);
        watchers.push(child);
        const errors = tail(child.stderr);
        child.once("exit", (code) => {
          if (code) lastFailure = `a watcher process exited (${code}): ${errors.join("\n")}`;
        });
        createInterface({ input: child.stdout as NodeJS.ReadableStream }).on("line", (l) => {
          const line = JSON.parse(l) as WatcherLine;
          if ("error" in line) {
            failures++;
            lastFailure = line.error;
            return;
          }
          let got = receipts.get(line.w);
          if (!got) receipts.set(line.w, (got = new Map<number, number>()));
          if (!got.has(line.rev)) got.set(line.rev, line.at);
          latest[line.w] = Math.max(latest[line.w] ?? 0, line.rev);
        });
        const watcherConfig: WatchersConfig = {
          target,
          since: revision,
          watchers: mine.map((id) => ({
            id,
            token: tokens[id] as string,
            source: config.sources[Math.floor(id / WATCHERS_PER_SOURCE)] as string,
          })),
        };
        child.stdin?.end(JSON.stringify(watcherConfig));
      }
      const parked = () => waitUntil(async () => (await openPolls()) >= n + agents.length, 30_000, 20);
      progress(`${store} ×${n}: ${n} watchers connecting`);
      if (!(await parked()))
        throw new Error(
          `${n} watchers did not all wait on the server (${failures} failed polls: ${lastFailure})`,
        );

      const activations: ActivationTimes[] = [];
      const metricsBefore = await scrape();
      // The first WARMUP activations of a count are not counted: the watchers' processes (and the server's
      // code paths) are still being compiled, and a thousand watchers' first connections still being made.
      for (let k = -WARMUP; k < config.activations; k++, turn++) {
        const locator = reg.locators[turn % 2] as string;
        // The standby first: a change too, which every watcher takes and polls again after, before the
        // activation.
        const signed = await api<{ seq: number }>(server, "POST", `/v1/vms/${reg.vm}/standby`, vmToken, {
          locator,
        });
        const before = revision;
        await waitUntil(() => latest.every((r) => r > before), 10_000);
        await parked();
        // Waiting at the server, every one; their processes may still be finishing their connections (the
        // session tickets that follow a handshake): a moment for that, which a thousand machines would not need.
        await sleep(Math.max(SETTLE_MS, lastSent + MIN_SPACING_MS - Date.now()));
        lastSent = Date.now();
        const sentAt = mono();
        const answer = await call(server, "POST", "/v1/bindings", vmToken, { body: signed });
        if (answer.status !== 200)
          throw new Error(`the activation was refused: ${answer.status} ${answer.text.slice(0, 300)}`);
        const done = {
          revision: (JSON.parse(answer.text) as { revision: number }).revision,
          seq: signed.seq,
        };
        if (k >= 0) activations.push({ ...done, sentAt, answeredAt: answer.at, sentWall: lastSent });
        revision = done.revision;
        await waitUntil(() => latest.every((r) => r >= done.revision), 10_000);
        if (latest.every((r) => r < done.revision))
          throw new Error(`no watcher received the activation (${failures} failed polls: ${lastFailure})`);
        await waitUntil(() => agents.every((a) => a.received.has(done.seq)), 5_000);
        // Their maps are read once the watchers have theirs: a look costs an nft process, not to be paid while
        // the watchers' answers are on their way.
        await Promise.all(
          agents.map((a) =>
            waitUntil(
              async () => {
                const map = await a.nft.mapElements("xenroam", "hoa_to_locator").catch(() => undefined);
                if (map?.get(reg.hoa) !== locator) return false;
                a.applied.set(done.seq, Date.now());
                return true;
              },
              5_000,
              10,
            ),
          ),
        );
      }
      // Their polls stay open at the server until a change answers them (a long poll does not notice its
      // client has gone): the next count's first standby does, before its first activation.
      await Promise.all(watchers.map((w) => children.stop(w)));
      const metricsAfter = await scrape();
      const serverP95Ms = bucketPercentile(
        histogramBuckets(metricsBefore, FANOUT_HISTOGRAM),
        histogramBuckets(metricsAfter, FANOUT_HISTOGRAM),
        95,
      );
      const grew = (sample: string) => metricValue(metricsAfter, sample) - metricValue(metricsBefore, sample);
      const serverMeanMs =
        (1000 * grew(`${FANOUT_HISTOGRAM}_sum`)) / Math.max(1, grew(`${FANOUT_HISTOGRAM}_count`));
      const figure = {
        ...fanoutFigure(store, n, activations, receipts, agents, serverP95Ms),
        serverMeanMs: Math.round(serverMeanMs * 10) / 10,
      };
      figures.push(figure);
      const refused = await refusals();
      progress(
        `${store} ×${n}: p50 ${figure.p50Ms} ms, p95 ${figure.p95Ms} ms, max ${figure.maxMs} ms (the server's own: mean ${figure.serverMeanMs} ms, p95 ≤ ${figure.serverP95Ms} ms); ${figure.complete} of ${n} got all ${figure.activations}${failures > 0 ? `; ${failures} failed polls (${lastFailure})` : ""}${Object.keys(refused).length > 0 ? `; the server refused: ${JSON.stringify(refused)}` : ""}`,
      );
    }
    return figures;
  } finally {
    for (const c of started.reverse()) await children.stop(c);
    await cluster?.stop();
    onCluster(undefined);
  }
}

async function measureMain(): Promise<void> {
  const config = JSON.parse(await readStdin()) as MeasureConfig;
  const progress = (line: string) => process.stderr.write(`${line}\n`);
  const children = new Children();
  let cluster: EtcdCluster | undefined;
  const interrupt = (signal: NodeJS.Signals) => {
    progress(`${signal}: stopping what the bench started`);
    void Promise.all([children.stopAll(), cluster?.stop()]).finally(() => process.exit(1));
  };
  process.once("SIGTERM", interrupt);
  process.once("SIGINT", interrupt);
  const figures: FanoutFigure[] = [];
  for (const store of config.stores)
    figures.push(...(await measureStore(store, config, children, progress, (c) => (cluster = c))));
  process.stdout.write(`${JSON.stringify(figures)}\n`);
}

// ---- The bench from outside: the namespaces, the files, the driver ----

function requireRoot(): void {
  if (process.getuid?.() !== 0)
    throw new LabError("the fan-out bench needs root (it creates network namespaces); run it with sudo");
}

/** Removes the bench's namespaces and whatever still runs in them (by PID and start time). */
async function removeNamespaces(names: readonly string[]): Promise<void> {
  const present = new Set(await netnsList());
  for (const ns of names.filter((n) => present.has(n))) {
    const ids = (await netnsPids(ns)).flatMap((pid) => identify(pid) ?? []);
    await Promise.all(ids.map((id) => stopProcess(id)));
    await netnsDel(ns);
  }
}

/**
 * (a) for every store and count: builds the bench's namespaces, runs the driver inside the server's, and takes
 * everything down again (also on failure, SIGINT and SIGTERM).
 */
export async function measureFanout(options: FanoutOptions): Promise<FanoutFigure[]> {
  requireRoot();
  const progress = options.progress ?? (() => {});
  if (options.counts.length === 0 || options.stores.length === 0) return [];
  const control = options.control ?? findWorkspaceCommand("xenroam-control");
  const agent = findWorkspaceCommand("xenroam-agent");
  if (!control || !agent)
    throw new LabError("no xenroam-control or xenroam-agent in this workspace; run `npm run build`");
  const plan = planFanout(options.labName, Math.max(...options.counts), options.correspondents ?? 3);
  const names = plan.namespaces.map((n) => n.netns);
  const clash = (await netnsList()).filter((n) => names.includes(n));
  if (clash.length > 0)
    throw new LabError(
      `network namespace(s) ${clash.join(", ")} exist already: another fan-out bench runs, or one left them (\`xenroam-lab down --force --name ${options.labName}\` removes them)`,
    );
  const dir = join(options.stateRoot ?? DEFAULT_STATE_ROOT, `${options.labName}-fanout`);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  let driver: ChildProcess | undefined;
  let stoppedBy: NodeJS.Signals | undefined;
  // Read through a call: a signal handler sets it while this awaits, where the compiler cannot see it change.
  const signalled = () => stoppedBy;
  const interrupt = (signal: NodeJS.Signals) => {
    stoppedBy = signal;
    driver?.kill("SIGTERM");
  };
  process.on("SIGINT", interrupt);
  process.on("SIGTERM", interrupt);
  const workers: NsWorker[] = [];
  try {
    progress(`fan-out: namespaces ${names.join(", ")}`);
    for (const ns of names) await netnsAdd(ns);
    const root = createNetlink();
    try {
      for (const v of plan.veths)
        await root.createVeth(v.name, v.peer, { netns: { name: v.netns }, peerNetns: { name: v.peerNetns } });
    } finally {
      root.close();
    }
    for (const n of plan.namespaces) {
      const w = await NsWorker.start(n.netns);
      workers.push(w);
      await w.apply(n.ops);
    }
    await Promise.all(workers.splice(0).map((w) => w.close()));
    await netnsExec(plan.control, [
      ...control,
      ...["init", "--key", join(dir, FILES.key), "--admin-token-file", join(dir, FILES.adminToken)],
    ]);
    await makeServerCertificate(
      { ca: join(dir, FILES.ca), cert: join(dir, FILES.cert), key: join(dir, FILES.tlsKey) },
      FANOUT_SERVER,
    );
    if (signalled()) throw new LabError(`interrupted (${signalled()})`);
    const config: MeasureConfig = {
      dir,
      counts: options.counts,
      stores: options.stores,
      activations: options.activations ?? 20,
      control,
      agent,
      sources: plan.sources,
      correspondents: plan.correspondents,
    };
    const child = spawn("ip", ["netns", "exec", plan.control, process.execPath, FANOUT_MAIN, "measure"], {
      stdio: ["pipe", "pipe", "pipe"],
    });
    driver = child;
    const said: string[] = [];
    createInterface({ input: child.stderr }).on("line", (l) => {
      said.push(l);
      if (said.length > 30) said.shift();
      progress(`fan-out: ${l}`);
    });
    let out = "";
    child.stdout.on("data", (c) => (out += String(c)));
    child.stdin.end(JSON.stringify(config));
    const code = await new Promise<number>((resolve) => {
      child.once("error", () => resolve(1));
      child.once("exit", (c) => resolve(c ?? 1));
    });
    if (signalled()) throw new LabError(`interrupted (${signalled()}); the bench's namespaces are removed`);
    if (code !== 0) throw new LabError(`the fan-out driver failed (exit ${code}):\n${said.join("\n")}`);
    return JSON.parse(out.trim().split("\n").at(-1) ?? "[]") as FanoutFigure[];
  } finally {
    process.off("SIGINT", interrupt);
    process.off("SIGTERM", interrupt);
    await Promise.all(workers.map((w) => w.close().catch(() => {})));
    const id = driver?.pid === undefined ? undefined : identify(driver.pid);
    if (id) await stopProcess(id, 10_000);
    await removeNamespaces(names);
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const mode = process.argv[2];
  const main = mode === "watchers" ? watchersMain : mode === "measure" ? measureMain : undefined;
  (main ?? (() => Promise.reject(new Error("usage: fanout.js watchers|measure (config on stdin)"))))().catch(
    (err: unknown) => {
      process.stderr.write(
        `fanout ${mode ?? ""}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
      );
      process.exit(1);
    },
  );
}

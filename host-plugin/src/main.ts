#!/usr/bin/env node
// xenroam: the Dom0 command. Builds the adapters (staging, xenstore, radvd, state file, toolstack) from
// the command line and hands them to the engine. Human output on stdout; --log-json for JSON log lines.

import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { hostname, setPriority } from "node:os";
import { join } from "node:path";
import { Command, InvalidArgumentError, Option } from "commander";
import { createNetlink, type Netlink } from "@xenroam/netlink";
import { ControlClient, ControlClientError } from "@xenroam/control";
import { XL_DEFAULTS, XlError, xlReceive, XlToolstack } from "./adapters/xl.js";
import { connectXapi, type Xapi, XapiAdapterError, XapiToolstack } from "./adapters/xapi.js";
import {
  normalizeFingerprint,
  readCaFile,
  XAPI_SOCKET,
  xapiEndpoint,
  type XapiTrust,
  XapiTrustError,
} from "./adapters/xapi-wire.js";
import { XlConfigError } from "./xlcfg.js";
import { InstallError, installXapi } from "./install.js";
import { checks, gatherFacts } from "./doctor.js";
import {
  CHANNEL_DIR,
  type DomainInfo,
  KEYS,
  parseSites,
  type SiteDirectory,
  SitesError,
  type Toolstack,
  type VifInfo,
} from "@xenroam/protocol";
import { XenstoreClient } from "@xenroam/xenstore";
import { createDom0Channel } from "./adapters/channel.js";
import { createRadvdControl } from "./adapters/radvd.js";
import { type PendingRelease, spawnPendingRelease } from "./adapters/hold-release.js";
import { domidByName, watchSuspend } from "./adapters/suspend-watch.js";
import { awaitHotplugged, awaitSwitch, engageHold, releaseHold } from "./hold.js";
import {
  type LocatorAnnouncement,
  prepareAnnouncement,
  sendAnnouncement,
  withdrawAnnouncement,
} from "./announce.js";
import { isIpv6, isMac } from "@xenroam/core";
import { createLocks } from "./adapters/locks.js";
import { createStateStore } from "./adapters/state.js";
import { createTextfileMetrics } from "./adapters/textfile.js";
import {
  BusyError,
  Engine,
  HOLD_TIMEOUT_MS,
  type Repair,
  type MigrationReport,
  PluginError,
  PrepareError,
  DEFAULT_EVACUATE_PARALLEL,
} from "./engine.js";
import { renderEvacuation } from "./evacuate.js";
import type { Log, StagingNetwork } from "./ports.js";
import { LinuxStaging } from "./adapters/linux-staging.js";
import { ensureParkingNetwork, XapiStaging } from "./adapters/xapi-staging.js";
import { createDom0Net, Dom0NetError } from "./adapters/dom0-net.js";
import { parseRelayArgument, relayActivation } from "./relay.js";

interface GlobalOptions {
  host?: string;
  sites?: string;
  stateDir?: string;
  xenstore?: string;
  toolstack: "xl" | "xapi" | "lab";
  lab?: string;
  control?: string;
  controlTokenFile?: string;
  controlCa?: string;
  xlConfig?: string;
  transport?: string;
  remoteXenroam?: string;
  bridge?: string;
  parkingBridge?: string;
  xapiUrl?: string;
  xapiUser?: string;
  xapiPasswordFile?: string;
  xapiCa?: string;
  xapiFingerprint: string[];
  xapiInsecureHttp?: boolean;
  xapiSessionFile?: string;
  /** Refused: a session id on the command line (see localXapi). */
  xapiSession?: string;
  xapiRemote?: string;
  xapiRemoteUser?: string;
  xapiRemotePasswordFile?: string;
  xapiRemoteCa?: string;
  xapiRemoteFingerprint: string[];
  logJson?: boolean;
  /** node_exporter's textfile collector directory: each migration's record goes there. */
  metricsTextfile?: string;
  /** commander's negated option: false with --no-carrier-hold. */
  carrierHold: boolean;
  /** commander's negated option: false with --no-announce. */
  announce: boolean;
}

class UsageError extends Error {}

/**
 * xenroam's own work gives way on Dom0's CPU (nice 19) — to xl copying the last pages on the source, to
 * xenstored and netback connecting the guest's frontends on the destination. Measured on the real-Xen rig
 * (1 vCPU per Dom0): with xenroam's Node.js beside them at the same priority, the guest's own xenstore
 * requests at its resume took 20 ms each instead of 11. Nothing it still does after this is urgent.
 */
function yieldCpu(): void {
  try {
    setPriority(19);
  } catch {
    // not allowed here: carry on at the priority it has
  }
}

/** A repeatable option's values, in order. */
const collect = (v: string, previous: string[]): string[] => [...previous, v];

const positiveInt = (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0)
    throw new InvalidArgumentError("expected a positive whole number of milliseconds");
  return n;
};

function makeLog(json: boolean): Log {
  return (event, fields = {}) => {
    if (json) {
      process.stderr.write(
        `${JSON.stringify({ ts: new Date().toISOString(), component: "xenroam", event, ...fields })}\n`,
      );
      return;
    }
    // Phases reach people as the timeline printed at the end; JSON logs keep them line by line.
    if (event === "phase") return;
    // xl's own progress lines, as an admin knows them from a plain `xl migrate`.
    if (event === "xl" && typeof fields.line === "string") {
      process.stderr.write(`xl: ${fields.line}\n`);
      return;
    }
    const detail = Object.entries(fields)
      .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
      .join(" ");
    process.stderr.write(`xenroam: ${event}${detail ? ` ${detail}` : ""}\n`);
  };
}

/**
 * receive's half of the carrier hold: the releaser starts with the migration (Node.js starting in Dom0 shares the
 * CPU with the memory stream then, not with the guest resuming) and waits to be told what was held.
 */
function startHoldReleaser(
  g: GlobalOptions,
  r: { vm: string; devids: readonly number[]; migration: string },
  log: Log,
): { release: (domid: number, devids: readonly number[]) => void; cancel: () => void } {
  let pending: PendingRelease | undefined;
  try {
    pending = spawnPendingRelease(r, {
      stateDir: g.stateDir ?? "/run/xenroam",
      ...(g.xenstore ? { xenstore: g.xenstore } : {}),
    });
  } catch (err) {
    log("hold_releaser_failed", { migration: r.migration, error: (err as Error).message });
  }
  return {
    release: (domid, devids) => {
      if (pending?.engage(domid, devids)) {
        log("hold_engaged", { migration: r.migration, domid, devids, releaser: pending.pid });
        return;
      }
      if (pending)
        log("hold_releaser_gone", { migration: r.migration, domid, devids, releaser: pending.pid });
      // Nobody would release the frontends (no releaser, or it died while the memory arrived): do it now
      // rather than leave them waiting.
      void XenstoreClient.connect(g.xenstore).then(async (xs) => {
        try {
          await releaseHold(xs, domid, devids, log);
        } finally {
          xs.close();
        }
      });
    },
    cancel: () => pending?.cancel(),
  };
}

/** The domain's vifs from their backends (libxl writes mac and bridge there: libxl_nic.c 213, 236), no xl started. */
async function xenstoreDomain(
  xs: XenstoreClient,
  vm: string,
  domid: number,
): Promise<DomainInfo | undefined> {
  const base = `/local/domain/0/backend/vif/${domid}`;
  const vifs: VifInfo[] = [];
  for (const d of await xs.directory(base).catch(() => [] as string[])) {
    const devid = Number(d);
    const mac = await xs.tryRead(`${base}/${d}/mac`);
    const bridge = await xs.tryRead(`${base}/${d}/bridge`);
    if (!Number.isInteger(devid) || mac === undefined || bridge === undefined) return undefined;
    vifs.push({ devid, mac: mac.toLowerCase(), ifname: `vif${domid}.${devid}`, bridge });
  }
  if (vifs.length === 0) return undefined;
  return { vm, domid, host: hostname(), vifs: vifs.sort((a, b) => a.devid - b.devid) };
}

function loadSites(file: string): SiteDirectory {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new UsageError(
      `cannot read the sites file ${file}: ${(err as Error).message} (give one with --sites FILE)`,
    );
  }
  try {
    return parseSites(JSON.parse(text), file);
  } catch (err) {
    if (err instanceof SyntaxError) throw new UsageError(`${file} is not valid JSON: ${err.message}`);
    throw err;
  }
}

/** The CA an https:// control server is checked against when --control-ca is not given, if it is there. */
const CONTROL_CA = "/etc/xenroam/control-ca.pem";

/** The control server's CA (PEM): --control-ca, else CONTROL_CA for an https:// URL, else the system's CAs. */
function controlCa(url: string, file: string | undefined): string | undefined {
  const path = file ?? (url.startsWith("https:") && existsSync(CONTROL_CA) ? CONTROL_CA : undefined);
  if (path === undefined) return undefined;
  try {
    return readFileSync(path, "utf8");
  } catch (err) {
    throw new UsageError(
      `cannot read the control server's CA ${path}: ${(err as Error).message} (give it with --control-ca FILE)`,
    );
  }
}

/** A client for the control server (its replicas: URLs separated by commas) with this host's (peer) token. */
function controlClient(
  url: string,
  tokenFile: string | undefined,
  caFile: string | undefined,
  timeoutMs?: number,
  log?: Log,
): ControlClient {
  const file = tokenFile ?? "/etc/xenroam/host.token";
  let token: string;
  try {
    token = readFileSync(file, "utf8").trim();
  } catch (err) {
    throw new UsageError(
      `cannot read the control token ${file}: ${(err as Error).message} (issue one with \`xenroam-control add-peer HOST\` and give it with --control-token-file FILE)`,
    );
  }
  const ca = controlCa(url, caFile);
  return new ControlClient(url, {
    token,
    ...(ca ? { ca } : {}),
    ...(timeoutMs ? { timeoutMs } : {}),
    ...(log ? { log } : {}),
  });
}

/** The sites document from the control server, validated as a file would be; read once per command. */
async function sitesFromControl(
  url: string,
  tokenFile: string | undefined,
  caFile: string | undefined,
): Promise<SiteDirectory> {
  const client = controlClient(url, tokenFile, caFile);
  return parseSites(await client.sites(), `the sites document of ${client.base}`);
}

/** The relay of a guest's activation is awaited as a migration ends: a sick server must not hold it long. */
const RELAY_TIMEOUT_MS = 2000;

/**
 * receive --relay: relays the guest's activation with this host's token (its own --control first, else the
 * source's). Undefined, with the reason logged, when it cannot: the migration goes on without it.
 */
function receiveRelay(text: string, g: GlobalOptions, log: Log): (() => Promise<unknown>) | undefined {
  try {
    const order = parseRelayArgument(text);
    const client = controlClient(
      g.control ?? order.control,
      g.controlTokenFile,
      g.controlCa,
      RELAY_TIMEOUT_MS,
      log,
    );
    // While the memory stream arrives (the server reached, the client's code and TLS loaded): the relay then
    // costs the paused domain a connection (with its TLS handshake for https://) and a round trip.
    const warmed = client.health().catch(() => undefined);
    return async () => {
      await warmed;
      return relayActivation(client, order.activation, log, { by: "destination" });
    };
  } catch (err) {
    log("binding_relay_unavailable", { error: (err as Error).message });
    return undefined;
  }
}

function readSecretFile(file: string): string {
  try {
    const text = readFileSync(file, "utf8").trim();
    if (text) return text;
  } catch (err) {
    throw new UsageError(`cannot read ${file}: ${(err as Error).message}`);
  }
  throw new UsageError(`${file} is empty`);
}

/** How a pool's https:// XAPI is checked, from its options (CA file or pinned fingerprints). */
function xapiTrust(
  flag: "--xapi" | "--xapi-remote",
  ca: string | undefined,
  fingerprints: readonly string[],
  insecureHttp: boolean | undefined,
): XapiTrust {
  try {
    return {
      flag,
      ...(ca !== undefined ? { ca: readCaFile(ca, flag) } : {}),
      ...(fingerprints.length > 0
        ? { fingerprints: fingerprints.map((f) => normalizeFingerprint(f, flag)) }
        : {}),
      ...(insecureHttp ? { insecureHttp } : {}),
    };
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

/** A XAPI session id from a file, or from stdin with "-" (never from the command line). */
function readSessionFile(file: string): string {
  let text: string;
  try {
    text = readFileSync(file === "-" ? 0 : file, "utf8").trim();
  } catch (err) {
    throw new UsageError(
      `--xapi-session-file: cannot read ${file === "-" ? "stdin" : file}: ${(err as Error).message}`,
    );
  }
  if (!/^OpaqueRef:[A-Za-z0-9-]+$/.test(text))
    throw new UsageError(
      `--xapi-session-file: ${file === "-" ? "stdin" : file} holds no XAPI session id (OpaqueRef:…)`,
    );
  return text;
}

/**
 * A session with this host's pool: the host plugin's session, or a login — over xapi's Unix socket by default
 * (root, no password: xapi trusts its local socket), or at --xapi-url with the password file.
 */
function localXapi(opts: GlobalOptions): Promise<Xapi> {
  if (opts.xapiSession !== undefined)
    throw new UsageError(
      "--xapi-session puts the XAPI session id on the command line, where every user of this host can read it (/proc/PID/cmdline); give it on stdin with --xapi-session-file - (or in a file only root reads)",
    );
  const url = opts.xapiUrl ?? `unix:${XAPI_SOCKET}`;
  const user = opts.xapiUser ?? "root";
  const trust = xapiTrust("--xapi", opts.xapiCa, opts.xapiFingerprint, opts.xapiInsecureHttp);
  const sessionId = opts.xapiSessionFile ? readSessionFile(opts.xapiSessionFile) : undefined;
  const password =
    sessionId || url.startsWith("unix:")
      ? ""
      : readSecretFile(opts.xapiPasswordFile ?? "/etc/xenroam/xapi.password");
  return connectXapi(url, user, password, { ...(sessionId ? { sessionId } : {}), trust });
}

/** The other pool's master for a cross-pool migration, checked before anything of the migration starts. */
function remoteXapi(opts: GlobalOptions, url: string): () => Promise<Xapi> {
  const trust = xapiTrust(
    "--xapi-remote",
    opts.xapiRemoteCa,
    opts.xapiRemoteFingerprint,
    opts.xapiInsecureHttp,
  );
  try {
    if (xapiEndpoint(url, trust).kind === "unix")
      throw new XapiTrustError(`--xapi-remote is the other pool's master (https://HOST), not a local socket`);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const passwordFile = opts.xapiRemotePasswordFile ?? "/etc/xenroam/xapi-remote.password";
  return () => connectXapi(url, opts.xapiRemoteUser ?? "root", readSecretFile(passwordFile), { trust });
}

/**
 * Runs `fn` with an engine for this host, after the engine has undone what a crash left behind (reconcile;
 * each repair logged, and handed to `fn` for `status` to show).
 */
async function withEngine<T>(
  opts: GlobalOptions,
  fn: (engine: Engine, repairs: readonly Repair[]) => Promise<T>,
): Promise<T> {
  const closers: Array<() => Promise<void>> = [];
  try {
    return await withEngineInner(opts, fn, closers);
  } finally {
    for (const c of closers) await c().catch(() => {});
  }
}

async function withEngineInner<T>(
  opts: GlobalOptions,
  fn: (engine: Engine, repairs: readonly Repair[]) => Promise<T>,
  closers: Array<() => Promise<void>>,
): Promise<T> {
  let { host, sites, stateDir, xenstore } = opts;
  // The control server the engine relays guests' activations to (mobility layer).
  let relayTo: { url: string; tokenFile?: string; caFile?: string } | undefined = opts.control
    ? {
        url: opts.control,
        ...(opts.controlTokenFile ? { tokenFile: opts.controlTokenFile } : {}),
        ...(opts.controlCa ? { caFile: opts.controlCa } : {}),
      }
    : undefined;
  let channelDir: string = CHANNEL_DIR.xl;
  let toolstack: Toolstack;
  let bridges = { real: "xenbr0", parking: "xrpark0" };
  let staging: StagingNetwork | undefined;
  if (opts.toolstack === "lab" || opts.lab) {
    const labDir = opts.lab ?? "/run/xenroam-lab/xr";
    // The lab is loaded only for the lab: a Dom0 runs xenroam without any of it.
    const {
      controlUrl,
      FILES: labFiles,
      hostTokenFile,
      inNetns,
      LabToolstack,
      netnsName,
      readState: readLabState,
    } = await import("@xenroam/lab");
    const lab = readLabState(labDir);
    if (!lab) throw new UsageError(`no lab state in ${labDir}; start one with: xenroam-lab up`);
    // The lab host whose namespace this runs in (xenroam-lab exec HOST -- xenroam …); else the first VM's.
    host ??=
      lab.topology.hosts.find((h) => inNetns(netnsName(lab.topology, h.name)))?.name ??
      (JSON.parse(readFileSync(join(labDir, "vm.json"), "utf8")) as { host: string }).host;
    sites ??= join(labDir, "sites.json");
    stateDir ??= join(labDir, `host-${host}`);
    xenstore ??= join(labDir, `xs-${host}.sock`);
    const labToolstack = new LabToolstack(labDir, lab.topology);
    closers.push(() => labToolstack.close());
    toolstack = labToolstack;
    bridges = lab.topology.bridges;
    // A lab with the mobility layer provisions each host a token: its xenroam relays at the pause, to the
    // control server whose certificate the lab's CA signed.
    const m = lab.topology.mobility;
    const token = join(labDir, hostTokenFile(host));
    if (m && existsSync(token)) {
      relayTo ??= { url: controlUrl(lab.topology, m), tokenFile: token, caFile: join(labDir, labFiles.ca) };
    }
  } else if (opts.toolstack === "xl") {
    stateDir ??= "/run/xenroam";
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    toolstack = new XlToolstack({
      configPath: opts.xlConfig ?? XL_DEFAULTS.configPath,
      transport: opts.transport ?? XL_DEFAULTS.transport,
      remoteXenroam: opts.remoteXenroam ?? XL_DEFAULTS.remoteXenroam,
      stateDir,
      carrierHold: opts.carrierHold,
      announce: opts.announce,
      yieldCpu,
      ...(opts.control ? { relayControl: opts.control } : {}),
      watchSuspend: async (vm, onSuspend) => {
        const c = await XenstoreClient.connect(xenstore);
        try {
          const stop = await watchSuspend(c, vm, onSuspend);
          return async () => {
            await stop();
            c.close();
          };
        } catch (err) {
          c.close();
          throw err;
        }
      },
      log: makeLog(opts.logJson === true),
    });
    bridges = { real: opts.bridge ?? "xenbr0", parking: opts.parkingBridge ?? "xrpark0" };
  } else {
    const local = await localXapi(opts);
    closers.push(() => local.close());
    toolstack = new XapiToolstack({
      local,
      ...(opts.xapiRemote ? { remote: remoteXapi(opts, opts.xapiRemote) } : {}),
    });
    bridges = { real: opts.bridge ?? "xenbr0", parking: opts.parkingBridge ?? "xrpark0" };
    channelDir = CHANNEL_DIR.xapi;
    // No rtnetlink on a XAPI host: XAPI attaches the VIF to a staging network; Dom0 commands do the rest.
    host ??= hostname();
    staging = new XapiStaging({ xapi: local, host, parking: bridges.parking, dom0: createDom0Net() });
  }
  host ??= hostname();
  stateDir ??= "/run/xenroam";
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  if (opts.control && opts.sites) throw new UsageError("give either --sites or --control, not both");
  const siteDir = opts.control
    ? await sitesFromControl(opts.control, opts.controlTokenFile, opts.controlCa)
    : loadSites(sites ?? "/etc/xenroam/sites.json");
  const xs = await XenstoreClient.connect(xenstore);
  /** Connections the channel opened again after xenstored dropped one (closed with the first). */
  const reopened: XenstoreClient[] = [];
  // xenstored may be restarting: tried for up to 5 s.
  const reconnect = async () => {
    const deadline = Date.now() + 5000;
    for (;;) {
      try {
        const again = await XenstoreClient.connect(xenstore);
        reopened.push(again);
        return again;
      } catch (err) {
        if (Date.now() > deadline) throw err;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  };
  const netlink = staging ? undefined : createNetlink();
  try {
    // Between xenroam processes on this host: one operation per VM, one per site's staging, one state update.
    const locks = createLocks(stateDir);
    const engine = new Engine({
      host,
      bridges,
      staging: staging ?? new LinuxStaging(netlink as Netlink, bridges.parking),
      radvd: createRadvdControl(stateDir),
      channel: createDom0Channel(xs, channelDir, reconnect),
      toolstack,
      sites: siteDir,
      state: createStateStore(stateDir, locks),
      locks,
      log: makeLog(opts.logJson === true),
      now: () => Date.now(),
      ...(opts.metricsTextfile ? { metrics: createTextfileMetrics(opts.metricsTextfile) } : {}),
      ...(relayTo
        ? {
            control: controlClient(
              relayTo.url,
              relayTo.tokenFile,
              relayTo.caFile,
              RELAY_TIMEOUT_MS,
              makeLog(opts.logJson === true),
            ),
          }
        : {}),
    });
    return await fn(engine, await engine.reconcile());
  } finally {
    for (const c of reopened) c.close();
    xs.close();
    netlink?.close();
  }
}

function printReport(r: MigrationReport): void {
  console.log(
    `migration ${r.migrationId}: ${r.vm} ${r.from} -> ${r.to} (${r.method}${r.moa ? `, MoA ${r.moa}` : ""}), now domid ${r.domid}`,
  );
  if (r.fallback) console.log(`  fell back to a plain migration: ${r.fallback}`);
  for (const m of r.timeline) console.log(`  ${String(m.atMs).padStart(7)} ms  ${m.phase}`);
  if (r.arrival?.length) {
    console.log(
      `  at the destination, from the domain complete and paused: ${r.arrival.map((m) => `${m.phase} ${m.atMs} ms`).join(", ")}`,
    );
  }
}

const program = new Command("xenroam")
  .description(
    "Live-migrate Xen VMs across IPv6 subnets with the downtime of a same-subnet migration. prepare: stage the destination gateway on a bridge and have the guest take its destination address (MoA); migrate: prepare, migrate with the vif attachments swapped, clean up; abort: undo a prepare.",
  )
  .option("--host <name>", "this host's name in the sites file (default: hostname)")
  .addOption(
    new Option("--sites <file>", "sites file (default: /etc/xenroam/sites.json)").env("XENROAM_SITES"),
  )
  .option(
    "--control <url>",
    "read the sites from this control server instead of a file (and relay guests' activations there); replicas of one: repeat --control or separate the URLs with commas, and a call one cannot answer goes to the next",
    (url: string, prev?: string) => (prev ? `${prev},${url}` : url),
  )
  .option("--control-token-file <file>", "this host's control token (default: /etc/xenroam/host.token)")
  .option(
    "--control-ca <file>",
    `the CA certificate (PEM) an https:// control server must chain to (default: ${CONTROL_CA} if it exists, else the system's CAs)`,
  )
  .addOption(
    new Option("--state-dir <dir>", "where xenroam keeps host state (default: /run/xenroam)").env(
      "XENROAM_STATE_DIR",
    ),
  )
  .addOption(
    new Option("--xenstore <path>", "xenstored socket (default: the usual Dom0 socket)").env(
      "XENROAM_XENSTORE",
    ),
  )
  .addOption(
    new Option(
      "--metrics-textfile <dir>",
      "after each migration, write its phases and outcome for node_exporter's textfile collector into DIR (Debian's: /var/lib/prometheus/node-exporter; default: off)",
    ).env("XENROAM_METRICS_TEXTFILE"),
  )
  .addOption(
    new Option("--toolstack <name>", "which toolstack drives migrations")
      .choices(["xl", "xapi", "lab"])
      .default("xl"),
  )
  .option("--lab <dir>", "drive the namespace lab whose state is in DIR (implies --toolstack lab)")
  .option("--xl-config <path>", `xl: the VM's xl.cfg; {vm} is its name (default: ${XL_DEFAULTS.configPath})`)
  .option(
    "--transport <command>",
    `xl: how to reach the destination's xenroam receive; {host} is the destination (default: "${XL_DEFAULTS.transport}")`,
  )
  .option("--remote-xenroam <command>", "xl: the xenroam command on the destination (default: xenroam)")
  .option(
    "--no-carrier-hold",
    "xl: do not keep the old primary's frontend from connecting at the destination until the guest has switched (for guest kernels without the XSA-465 fix, before Linux 6.1.123 in Debian 12)",
  )
  .option(
    "--no-announce",
    "xl: the destination Dom0 does not announce the guest's new address to the site's router before the guest resumes (an unsolicited neighbour advertisement with the guest's MAC; turn it off where the LAN drops those, e.g. ND inspection)",
  )
  .addOption(
    new Option(
      "--xapi-url <url>",
      `xapi: this pool's XAPI: unix:${XAPI_SOCKET} (the default: xapi's own socket in Dom0, root without a password), https://MASTER (its certificate checked), or http:// on this host`,
    ).env("XENROAM_XAPI_URL"),
  )
  .option("--xapi-user <name>", "xapi: user (default: root)")
  .option(
    "--xapi-password-file <file>",
    "xapi: password file for an https:// --xapi-url (default: /etc/xenroam/xapi.password)",
  )
  .option(
    "--xapi-ca <file>",
    "xapi: PEM certificate(s) this pool's https:// XAPI must chain to, its name in the URL checked (default: the system's CAs)",
  )
  .option(
    "--xapi-fingerprint <sha256>",
    "xapi: pin this pool's XAPI by its certificate's SHA-256 fingerprint (repeatable: each host that may be master)",
    collect,
    [],
  )
  .option(
    "--xapi-session-file <file>",
    "xapi: an existing session id in FILE, - for stdin (the host plugin passes XAPI's so; never on a command line)",
  )
  .addOption(new Option("--xapi-session <ref>").hideHelp())
  .option(
    "--xapi-remote <url>",
    "xapi: the destination pool's master (https://HOST), for a cross-pool migration",
  )
  .option("--xapi-remote-user <name>", "xapi: user on the destination pool (default: root)")
  .option(
    "--xapi-remote-password-file <file>",
    "xapi: its password file (default: /etc/xenroam/xapi-remote.password)",
  )
  .option(
    "--xapi-remote-ca <file>",
    "xapi: PEM certificate(s) the destination pool's XAPI must chain to (default: the system's CAs)",
  )
  .option(
    "--xapi-remote-fingerprint <sha256>",
    "xapi: pin the destination pool's XAPI by its certificate's SHA-256 fingerprint (repeatable)",
    collect,
    [],
  )
  .option(
    "--xapi-insecure-http",
    "xapi: allow http:// to another host's XAPI (the password in clear, the peer unchecked): for a lab only",
  )
  .option("--bridge <name>", "the real bridge the primary vif uses (default: xenbr0)")
  .option("--parking-bridge <name>", "the bridge the secondary vif waits on (default: xrpark0)")
  .option("--log-json", "log JSON lines to stderr")
  .showHelpAfterError("(run with --help for usage)")
  .addHelpText(
    "after",
    [
      "",
      "Examples (xl hosts, as root on the source Dom0):",
      "  xenroam migrate web1 hostb                 (xl migrate -C <swapped config> over ssh to xenroam receive)",
      "  xenroam prepare web1 --to hostb            (step 1 alone; a later migrate reuses it)",
      "  xenroam evacuate hosta --to b --parallel 4 (every VM off hosta to site b's hosts; a table at the end)",
      "  xenroam --control https://[2001:db8:c::1]:7360,https://[2001:db8:c::2]:7360 migrate web1 hostb",
      "                                             (sites and relays from two control server replicas)",
      "  In xl.cfg, two vifs: vif = [ 'mac=00:16:3e:00:00:10,bridge=xenbr0', 'mac=00:16:3e:00:01:10,bridge=xrpark0' ]",
      "",
      "Examples (in the lab):",
      "  xenroam-lab exec hosta -- xenroam --lab /run/xenroam-lab/xr migrate vm hostb",
      "  xenroam --lab /run/xenroam-lab/xr prepare vm --to hostb       (step 1 alone)",
      "  xenroam --lab /run/xenroam-lab/xr abort vm                    (undo it)",
      "",
    ].join("\n"),
  );

program
  .command("prepare")
  .description(
    "step 1: stage the destination's gateway and wait for the guest to take its MoA; several VMs are prepared at once, in this one process",
  )
  .argument("<vm...>", "the VM(s), by their toolstack names")
  .requiredOption("--to <host>", "destination host")
  .option("--timeout <ms>", "how long each guest may take", positiveInt, 8000)
  .option("--json", "print each VM's outcome and time, and this process's peak RSS, as JSON")
  .action(async (vms: string[], o: { to: string; timeout: number; json?: boolean }) => {
    const unique = [...new Set(vms)];
    if (unique.length === 1 && !o.json) {
      const vm = unique[0] as string;
      const r = await withEngine(program.opts<GlobalOptions>(), (e) =>
        e.prepare(vm, o.to, { timeoutMs: o.timeout }),
      );
      console.log(
        r.kind === "same-site"
          ? `${o.to} is in the same site (${r.site}); nothing to prepare`
          : `${vm} prepared for site ${r.site}: MoA ${r.moa} on its vif ${r.secondary.ifname}${r.reused ? " (reused)" : ""}; migration id ${r.migrationId}`,
      );
      return;
    }
    const results = await withEngine(program.opts<GlobalOptions>(), (e) =>
      Promise.all(
        unique.map(async (vm) => {
          const begun = Date.now();
          try {
            const r = await e.prepare(vm, o.to, { timeoutMs: o.timeout });
            return { vm, ok: true as const, result: r, ms: Date.now() - begun };
          } catch (err) {
            return { vm, ok: false as const, error: (err as Error).message, ms: Date.now() - begun };
          }
        }),
      ),
    );
    if (o.json) {
      console.log(
        JSON.stringify(
          {
            to: o.to,
            vms: results.map((r) =>
              r.ok
                ? {
                    vm: r.vm,
                    kind: r.result.kind,
                    ms: r.ms,
                    ...(r.result.kind === "prepared"
                      ? { moa: r.result.moa, migrationId: r.result.migrationId, reused: r.result.reused }
                      : {}),
                  }
                : { vm: r.vm, kind: "failed", ms: r.ms, error: r.error },
            ),
            // getrusage's ru_maxrss (KiB on Linux): this process's peak resident set.
            peakRssBytes: process.resourceUsage().maxRSS * 1024,
          },
          null,
          2,
        ),
      );
    } else {
      for (const r of results) {
        if (!r.ok) console.log(`${r.vm}: not prepared: ${r.error}`);
        else if (r.result.kind === "same-site")
          console.log(`${r.vm}: ${o.to} is in the same site (${r.result.site}); nothing to prepare`);
        else
          console.log(
            `${r.vm} prepared for site ${r.result.site}: MoA ${r.result.moa} on its vif ${r.result.secondary.ifname}${r.result.reused ? " (reused)" : ""}; migration id ${r.result.migrationId}`,
          );
      }
    }
    if (results.some((r) => !r.ok)) process.exitCode = 1;
  });

program
  .command("migrate")
  .description("prepare (or reuse a prepare), migrate with the vifs swapped, clean up the source")
  .argument("<vm>", "the VM, by its toolstack name")
  .argument("<host>", "destination host")
  .option("--timeout <ms>", "how long the guest may take to prepare", positiveInt, 8000)
  .option("--no-method", "a plain migration, without staging (the baseline)")
  .option("--json", "print the report as JSON")
  .action(async (vm: string, host: string, o: { timeout: number; method: boolean; json?: boolean }) => {
    const r = await withEngine(program.opts<GlobalOptions>(), (e) =>
      e.migrate(vm, host, { timeoutMs: o.timeout, method: o.method }),
    );
    if (o.json) console.log(JSON.stringify(r));
    else printReport(r);
  });

program
  .command("evacuate")
  .description(
    "move every VM this host runs to a site's hosts, with the method, a few at a time; progress per VM and a table at the end (VM, destination, method or fallback and why, paused time). A VM that cannot go stays here and is reported; exit 1 then",
  )
  .argument("<host>", "this host, the one to empty (evacuate runs on it, as migrate does)")
  .requiredOption("--to <site>", "the destination site, by its name in the sites file")
  .option("--hosts <list>", "comma-separated hosts of that site to deal the VMs over (default: all of them)")
  .option("--parallel <n>", "how many migrations at once", positiveInt, DEFAULT_EVACUATE_PARALLEL)
  .option("--timeout <ms>", "how long each guest may take to prepare", positiveInt, 8000)
  .option("--no-method", "plain migrations, without staging (the baseline)")
  .option("--json", "print the summary as JSON (progress still goes to stderr)")
  .action(
    async (
      target: string,
      o: { to: string; hosts?: string; parallel: number; timeout: number; method: boolean; json?: boolean },
    ) => {
      const hosts = o.hosts
        ?.split(",")
        .map((h) => h.trim())
        .filter((h) => h !== "");
      if (o.hosts !== undefined && (!hosts || hosts.length === 0))
        throw new UsageError(
          "--hosts: give one or more host names, comma-separated (e.g. --hosts hostb,hostc)",
        );
      const summary = await withEngine(program.opts<GlobalOptions>(), (e) => {
        if (target !== e.host)
          throw new UsageError(
            `this is ${e.host}, not ${target}: xenroam evacuate runs on the host it empties (or give --host ${target} if this is it)`,
          );
        return e.evacuate({
          site: o.to,
          ...(hosts ? { hosts } : {}),
          parallel: o.parallel,
          timeoutMs: o.timeout,
          method: o.method,
          onProgress: (line) => process.stderr.write(`xenroam: ${line}\n`),
        });
      });
      if (o.json) console.log(JSON.stringify(summary, null, 2));
      else console.log(renderEvacuation(summary));
      const failed = summary.rows.filter((r) => r.outcome === "failed");
      if (failed.length > 0) {
        process.stderr.write(
          `xenroam: ${failed.length} of ${summary.rows.length} VMs could not go: ${failed.map((r) => r.vm).join(", ")} (see the table)\n`,
        );
        process.exitCode = 1;
      }
    },
  );

program
  .command("abort")
  .description("undo a prepare: the guest is told, the secondary is parked, staging is released")
  .argument("<vm...>", "the VM(s), by their toolstack names")
  .action(async (vms: string[]) => {
    const done = await withEngine(program.opts<GlobalOptions>(), (e) =>
      Promise.all([...new Set(vms)].map(async (vm) => [vm, await e.abort(vm)] as const)),
    );
    for (const [vm, undone] of done)
      console.log(undone ? `${vm}: preparation undone` : `${vm}: nothing prepared; nothing to do`);
  });

program
  .command("status")
  .description("what this host has prepared: staging bridges, their users, and each VM's phase")
  .argument("[vm]", "only this VM")
  .option("--json", "print JSON")
  .action(async (vm: string | undefined, o: { json?: boolean }) => {
    const { repairs, ...s } = await withEngine(program.opts<GlobalOptions>(), async (e, repairs) => ({
      repairs,
      ...(await e.status()),
    }));
    const vms = Object.entries(s.vms).filter(([name]) => vm === undefined || name === vm);
    const staging = Object.entries(s.staging).filter(([, st]) => vm === undefined || st.users.includes(vm));
    if (o.json) {
      console.log(
        JSON.stringify(
          { staging: Object.fromEntries(staging), vms: Object.fromEntries(vms), repaired: repairs },
          null,
          2,
        ),
      );
      return;
    }
    // What a crashed xenroam had left, undone just now (reconcile).
    for (const r of repairs) console.log(`repaired: ${r.repaired} (${r.why})`);
    if (vm !== undefined && vms.length === 0) console.log(`${vm}: idle (nothing prepared on this host)`);
    else if (vms.length === 0 && staging.length === 0) console.log("nothing prepared on this host");
    for (const [site, st] of staging) {
      console.log(
        `staging ${st.bridge} (site ${site}): users ${st.users.join(", ") || "none"}, radvd ${st.radvd ? `pid ${st.radvd.pid} (${s.radvdRunning[site] ? "running" : "NOT RUNNING: the next prepare restarts it"})` : "-"}`,
      );
    }
    for (const [name, v] of vms) {
      console.log(
        `${name}: ${v.phase} for ${v.destination} (site ${v.site}), migration ${v.migrationId}${v.moa ? `, MoA ${v.moa}` : ""}`,
      );
    }
  });

program
  .command("doctor")
  .description(
    "check what this Dom0 needs for xenroam (inventory through systeminformation) and say how to fix each",
  )
  .option("--json", "print JSON")
  .action(async (o: { json?: boolean }) => {
    const g = program.opts<GlobalOptions>();
    const sitesFile = g.control ? undefined : (g.sites ?? "/etc/xenroam/sites.json");
    const xapiSocket = g.xapiUrl?.startsWith("unix:") ? g.xapiUrl.slice("unix:".length) : undefined;
    const facts = await gatherFacts(sitesFile, xapiSocket);
    const results = checks(facts, {
      toolstack: g.toolstack === "xapi" ? "xapi" : "xl",
      bridge: g.bridge ?? "xenbr0",
      parkingBridge: g.parkingBridge ?? "xrpark0",
      ...(sitesFile ? { sitesFile } : {}),
      ...(g.xapiUrl ? { xapiUrl: g.xapiUrl } : {}),
    });
    const failed = results.filter((r) => !r.ok && r.essential);
    if (o.json) console.log(JSON.stringify({ os: facts.os, checks: results }, null, 2));
    else {
      console.log(`${facts.os.distro} ${facts.os.release}, kernel ${facts.os.kernel}`);
      for (const r of results) {
        console.log(`${r.ok ? "ok  " : r.essential ? "FAIL" : "warn"}  ${r.name.padEnd(18)} ${r.detail}`);
        if (!r.ok && r.fix) console.log(`      fix: ${r.fix}`);
      }
      console.log(
        failed.length === 0 ? "\nthis host is ready for xenroam" : `\n${failed.length} problem(s) to fix`,
      );
    }
    process.exitCode = failed.length === 0 ? 0 : 1;
  });

program
  .command("install-xapi")
  .description(
    "install the XAPI hooks (vm-pre-migrate, vm-post-migrate, vif-hotplug) and the host plugin (idempotent)",
  )
  .option("--root <dir>", "install under DIR instead of / (for packaging)", "/")
  .action((o: { root: string }) => {
    for (const f of installXapi(o.root)) console.log(`installed ${f}`);
    console.log("check with: xe host-call-plugin host-uuid=<this host> plugin=xenroam fn=status");
  });

program
  .command("xapi-parking")
  .description(
    "XAPI: make this pool's parking network (an internal network on the --parking-bridge, xrpark0 by default, where each VM's second VIF waits between migrations) if it is missing; print its uuid (idempotent; once per pool)",
  )
  .action(async () => {
    const g = program.opts<GlobalOptions>();
    const x = await localXapi(g);
    try {
      const { uuid, created } = await ensureParkingNetwork(x, g.parkingBridge ?? "xrpark0");
      console.log(
        `${created ? "created" : "found"} the parking network ${uuid} (bridge ${g.parkingBridge ?? "xrpark0"}); give each VM a second VIF on it:\n  xe vif-create vm-uuid=<vm> network-uuid=${uuid} device=1 mac=<mac>`,
      );
    } finally {
      await x.close();
    }
  });

program
  .command("receive")
  .description(
    "xl destination side, run by the source's `xl migrate` through the transport: xl migrate-receive, tell the guest it arrived, unpause",
  )
  .argument("<vm>", "the VM, by its toolstack name")
  .requiredOption("--migration <id>", "the migration id (for the logs)")
  .option(
    "--writes <base64url-json>",
    "keys to write into the guest's xenroam directory before unpause",
    "e30",
  )
  .option("--hold <devids>", "vif devids whose frontends wait until the guest has switched (comma-separated)")
  .option(
    "--relay <base64url-json>",
    "mobility: the control server and the guest's activation to relay before unpause",
  )
  .option(
    "--announce <moa/mac/bridge>",
    "announce the guest's new primary to the site's router once the domain is ready: its address, its MAC and the bridge its vif lands on, e.g. 2001:db8:b::11/00:16:3e:00:00:11/xenbr0",
  )
  .action(
    async (
      vm: string,
      o: { migration: string; writes: string; hold?: string; relay?: string; announce?: string },
    ) => {
      const g = program.opts<GlobalOptions>();
      const holdDevids = o.hold === undefined ? [] : o.hold.split(",").map(Number);
      if (holdDevids.some((d) => !Number.isInteger(d) || d < 0 || d > 255))
        throw new UsageError(`--hold takes vif devids such as 0 or 0,2; got "${o.hold ?? ""}"`);
      let announcement: LocatorAnnouncement | undefined;
      if (o.announce !== undefined) {
        const [moa = "", mac = "", bridge = "", ...rest] = o.announce.split("/");
        if (rest.length > 0 || !isIpv6(moa) || !isMac(mac) || !/^[A-Za-z0-9_.-]{1,15}$/.test(bridge))
          throw new UsageError(
            `--announce takes the new primary's address, MAC and bridge, such as 2001:db8:b::11/00:16:3e:00:00:11/xenbr0; got "${o.announce}"`,
          );
        announcement = { moa, mac, bridge };
      }
      let writes: Record<string, string>;
      try {
        writes = JSON.parse(Buffer.from(o.writes, "base64url").toString("utf8")) as Record<string, string>;
        if (
          typeof writes !== "object" ||
          writes === null ||
          Object.values(writes).some((v) => typeof v !== "string")
        )
          throw new Error("not an object of strings");
      } catch (err) {
        throw new UsageError(`--writes: ${(err as Error).message}`);
      }
      // stdout carries the migration stream: everything xenroam says goes to stderr.
      const log = makeLog(true);
      const relay = o.relay && receiveRelay(o.relay, g, (e, f) => log(e, { migration: o.migration, ...f }));
      const xs = await XenstoreClient.connect(g.xenstore);
      const netlink = createNetlink();
      const releaser =
        holdDevids.length > 0
          ? startHoldReleaser(g, { vm, devids: holdDevids, migration: o.migration }, log)
          : undefined;
      try {
        await xlReceive({
          vm,
          writes,
          ...(relay ? { relay } : {}),
          log: (event, fields) => log(event, { migration: o.migration, ...fields }),
          write: (domid, key, value) => xs.write(`/local/domain/${domid}/${CHANNEL_DIR.xl}/${key}`, value),
          findDomid: (names) => domidByName(xs, names),
          hasName: async (domid, name) => (await xs.tryRead(`/local/domain/${domid}/name`)) === name,
          describe: (domid) => xenstoreDomain(xs, vm, domid),
          background: yieldCpu,
          ...(announcement
            ? {
                announce: {
                  prepare: () => prepareAnnouncement(netlink, announcement),
                  send: () => sendAnnouncement(netlink, announcement),
                  withdraw: () => withdrawAnnouncement(netlink, announcement),
                },
              }
            : {}),
          ...(holdDevids.length > 0
            ? {
                hold: {
                  devids: holdDevids,
                  engage: (domid, devids) =>
                    engageHold(xs, domid, devids, (event, fields) =>
                      log(event, { migration: o.migration, ...fields }),
                    ),
                  release: (domid, devids) => releaser?.release(domid, devids),
                  hotplugged: (domid, devids, signal) => awaitHotplugged(xs, domid, devids, signal),
                },
              }
            : {}),
          ensureBridges: async () => {
            const parking = g.parkingBridge ?? "xrpark0";
            const link = await netlink.link(parking);
            if (!link) {
              await netlink.createBridge(parking);
              log("bridge_created", { migration: o.migration, bridge: parking });
            }
            if (!link?.up) await netlink.setLink(parking, { up: true });
          },
        });
      } finally {
        releaser?.cancel();
        xs.close();
        netlink.close();
      }
    },
  );

program
  .command("hold-release", { hidden: true })
  .description("xl destination: let held frontends connect once the guest has switched (started by receive)")
  .argument("<vm>")
  .option("--domid <n>", "the restored domain", positiveInt)
  .option(
    "--domid-from-stdin",
    "wait for '<domid> <devids>' on stdin (receive starts it ahead); EOF: nothing held",
  )
  .requiredOption("--devids <list>", "the held vif devids")
  .requiredOption("--migration <id>", "the migration whose switch ends the hold")
  .option("--timeout-ms <ms>", "release anyway after this long", positiveInt, HOLD_TIMEOUT_MS)
  .action(
    async (
      vm: string,
      o: { domid?: number; domidFromStdin?: boolean; devids: string; migration: string; timeoutMs: number },
    ) => {
      const g = program.opts<GlobalOptions>();
      const log = makeLog(true);
      let devids = o.devids.split(",").map(Number);
      let domid = o.domid;
      if (o.domidFromStdin) {
        const chunks: Buffer[] = [];
        for await (const c of process.stdin) chunks.push(c as Buffer);
        const m = /^(\d+) ([\d,]+)\n?$/.exec(Buffer.concat(chunks).toString("utf8"));
        if (!m) {
          log("hold_not_engaged", { migration: o.migration, vm });
          return;
        }
        domid = Number(m[1]);
        devids = (m[2] ?? "").split(",").map(Number);
      }
      if (domid === undefined) throw new UsageError("give --domid N or --domid-from-stdin");
      // From here on it only waits, and the moment it starts waiting is the guest's resume, when Dom0's CPU is
      // the new primary's (xenstored and netback connecting its frontend): the release is never urgent.
      try {
        setPriority(19);
      } catch {
        // not allowed here: wait at the same priority
      }
      const fields = { migration: o.migration, vm, domid, devids };
      const xs = await XenstoreClient.connect(g.xenstore);
      const started = Date.now();
      try {
        const path = `/local/domain/${domid}/${CHANNEL_DIR.xl}/${KEYS.status}`;
        const alive = `/local/domain/${domid}/name`;
        const why = await awaitSwitch(xs, path, o.migration, o.timeoutMs, alive).catch((err: unknown) => {
          log("hold_watch_failed", { ...fields, error: String(err) });
          return "error" as const;
        });
        await releaseHold(xs, domid, devids, (event, f) => log(event, { ...fields, ...f }));
        log("hold_released", { ...fields, why, heldMs: Date.now() - started });
      } finally {
        xs.close();
      }
    },
  );

program.parseAsync().catch((err: unknown) => {
  const known = [
    UsageError,
    PluginError,
    BusyError,
    PrepareError,
    SitesError,
    ControlClientError,
    XlError,
    XlConfigError,
    XapiAdapterError,
    XapiTrustError,
    InstallError,
    Dom0NetError,
  ].some((k) => err instanceof k);
  const message = err instanceof Error ? err.message : String(err);
  const debug = process.env.XENROAM_DEBUG === "1" && err instanceof Error ? `\n${err.stack ?? ""}` : "";
  process.stderr.write(
    `xenroam: ${known ? message : `${message} (set XENROAM_DEBUG=1 for a stack trace)`}${debug}\n`,
  );
  process.exitCode = 1;
});

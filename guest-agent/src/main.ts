#!/usr/bin/env node
// xenroam-agent: the DomU daemon. Wires xenstore (the guest channel, reconnecting across migrations) and
// rtnetlink to the agent core; logs JSON lines; stops cleanly on SIGTERM.

import { createPublicKey, type KeyObject } from "node:crypto";
import { createSocket } from "node:dgram";
import { mkdirSync, readFileSync, readlinkSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { Command, InvalidArgumentError, Option } from "commander";
import { canonicalIpv6 } from "@xenroam/core";
import { ControlClient, ControlClientError, parseControlUrls, type SignedBinding } from "@xenroam/control";
import { createNft } from "@xenroam/mobility";
import { createNetlink } from "@xenroam/netlink";
import { CHANNEL_DIR, type Channel } from "@xenroam/protocol";
import { GUEST_DEVICE, isXenstoreError, XenstoreClient } from "@xenroam/xenstore";
import { Correspondent } from "./correspondent.js";
import { Agent, type GuestChannel, type Log } from "./core.js";
import { SourceLimiter } from "./gate.js";
import { createKicker } from "./kick.js";
import { MobileNode, type MobileState, type StateFile } from "./mobile.js";
import { coexistenceProblem, vifsOf } from "./netmanagers.js";
import { liveInterfaces, networkSetupProgram, rootView, SetupError } from "./network-setup.js";

/** How often a guest with a HoA checks, besides address events, whether it has moved without the method. */
const ROAM_CHECK_MS = 5000;

/** The UDP port correspondents receive signed bindings on. */
export const BINDING_PORT = 7361;
const MAX_DATAGRAM = 2048;
/** How often refused and dropped datagrams are logged, as counts (the first refusal of each window in full). */
const REFUSAL_LOG_MS = 10_000;

/**
 * Events that also report the agent's memory: its resident set now and the most it ever had (the kernel's
 * high-water mark, getrusage's ru_maxrss), in MB. `started` is the idle figure; `prepared` and `switched` the
 * ones a migration makes; `npm run test:xen` prints them.
 */
const MEMORY_EVENTS = new Set(["started", "prepared", "switched", "stopping"]);
const mb = (bytes: number) => Math.round((bytes / 2 ** 20) * 10) / 10;

const log: Log = (event, fields = {}) =>
  process.stdout.write(
    `${JSON.stringify({
      ts: new Date().toISOString(),
      component: "xenroam-agent",
      event,
      ...fields,
      ...(MEMORY_EVENTS.has(event)
        ? { rssMb: mb(process.memoryUsage.rss()), maxRssMb: mb(process.resourceUsage().maxRSS * 1024) }
        : {}),
    })}\n`,
  );

/** The guest channel over xenstore; read/write fail while the connection is being re-established. */
class XenstoreChannel implements GuestChannel {
  client: XenstoreClient | undefined;
  constructor(private readonly dir: string) {}
  private need(): XenstoreClient {
    if (!this.client) throw new Error("xenstore is reconnecting");
    return this.client;
  }
  read(key: string): Promise<string | undefined> {
    return this.need().tryRead(`${this.dir}/${key}`);
  }
  write(key: string, value: string): Promise<void> {
    return this.need().write(`${this.dir}/${key}`, value);
  }
}

const program = new Command("xenroam-agent")
  .description(
    "The xenroam guest agent. Runs in the DomU: on a prepare request from Dom0 it brings up the secondary interface and takes its address in the destination subnet (MoA); when the destination Dom0 says the VM has arrived, it makes the secondary the primary. Talks to Dom0 only through xenstore.",
  )
  .option("--xenstore <path>", "xenbus device or xenstored socket", GUEST_DEVICE)
  .addOption(
    new Option("--channel <toolstack>", "where Dom0 writes requests").choices(["xl", "xapi"]).default("xl"),
  )
  .option("--hoa <address>", "mobility: this VM's home address (kept across migrations)", address)
  .option("--vm <name>", "mobility: this VM's name in the control server")
  .option(
    "--control <url>",
    "the control server, e.g. https://[2001:db8:c::1]:7360; replicas of one (sharing one etcd): repeat --control or separate the URLs with commas, and a call one cannot answer goes to the next",
    collectControl,
  )
  .option(
    "--control-ca <file>",
    "the CA certificate (PEM) an https:// control server's certificate must chain to; default: the system's CAs",
  )
  .option("--token-file <file>", "the token the control server issued (VM: add-vm; correspondent: add-peer)")
  .option(
    "--peer <[address]:port>",
    "mobility: a correspondent to send new bindings to directly (repeatable)",
    collectPeer,
    [],
  )
  .option(
    "--state-file <file>",
    "mobility: where the mobile node keeps its state",
    "/run/xenroam-agent/mobile.json",
  )
  .option("--correspondent", "run as a correspondent node instead (no xenstore): keep HoA maps for VMs")
  .option(
    "--public-key <file>",
    "correspondent (required): the control server's public key (PEM), copied from the server (xenroam-control init wrote it next to the signing key)",
  )
  .option("--listen <[address]:port>", "correspondent: where signed bindings arrive", `[::]:${BINDING_PORT}`)
  .addHelpText(
    "after",
    `
Commands:
  network-setup [options]   have the DomU's network manager leave the xenroam vif to the agent (see
                            xenroam-agent network-setup --help); install.sh and the Debian package run it

Examples (as root):
  In a DomU, the method only:
    xenroam-agent --channel xl
  In a DomU, with the home address kept across subnets:
    xenroam-agent --channel xl --hoa 2001:db8:f::10 --vm web1 \\
      --control https://[2001:db8:c::1]:7360 --control-ca /etc/xenroam/control-ca.pem \\
      --token-file /etc/xenroam/vm.token --peer [2001:db8:c::100]:7361
  On a correspondent (a host that talks to VMs by their home address):
    xenroam-agent --correspondent --control https://[2001:db8:c::1]:7360 \\
      --control-ca /etc/xenroam/control-ca.pem --token-file /etc/xenroam/cn.token \\
      --public-key /etc/xenroam/control.key.pub
  The same, with two control server replicas (the watch goes on at the other when one dies):
    xenroam-agent --correspondent \\
      --control https://[2001:db8:c::1]:7360,https://[2001:db8:c::2]:7360 \\
      --control-ca /etc/xenroam/control-ca.pem --token-file /etc/xenroam/cn.token \\
      --public-key /etc/xenroam/control.key.pub
`,
  );

function address(v: string): string {
  try {
    return canonicalIpv6(v);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

interface Endpoint {
  address: string;
  port: number;
}

function endpoint(v: string): Endpoint {
  const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(v);
  const port = Number(m?.[2]);
  if (!m || !(port > 0 && port < 65536)) {
    throw new InvalidArgumentError(
      `expected [IPV6]:PORT, e.g. [2001:db8:c::100]:${BINDING_PORT}; got "${v}"`,
    );
  }
  return { address: address(m[1] as string), port };
}

function collectPeer(v: string, prev: Endpoint[] = []): Endpoint[] {
  return [...prev, endpoint(v)];
}

/** --control URL[,URL…], repeatable: every control server replica, each URL checked. */
function collectControl(v: string, prev: string[] = []): string[] {
  try {
    return [...new Set([...prev, ...parseControlUrls(v)])];
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

interface Options {
  xenstore: string;
  channel: Channel;
  hoa?: string;
  vm?: string;
  /** Every replica of the control server. */
  control?: string[];
  controlCa?: string;
  tokenFile?: string;
  peer: Endpoint[];
  stateFile: string;
  correspondent?: boolean;
  publicKey?: string;
  listen: string;
}

function fail(message: string): never {
  program.error(message, { exitCode: 2 });
  throw new Error(message); // not reached: program.error exits
}

function readToken(file: string | undefined, what: string): string {
  if (!file) fail(`--token-file is required ${what}`);
  try {
    const token = readFileSync(file, "utf8").trim();
    if (token) return token;
  } catch (err) {
    fail(`cannot read --token-file ${file}: ${(err as Error).message}`);
  }
  fail(`--token-file ${file} is empty`);
}

/** The control server's client (failing over between its replicas), with the CA it pins when one is given. */
function controlClient(opts: Options, token: string): ControlClient {
  let ca: string | undefined;
  if (opts.controlCa !== undefined) {
    try {
      ca = readFileSync(opts.controlCa, "utf8");
    } catch (err) {
      fail(`cannot read --control-ca ${opts.controlCa}: ${(err as Error).message}`);
    }
  }
  try {
    return new ControlClient(opts.control ?? [], { token, log, ...(ca === undefined ? {} : { ca }) });
  } catch (err) {
    if (err instanceof ControlClientError)
      fail(`--control ${(opts.control ?? []).join(",")}: ${err.message}`);
    throw err;
  }
}

/**
 * What the command line lacks, said before anything else (root included): a correspondent trusts only the
 * key it was given, never one fetched from the server it is to check.
 */
function usageProblem(opts: Options): string | undefined {
  if (opts.correspondent) {
    if (!opts.control) return "--correspondent needs --control URL";
    if (!opts.publicKey) {
      return "--correspondent needs --public-key FILE: the control server's public key, pinned. Copy it from the server (xenroam-control init wrote /var/lib/xenroam/control.key.pub there) to this host and pass --public-key with that file";
    }
  } else if (opts.hoa && (!opts.vm || !opts.control)) {
    return "--hoa needs --vm NAME and --control URL";
  }
  return undefined;
}

function jsonStateFile(path: string): StateFile {
  return {
    load: () => {
      try {
        return JSON.parse(readFileSync(path, "utf8")) as MobileState;
      } catch {
        return undefined;
      }
    },
    save: (state) => {
      mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
      writeFileSync(`${path}.tmp`, JSON.stringify(state), { mode: 0o600 });
      renameSync(`${path}.tmp`, path);
    },
    remove: () => rmSync(path, { force: true }),
  };
}

/** Datagrams to every peer: now, and twice more in case one is lost. */
function udpAnnouncer(peers: readonly Endpoint[]) {
  const socket = createSocket({ type: "udp6" });
  socket.on("error", (err) => log("announce_socket_error", { error: err.message }));
  socket.unref();
  const sendAll = (payload: Buffer) =>
    Promise.all(
      peers.map(
        (p) =>
          new Promise<void>((resolve) =>
            socket.send(payload, p.port, p.address, (err) => {
              if (err) log("announce_failed", { peer: p.address, error: err.message });
              resolve();
            }),
          ),
      ),
    );
  return async (b: SignedBinding) => {
    const payload = Buffer.from(JSON.stringify(b));
    await sendAll(payload);
    for (const ms of [20, 200]) setTimeout(() => void sendAll(payload), ms).unref();
  };
}

const stop = new AbortController();
/** Undone on SIGTERM before exit: the nftables table of the mobility layer. */
let cleanup: (() => Promise<void>) | undefined;

async function correspondentMain(opts: Options & { publicKey: string }): Promise<void> {
  const token = readToken(
    opts.tokenFile,
    "with --correspondent (a peer token: xenroam-control add-peer NAME)",
  );
  const client = controlClient(opts, token);
  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey(readFileSync(opts.publicKey, "utf8"));
  } catch (err) {
    fail(`--public-key ${opts.publicKey}: ${(err as Error).message}`);
  }
  const listen = endpoint(opts.listen);
  const cn = new Correspondent({
    nft: createNft(),
    watch: client,
    publicKey,
    log,
    refusalLogMs: REFUSAL_LOG_MS,
  });
  const socket = createSocket({ type: "udp6" });
  // A stranger's datagrams cost little (issue 12): a token bucket per source before anything is parsed, the
  // shape and the cheap checks before the signature (Correspondent.onSigned), refusals and drops logged as
  // counts every REFUSAL_LOG_MS. A mobile node sends each binding three times.
  const limiter = new SourceLimiter({ perSecond: 20, burst: 40, maxSources: 4096 });
  let dropped = 0;
  const counts = setInterval(() => {
    cn.flushRefusals();
    if (dropped > 0) log("datagrams_dropped", { count: dropped, why: "over 20/s from one source" });
    dropped = 0;
  }, REFUSAL_LOG_MS);
  counts.unref();
  socket.on("message", (msg, from) => {
    if (msg.length > MAX_DATAGRAM) return;
    if (!limiter.admit(from.address, Date.now())) {
      dropped++;
      return;
    }
    let b: unknown;
    try {
      b = JSON.parse(msg.toString("utf8"));
    } catch {
      b = undefined; // refused by its shape, counted with the rest
    }
    cn.onSigned(b as SignedBinding, from.address).catch((err: unknown) =>
      log("apply_failed", { error: (err as Error).message }),
    );
  });
  await new Promise<void>((resolve, reject) => {
    socket.once("error", reject);
    socket.bind(listen.port, listen.address, () => resolve());
  });
  cleanup = async () => {
    clearInterval(counts);
    socket.close();
    await cn.stop();
  };
  log("correspondent_started", { control: client.servers.join(","), listen: opts.listen, pid: process.pid });
  await cn.follow(stop.signal);
}

/** Whether this process shares init's network namespace (false when it cannot tell). */
function sameNetnsAsInit(): boolean {
  try {
    return readlinkSync("/proc/1/ns/net") === readlinkSync("/proc/self/ns/net");
  } catch {
    return false;
  }
}

async function networkSetup(): Promise<void> {
  const setup = networkSetupProgram();
  try {
    await setup.parseAsync([...process.argv.slice(0, 2), ...process.argv.slice(3)]);
  } catch (err) {
    if (!(err instanceof SetupError)) throw err;
    process.stderr.write(`xenroam-agent network-setup: ${err.message}\n`);
    process.exit(1);
  }
  process.exit(0);
}

async function main(): Promise<void> {
  if (process.argv[2] === "network-setup") return networkSetup();
  program.parse();
  const opts = program.opts<Options>();
  const usage = usageProblem(opts);
  if (usage) fail(usage);
  if (process.getuid?.() !== 0) {
    fail("xenroam-agent configures network interfaces and must run as root");
  }
  if (opts.correspondent && opts.publicKey) {
    return correspondentMain({ ...opts, publicKey: opts.publicKey });
  }
  // Beside the distribution's network manager only when it leaves a vif to the agent (netmanagers.ts). Its
  // state under /run describes the links of the namespace it runs in, init's: an agent in another network
  // namespace (the lab's VM, a container) would read another namespace's interface indexes there, so it does
  // not look — unless told to (XENROAM_AGENT_CHECK_MANAGERS=1: the lab's tests of this check, which give the
  // agent the manager's /run in a mount namespace).
  if (process.env.XENROAM_AGENT_CHECK_MANAGERS === "1" || sameNetnsAsInit()) {
    const problem = coexistenceProblem(rootView("/"), vifsOf(liveInterfaces()));
    if (problem) {
      log("refused", { reason: problem });
      fail(problem);
    }
  }
  const dir = CHANNEL_DIR[opts.channel];
  const netlink = createNetlink();
  const channel = new XenstoreChannel(dir);
  let mobile: MobileNode | undefined;
  if (opts.hoa && opts.vm && opts.control) {
    const token = readToken(opts.tokenFile, "with --hoa (the VM's token: xenroam-control add-vm)");
    mobile = new MobileNode(
      { vm: opts.vm, hoa: opts.hoa },
      {
        netlink,
        nft: createNft(),
        control: controlClient(opts, token),
        announce: udpAnnouncer(opts.peer),
        state: jsonStateFile(opts.stateFile),
        log,
      },
    );
  }
  const agent = new Agent({ netlink, channel, log, ...(mobile ? { mobility: mobile } : {}) });
  if (mobile) {
    const m = mobile;
    cleanup = () => m.stop();
    // The server may not be reachable yet (boot): the rewrite is set up first, the registration retried.
    for (let wait = 100; !stop.signal.aborted; wait = Math.min(5000, wait * 2)) {
      try {
        await m.start(() => agent.adoptPrimary());
        break;
      } catch (err) {
        log("mobility_start_failed", { error: (err as Error).message, retryMs: wait });
        await new Promise((r) => setTimeout(r, wait));
      }
    }
  }
  const kick = createKicker({
    converge: (reason) => agent.converge(reason),
    connection: () => channel.client,
    isChannelError: (err) => isXenstoreError(err),
    reopen: (client) => client.close(),
    log,
    signal: stop.signal,
  });

  // With a HoA, a move the method did not make is converged on: when an address changes (an RA made or
  // refreshed one), at start (the agent may have been down during a move), and every ROAM_CHECK_MS.
  let roamSoon: NodeJS.Timeout | undefined;
  const roam = (trigger: string) => {
    if (!mobile || roamSoon) return;
    roamSoon = setTimeout(() => {
      roamSoon = undefined;
      void agent.roam(trigger);
    }, 20);
  };
  if (mobile) {
    roam("start");
    const every = setInterval(() => roam("timer"), ROAM_CHECK_MS);
    every.unref();
    stop.signal.addEventListener(
      "abort",
      () => {
        clearInterval(every);
        clearTimeout(roamSoon);
      },
      { once: true },
    );
  }
  // A carrier change on a NIC is a hint that the VM moved: re-read the channel now. Never acted on alone.
  void (async () => {
    for await (const ev of netlink.events({ signal: stop.signal })) {
      if (ev.type === "link" && ev.action === "new" && ev.link.name !== "lo") {
        agent.linkChanged(ev.link);
        kick("carrier");
      }
      if (ev.type === "address" && ev.action === "new" && mobile?.unfamiliar(ev.address)) roam("address");
      // Events were lost (the kernel's ENOBUFS): whatever they said, re-read the channel and the addresses.
      if (ev.type === "overflow") {
        log("netlink_events_lost", {});
        kick("events-lost");
        roam("events-lost");
      }
    }
  })();

  log("started", { pid: process.pid, xenstore: opts.xenstore, dir });
  let delay = 5;
  let madeDir = false;
  while (!stop.signal.aborted) {
    let client: XenstoreClient;
    try {
      // A reply lost across a suspend costs at most this, then the kicker reopens the channel.
      client = await XenstoreClient.connect(opts.xenstore, { requestTimeoutMs: 3000 });
    } catch (err) {
      if (delay === 5 || delay >= 500)
        log("xenstore_unavailable", { error: (err as Error).message, retryMs: delay });
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(500, delay * 2);
      continue;
    }
    delay = 5;
    channel.client = client;
    stop.signal.addEventListener("abort", () => client.close(), { once: true });
    try {
      if (!madeDir) {
        await client.mkdir(dir).catch(() => {});
        madeDir = true;
      }
      // Look at once (a resume is the moment that matters), while the watch is being registered.
      kick("connected");
      const watch = await client.watch(dir, "xenroam-agent");
      log("connected", { xenstore: opts.xenstore });
      // Every watch fires once on registration, and again after a resume: each event is a reason to look.
      for await (const _ of watch) kick("xenstore");
    } catch (err) {
      if (!stop.signal.aborted) log("xenstore_lost", { error: (err as Error).message });
    } finally {
      channel.client = undefined;
      client.close();
    }
  }
}

const shutdown = (signal: string) => {
  log("stopping", { signal });
  stop.abort();
  const done = cleanup ? cleanup() : Promise.resolve();
  done
    .then(
      () => log("stopped"),
      (err: unknown) => log("cleanup_failed", { error: (err as Error).message }),
    )
    .finally(() => process.exit(0));
};
process.once("SIGTERM", () => shutdown("SIGTERM"));
process.once("SIGINT", () => shutdown("SIGINT"));

main().catch((err: unknown) => {
  log("fatal", { error: err instanceof Error ? err.message : String(err) });
  process.exit(1);
});

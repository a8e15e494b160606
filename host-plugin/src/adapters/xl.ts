// The xl adapter: the only code in xenroam that runs `xl`. Source side: `xl migrate -C <swapped config>` over
// a transport the admin chooses (ssh by default), whose far end is `xenroam receive` on the destination.
// Destination side (`receive`): `xl migrate-receive`, whose "ready" message xenroam holds back while it writes
// the arrival into the guest's xenstore (and holds the old primary, relays the guest's activation); xl then
// unpauses the domain itself, so the guest learns it has arrived first thing after resume.

import { spawn } from "node:child_process";
import { readFileSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { binaryPath } from "@xenroam/process";
import type { DomainInfo, MigrateRequest, PhaseMark, Toolstack, VifInfo } from "@xenroam/protocol";
import { relayArgument } from "../relay.js";
import { setVifBridges } from "../xlcfg.js";

export class XlError extends Error {
  override readonly name = "XlError";
}

/** The xl binary: `XENROAM_XL`, or the system's (@xenroam/process's resolver, which doctor reports), never PATH. */
export function xlBinary(): string {
  try {
    return binaryPath("xl");
  } catch (err) {
    throw new XlError(`${(err as Error).message} (is this a Xen Dom0 with the xl toolstack?)`);
  }
}

/** What `xenroam receive` prints on stderr, one line, for the source to read through xl. */
export const RECEIVE_REPORT = "xenroam-receive ";

interface XlResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs xl with piped output (never for the migration stream itself). `onLine` sees each line of its stderr as it
 * comes (xl migrate's progress: the receiver's restore, "Target has acknowledged transfer", GO, ...).
 */
function xl(args: readonly string[], onLine?: (line: string) => void): Promise<XlResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(xlBinary(), args, { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    let seen = 0;
    child.stdout.on("data", (c) => (stdout += String(c)));
    child.stderr.on("data", (c) => {
      stderr += String(c);
      if (!onLine) return;
      for (let nl = stderr.indexOf("\n", seen); nl >= 0; nl = stderr.indexOf("\n", seen)) {
        const line = stderr.slice(seen, nl).trimEnd();
        seen = nl + 1;
        if (line) onLine(line);
      }
    });
    child.on("error", (err) =>
      reject(
        new XlError(`cannot run ${xlBinary()} (${err.message}); is this a Xen Dom0 with the xl toolstack?`),
      ),
    );
    child.on("close", (code) => resolve({ code: code ?? 1, stdout, stderr }));
  });
}

async function xlOk(args: readonly string[]): Promise<string> {
  const r = await xl(args);
  if (r.code !== 0) {
    throw new XlError(
      `xl ${args.join(" ")} failed (exit ${r.code}): ${r.stderr.trim().split("\n").at(-1) ?? ""}`,
    );
  }
  return r.stdout;
}

interface XlListEntry {
  domid: number;
  config: { c_info?: { name?: string }; nics?: Array<{ devid?: number; mac?: string; bridge?: string }> };
}

/** The domain as `xl list -l` reports it. */
export async function xlDomain(vm: string, host = hostname()): Promise<DomainInfo> {
  let entries: XlListEntry[];
  const out = await xlOk(["list", "-l", vm]);
  try {
    entries = JSON.parse(out) as XlListEntry[];
  } catch {
    throw new XlError(`xl list -l ${vm} did not print JSON`);
  }
  const d = entries.find((e) => e.config.c_info?.name === vm) ?? entries[0];
  if (!d) throw new XlError(`no domain named ${vm} on this host`);
  const vifs: VifInfo[] = (d.config.nics ?? []).map((n, i) => {
    const devid = n.devid ?? i;
    return {
      devid,
      mac: (n.mac ?? "").toLowerCase(),
      ifname: `vif${d.domid}.${devid}`,
      bridge: n.bridge ?? "xenbr0",
    };
  });
  return { vm, domid: d.domid, host, vifs };
}

/**
 * The guests `xl list` prints, by name. Its lines are (tools/xl/xl_info.c, list_domains) a header, then per
 * domain `printf("%-40s %5d %5lu %5d     %c%c%c%c%c%c  %8.1f", name, domid, memMiB, vcpus, r b p s
 * <shutdown reason> d, cpu seconds)` — the name padded, so it is read from the right. Left out: Dom0 (domid 0),
 * domains shutting down or dying (s, d), and the names xl gives a domain in the middle of a migration,
 * `NAME--incoming` (xl_vmcontrol.c, on the receiver) and `NAME--migratedaway` (xl_migrate.c, on the sender).
 */
export function parseXlList(text: string): string[] {
  const names: string[] = [];
  for (const line of text.split("\n").slice(1)) {
    const m = /^(.*?)\s+(\d+)\s+(\d+)\s+(\d+)\s+([-r][-b][-p][-s].[-d])\s+[\d.]+/.exec(line);
    if (!m) continue;
    const [, name = "", domid = "", , , state = ""] = m;
    if (Number(domid) === 0 || state[3] === "s" || state[5] === "d") continue;
    if (/--(incoming|migratedaway)$/.test(name)) continue;
    names.push(name.trim());
  }
  return names;
}

export interface XlOptions {
  /** The VM's xl.cfg; `{vm}` is replaced by the VM's name. */
  readonly configPath: string;
  /** Transport to the destination; `{host}` is replaced by it. Default: ssh in batch mode as root. */
  readonly transport: string;
  /** The command that runs xenroam on the destination. */
  readonly remoteXenroam: string;
  /** Where the swapped config is written for xl to read. */
  readonly stateDir: string;
  /**
   * Hold the vifs the engine asks to hold (the old primary) at the destination: their frontends do not connect
   * until the guest has switched (host-plugin/src/hold.ts). Off for guests whose kernel lacks the XSA-465 fix.
   */
  readonly carrierHold?: boolean;
  /** Have the destination announce the guest's new address to its router before it runs (receive --announce). */
  readonly announce?: boolean;
  /** Mobility layer: the control server the destination relays the guest's activation to (receive --relay). */
  readonly relayControl?: string;
  /**
   * Sees the pause from the source (adapters/suspend-watch.ts): when it is there, the engine's onPaused runs
   * at libxl's suspend of the guest, and the destination relays nothing. Resolves with the watch's remover.
   */
  readonly watchSuspend?: (vm: string, onSuspend: () => void) => Promise<() => Promise<void>>;
  /**
   * Called once `xl migrate` runs: xenroam's own work (the suspend watch, the relay, xl's progress lines)
   * then yields the Dom0's CPU to xl, which copies the last dirty pages while the guest is stopped.
   */
  readonly yieldCpu?: () => void;
  readonly log?: (event: string, fields?: Record<string, unknown>) => void;
}

export const XL_DEFAULTS = {
  configPath: "/etc/xen/{vm}.cfg",
  transport: "ssh -o BatchMode=yes root@{host}",
  remoteXenroam: "xenroam",
} as const;

const SAFE = /^[A-Za-z0-9_.:@%+=/-]+$/;

function shellWord(what: string, w: string): string {
  if (!SAFE.test(w)) throw new XlError(`${what} "${w}" has characters that cannot go on a command line`);
  return w;
}

/** The receiving command line: what `xl migrate -s ""` runs as its transport (through sh). */
export function receiveRune(
  o: XlOptions,
  vm: string,
  destination: string,
  request: MigrateRequest,
  /** The source relays at the suspend itself: the destination must not. */
  sourceRelays = false,
): string {
  const writes = Buffer.from(JSON.stringify(request.guestWrites ?? {})).toString("base64url");
  const relay = sourceRelays ? undefined : relayArgument(o.relayControl, vm, request.guestWrites);
  const transport = o.transport.replaceAll("{host}", shellWord("destination", destination));
  return [
    "exec",
    transport,
    o.remoteXenroam,
    "receive",
    shellWord("VM name", vm),
    "--migration",
    shellWord("migration id", request.migrationId),
    "--writes",
    writes,
    ...(request.hold && o.carrierHold !== false && request.hold.devids.length > 0
      ? ["--hold", request.hold.devids.map((d) => shellWord("vif devid", String(d))).join(",")]
      : []),
    ...(relay ? ["--relay", relay] : []),
    ...(request.announce && o.announce !== false
      ? [
          "--announce",
          [
            shellWord("MoA", request.announce.moa),
            shellWord("MAC", request.announce.mac),
            shellWord("bridge", request.announce.bridge),
          ].join("/"),
        ]
      : []),
  ].join(" ");
}

export class XlToolstack implements Toolstack {
  constructor(private readonly options: XlOptions) {}

  domain(vm: string): Promise<DomainInfo> {
    return xlDomain(vm);
  }

  /** xl sees only this host: `host` must be it (xenroam evacuate runs on the host it empties). */
  async residents(_host: string): Promise<string[]> {
    return parseXlList(await xlOk(["list"]));
  }

  async migrate(vm: string, destination: string, request: MigrateRequest): Promise<DomainInfo> {
    const mark = request.mark ?? (() => {});
    const source = this.options.configPath.replaceAll("{vm}", vm);
    let cfg: string;
    try {
      cfg = readFileSync(source, "utf8");
    } catch (err) {
      throw new XlError(
        `cannot read the VM's xl config ${source}: ${(err as Error).message} (give it with --xl-config)`,
      );
    }
    const swapped = join(this.options.stateDir, `migrate-${request.migrationId}.cfg`);
    writeFileSync(swapped, setVifBridges(cfg, request.bridges));
    // The pause, seen from here when it can be: the guest's activation is relayed at libxl's suspend.
    let unwatch: (() => Promise<void>) | undefined;
    let suspended = false;
    const onPaused = request.onPaused;
    if (onPaused && this.options.watchSuspend) {
      unwatch = await this.options
        .watchSuspend(vm, () => {
          suspended = true;
          mark("suspended");
          onPaused();
        })
        .catch((err: unknown) => {
          this.options.log?.("suspend_watch_failed", { vm, error: (err as Error).message });
          return undefined;
        });
    }
    mark("xl-migrate");
    let r: XlResult;
    try {
      const running = xl(
        [
          "migrate",
          "-C",
          swapped,
          "-s",
          "",
          vm,
          receiveRune(this.options, vm, destination, request, unwatch !== undefined),
        ],
        // xl's progress as it happens (both ends: the receiver's stderr comes through the transport); the
        // receiver's report is read at the end.
        (line) => {
          if (!line.startsWith(RECEIVE_REPORT)) this.options.log?.("xl", { line });
        },
      );
      this.options.yieldCpu?.(); // after the spawn: xl keeps the priority xenroam had
      r = await running;
    } finally {
      rmSync(swapped, { force: true }); // xl has sent it; nothing of the migration stays in the state dir
      await unwatch?.();
    }
    if (unwatch && !suspended) {
      // Then the guest activates its binding itself once it runs: later, but not lost.
      this.options.log?.("suspend_not_seen", { vm, migration: request.migrationId });
    }
    const line = r.stderr.split("\n").find((l) => l.startsWith(RECEIVE_REPORT));
    if (r.code !== 0) {
      throw new XlError(
        `xl migrate ${vm} to ${destination} failed (exit ${r.code}): ${r.stderr.trim().split("\n").slice(-3).join(" | ")}`,
      );
    }
    mark("running-on-destination");
    if (!line) return { vm, domid: -1, host: destination, vifs: [] };
    const report = JSON.parse(line.slice(RECEIVE_REPORT.length)) as DomainInfo;
    return { ...report, host: destination };
  }
}

export interface ReceiveOptions {
  readonly vm: string;
  /** Writes into the guest's xenroam directory before the domain runs. */
  readonly writes: Readonly<Record<string, string>>;
  /** Writes one key into the new domain's xenstore (Dom0 client). */
  readonly write: (domid: number, key: string, value: string) => Promise<void>;
  /**
   * The incoming domain's id (named `<vm>--incoming` from before the stream until xl's rename after GO), looked
   * for while the memory arrives and, failing that, in the window. Default: `xl domid`; main.ts reads xenstore
   * instead (no process started in the window).
   */
  readonly findDomid?: (names: readonly string[]) => Promise<number | undefined>;
  /**
   * Whether a domain still has the name it was found by: with it, receive looks for the incoming domain while
   * the stream arrives (libxl names it at the start), and only checks it in the window.
   */
  readonly hasName?: (domid: number, name: string) => Promise<boolean>;
  /** The running domain as the report gives it (default: `xl list -l`); main.ts reads xenstore. */
  readonly describe?: (domid: number) => Promise<DomainInfo | undefined>;
  /** Before the stream arrives: make sure the bridges the config names exist (the parking bridge). */
  readonly ensureBridges?: () => Promise<void>;
  /**
   * The carrier hold (host-plugin/src/hold.ts): `engage` runs while the domain is paused and returns the devids
   * it holds; `release`, called at once, hands them to the detached process that lets them connect once the
   * guest has switched (it must be cheap: the domain is still paused).
   */
  readonly hold?: {
    readonly devids: readonly number[];
    readonly engage: (domid: number, devids: readonly number[]) => Promise<number[]>;
    readonly release: (domid: number, devids: readonly number[]) => void;
    /**
     * Resolves true once libxl is done with these vifs of the incoming domain (their hotplug scripts ran), false
     * when `signal` aborts first. With it, the hold is engaged as soon as that is so, while the domain is still
     * being built, and the window before unpause only collects the result (hold.ts awaitHotplugged).
     */
    readonly hotplugged?: (domid: number, devids: readonly number[], signal: AbortSignal) => Promise<boolean>;
  };
  readonly log: (event: string, fields?: Record<string, unknown>) => void;
  /**
   * Announces the guest's new address to the site's router (host-plugin/src/announce.ts): `prepare` as
   * receive starts (the memory takes seconds to arrive), `send` once xl's ready message has gone on — never
   * in the window before it: it overlaps the sender's GO and the unpause, and is done long before the guest's
   * frontend can connect — and `withdraw` at the end whatever happened. Failures are logged, never the
   * migration's.
   */
  readonly announce?: {
    readonly prepare: () => Promise<void>;
    readonly send: () => Promise<void>;
    readonly withdraw: () => Promise<void>;
  };
  /**
   * Lowers xenroam's own priority on Dom0's CPU once xl's ready message has gone on (and the announcement with
   * it): until then its steps are on the migration's path (the hold engaged ahead, the window), after it the
   * guest's frontends connecting through xenstored and netback are.
   */
  readonly background?: () => void;
  /** Mobility layer: relays the guest's activation (never throws); the domain waits RELAY_WAIT_MS for it at most. */
  readonly relay?: () => Promise<unknown>;
  /** Where xl's back channel goes (default: fd 1, the transport); tests give their own. */
  readonly send?: (chunk: Buffer) => void;
}

/** How often, and how many times, receive looks for the incoming domain while the stream arrives. */
const EARLY_LOOK_MS = 500;
const EARLY_LOOKS = 600;

/** How long the domain may stay paused for the relay of the guest's activation. */
export const RELAY_WAIT_MS = 250;
/** How long xenroam's own steps may keep a complete domain paused before xl is let go regardless. */
export const ARRIVAL_DEADLINE_MS = 2000;
/**
 * After xl's ready message, receive leaves the CPU alone this long before its own last steps (the pair's
 * removal, the report, its exit): the guest is resuming, and on the real-Xen rig Dom0 and the guest share one
 * CPU through Xen's scheduler — each xenstore round trip of the guest's frontends took 20 ms beside xenroam's
 * Node.js, 11 ms without. It delays the report, not the guest.
 */
export const QUIET_AFTER_READY_MS = 1500;

/**
 * xl's own messages on the migration's back channel, tools/xl/xl.h 60-67 (Xen 4.17.5). The receiver writes
 * "ready" with its NUL (`sizeof`, xl_migrate.c 414-417) once the domain is complete and paused, its devices
 * added and their hotplug scripts run; the sender renames its copy away and answers GO (xl_migrate.c 222-253);
 * the receiver then renames the domain from `<vm>--incoming` and unpauses it at once (xl_migrate.c 421-434).
 */
export const XL_READY = Buffer.from("domain received, ready to unpause\0", "latin1");

/**
 * Passes a byte stream through, except that it stops at `marker` and hands it on only once `before` has
 * settled: the window between "the domain is complete" and "the sender may let it run" is xenroam's.
 * Bytes are never reordered, dropped or held longer than needed to recognise the marker.
 */
export class MarkerGate {
  private pending = Buffer.alloc(0);
  private state: "looking" | "holding" | "open" = "looking";

  constructor(
    private readonly marker: Buffer,
    private readonly forward: (chunk: Buffer) => void,
    private readonly before: () => Promise<void>,
  ) {}

  push(chunk: Buffer): void {
    if (this.state === "open") return this.forward(chunk);
    this.pending = Buffer.concat([this.pending, chunk]);
    if (this.state === "holding") return;
    const at = this.pending.indexOf(this.marker);
    if (at >= 0) {
      if (at > 0) this.forward(this.pending.subarray(0, at));
      this.pending = this.pending.subarray(at);
      this.state = "holding";
      void this.before()
        .catch(() => {})
        .finally(() => {
          this.state = "open";
          const rest = this.pending;
          this.pending = Buffer.alloc(0);
          this.forward(rest);
        });
      return;
    }
    // Keep back only a tail that could be the marker's beginning.
    let keep = Math.min(this.marker.length - 1, this.pending.length);
    while (
      keep > 0 &&
      !this.pending.subarray(this.pending.length - keep).equals(this.marker.subarray(0, keep))
    )
      keep--;
    if (this.pending.length > keep) this.forward(this.pending.subarray(0, this.pending.length - keep));
    this.pending = this.pending.subarray(this.pending.length - keep);
  }

  /** Whatever is left when the stream ends (a receiver that died before its ready message). */
  end(): void {
    if (this.state !== "looking") return; // a held marker still goes on once its steps settle
    if (this.pending.length > 0) this.forward(this.pending);
    this.pending = Buffer.alloc(0);
  }
}

function writeAll(fd: number, chunk: Buffer): void {
  let off = 0;
  while (off < chunk.length) {
    try {
      off += writeSync(fd, chunk, off);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EAGAIN") throw err;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 2);
    }
  }
}

/**
 * The destination side. The migration stream (stdin) goes to `xl migrate-receive` untouched; its back channel
 * (stdout) passes through xenroam, which holds xl's "ready" message while it finds the paused domain, holds
 * the old primary's frontend, writes the arrival into the guest's xenstore and relays the guest's activation.
 * Then xl itself renames and unpauses the domain when the sender says go: no process starts between the
 * domain being complete and it running. xenroam itself writes only to stderr.
 */
export async function xlReceive(o: ReceiveOptions): Promise<DomainInfo> {
  await o.ensureBridges?.();
  const announceFailed = (step: string) => (err: unknown) => {
    o.log("announce_failed", { vm: o.vm, step, error: (err as Error).message });
    return false;
  };
  const prepared = o.announce?.prepare().then(() => true, announceFailed("prepare"));
  const phases: PhaseMark[] = [];
  let complete = 0;
  const mark = (phase: string) => phases.push({ phase, atMs: Date.now() - complete });
  let domid: number | undefined;
  let held: number[] = [];
  let relaying: Promise<unknown> | undefined;
  let early: number | undefined;
  /** The arrival's keys written while the memory still arrived (libxl made the domain's xenstore first). */
  let writtenEarly: Promise<boolean> | undefined;
  let looking = o.findDomid !== undefined && o.hasName !== undefined;
  /** Set when the deadline let xl go: the domain may run now, so nothing is held any more. */
  let abandoned = false;
  let arrivalRun: Promise<unknown> | undefined;
  let announcing: Promise<void> | undefined;
  let readySentAt: number | undefined;
  /** The window's own run (MarkerGate's `before`): it settles within ARRIVAL_DEADLINE_MS of starting. */
  let gateRun: Promise<void> | undefined;
  /** The hold engaged while the domain is still being built, once its vifs' hotplug scripts have run. */
  let earlyHold: Promise<number[] | undefined> | undefined;
  const stopEarlyHold = new AbortController();
  let handedOff = false;
  /** What is held goes to the releaser once, whoever engaged it. */
  const handOff = (d: number, devids: readonly number[]) => {
    if (handedOff || !o.hold) return;
    handedOff = true;
    o.hold.release(d, devids);
  };
  const arrival = async (): Promise<void> => {
    complete = Date.now();
    looking = false;
    // The source cannot see the pause on xl: the guest's activation goes to the control server from here.
    relaying = o.relay?.();
    const names = [`${o.vm}--incoming`, o.vm];
    domid =
      early !== undefined && (await o.hasName?.(early, names[0] ?? ""))
        ? early
        : o.findDomid
          ? await o.findDomid(names)
          : await xlDomidOf(names);
    if (domid === undefined) throw new XlError(`no domain named ${names.join(" or ")} on this host`);
    mark("found");
    // The hold first: a frontend must never see its backend at InitWait once the domain runs.
    if (o.hold && !abandoned) {
      // Engaged ahead (or engaging now, its wait for the hotplug scripts cut short): take that one's result.
      stopEarlyHold.abort();
      const ahead = domid === early ? await earlyHold : undefined;
      held =
        ahead ??
        (await o.hold.engage(domid, o.hold.devids).catch((err: unknown) => {
          o.log("hold_failed", { vm: o.vm, domid, error: String(err) });
          return [];
        }));
      // At once, whatever follows: nothing may stay held without someone to release it.
      if (held.length > 0) handOff(domid, held);
      mark("held");
    }
    if (!(domid === early && (await writtenEarly))) {
      for (const [key, value] of Object.entries(o.writes)) await o.write(domid, key, value);
      if (Object.keys(o.writes).length > 0) mark("written");
    }
    if (relaying) {
      await Promise.race([relaying, new Promise((r) => setTimeout(r, RELAY_WAIT_MS).unref())]);
      mark("relayed");
    }
  };
  const send = o.send ?? ((chunk: Buffer) => writeAll(1, chunk));
  const gate = new MarkerGate(
    XL_READY,
    (chunk) => {
      try {
        send(chunk);
      } catch (err) {
        o.log("back_channel_failed", { vm: o.vm, error: (err as Error).message });
      }
    },
    () =>
      (gateRun = (async () => {
        // Whatever happens to xenroam's steps, xl must be let go: the sender is waiting with the VM stopped.
        let timer: NodeJS.Timeout | undefined;
        const late = new Promise<"late">((r) => (timer = setTimeout(() => r("late"), ARRIVAL_DEADLINE_MS)));
        arrivalRun = arrival();
        const outcome = await Promise.race([arrivalRun.then(() => "done" as const), late]).catch(
          (err: unknown) => {
            o.log("arrival_failed", { vm: o.vm, domid, error: (err as Error).message });
            return "failed" as const;
          },
        );
        clearTimeout(timer);
        if (outcome === "late") {
          abandoned = true;
          o.log("arrival_late", { vm: o.vm, domid, deadlineMs: ARRIVAL_DEADLINE_MS });
        }
        mark("ready-sent");
        readySentAt = Date.now();
        const announce = o.announce;
        if (!announce || !prepared) {
          o.background?.();
          return;
        }
        // A timer, not a microtask: the gate hands the ready message on as soon as this settles, first.
        announcing = new Promise((r) => setTimeout(r, 0))
          .then(async () => {
            if (!(await prepared)) return;
            const started = Date.now();
            await announce.send();
            o.log("locator_announced", { vm: o.vm, domid, ms: Date.now() - started });
          })
          .catch(announceFailed("send"))
          .then(() => o.background?.());
      })()),
  );
  // The incoming domain, looked for while its memory arrives (never waited for).
  // The guest cannot read them before it runs, and a domain that never runs is destroyed with them.
  // (libxl refuses a second domain of one name, so an `<vm>--incoming` found here is this migration's.)
  void (async () => {
    for (let i = 0; looking && early === undefined && i < EARLY_LOOKS; i++) {
      const found = await o.findDomid?.([`${o.vm}--incoming`]).catch(() => undefined);
      if (found === undefined || !looking) {
        await new Promise((r) => setTimeout(r, EARLY_LOOK_MS).unref());
        continue;
      }
      writtenEarly = (async () => {
        for (const [key, value] of Object.entries(o.writes)) await o.write(found, key, value);
        return true;
      })().catch((err: unknown) => {
        o.log("early_write_failed", { vm: o.vm, domid: found, error: (err as Error).message });
        return false;
      });
      early = found;
      const hold = o.hold;
      if (hold?.hotplugged && hold.devids.length > 0) {
        const started = Date.now();
        earlyHold = hold
          .hotplugged(found, hold.devids, stopEarlyHold.signal)
          .catch((err: unknown) => {
            o.log("hotplug_watch_failed", { vm: o.vm, domid: found, error: String(err) });
            return false;
          })
          .then(async (ahead) => {
            // Cut short: the window engages it (or, past the deadline, nobody does).
            if (!ahead) return undefined;
            const devids = await hold.engage(found, hold.devids).catch((err: unknown) => {
              o.log("hold_failed", { vm: o.vm, domid: found, error: String(err) });
              return undefined; // the window tries again
            });
            if (!devids) return undefined;
            o.log("hold_engaged_ahead", { vm: o.vm, domid: found, devids, waitedMs: Date.now() - started });
            return devids;
          });
      }
    }
  })();
  // Whatever ends receive — xl not starting, xl failing, a step throwing — the announcement's pair goes.
  const withdraw = async () => {
    if (!o.announce) return;
    await gateRun?.catch(() => {}); // it may still be about to send
    await announcing;
    await prepared;
    await o.announce.withdraw().catch(announceFailed("withdraw"));
  };
  try {
    return await receiveAndReport();
  } finally {
    await withdraw();
  }

  async function receiveAndReport(): Promise<DomainInfo> {
    const code = await new Promise<number>((resolve, reject) => {
      const child = spawn(xlBinary(), ["migrate-receive"], { stdio: ["inherit", "pipe", "inherit"] });
      child.stdout.on("data", (c: Buffer) => gate.push(c));
      child.stdout.on("end", () => gate.end());
      child.on("error", (err) => reject(new XlError(`cannot run ${xlBinary()}: ${err.message}`)));
      child.on("close", (c) => resolve(c ?? 1));
      // xl's domain-monitoring daemon reopens its stdio on a log file (tools/xl/xl_utils.c 284-286); should
      // anything else keep the back channel's pipe open, its exit is enough once what it wrote has been read.
      child.on("exit", (c) =>
        setTimeout(() => {
          child.stdout.destroy();
          resolve(c ?? 1);
        }, 1000).unref(),
      );
    });
    // Steps still running (a late hold's transaction) finish before the xenstore connection goes: a hold they
    // engage is handed to the releaser.
    if (arrivalRun)
      await Promise.race([arrivalRun.catch(() => {}), new Promise((r) => setTimeout(r, 5000).unref())]);
    // A hold engaged ahead that the window never collected (xl let go at the deadline, or it failed before
    // ready): it is released like any other, never left standing.
    stopEarlyHold.abort();
    if (earlyHold && !handedOff && early !== undefined) {
      const domidAhead = early;
      const aheadHeld = await earlyHold.catch(() => undefined);
      if (aheadHeld && aheadHeld.length > 0) handOff(domidAhead, aheadHeld);
    }
    await gateRun?.catch(() => {});
    await announcing;
    if (readySentAt !== undefined) {
      const quiet = readySentAt + QUIET_AFTER_READY_MS - Date.now();
      if (quiet > 0) await new Promise((r) => setTimeout(r, quiet));
    }
    await withdraw();
    if (code !== 0) {
      throw new XlError(
        `xl migrate-receive failed (exit ${code})${domid === undefined ? "; the source keeps the VM" : ""}`,
      );
    }
    mark("xl-done");
    o.log("unpaused", { vm: o.vm, domid, held, phases });
    await relaying;
    // xl ran it even if xenroam's steps could not find it (they logged why): report what xl says.
    const info = (domid !== undefined ? await o.describe?.(domid) : undefined) ?? (await xlDomain(o.vm));
    const report: DomainInfo = { ...info, arrival: phases };
    process.stderr.write(`${RECEIVE_REPORT}${JSON.stringify(report)}\n`);
    return report;
  }
}

async function xlDomidOf(names: readonly string[]): Promise<number | undefined> {
  for (const name of names) {
    const r = await xl(["domid", name]);
    const domid = Number(r.stdout.trim());
    if (r.code === 0 && Number.isInteger(domid) && domid > 0) return domid;
  }
  return undefined;
}

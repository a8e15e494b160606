// The xl adapter: the only code in xenroam that runs `xl`. Source side: `xl migrate -C <swapped config>` over
// a transport the admin chooses (ssh by default), whose far end is `xenroam receive` on the destination.
// Destination side (`receive`): `xl migrate-receive -p` (the domain stays paused), the arrival written into
// the guest's xenstore, then `xl unpause` — so the guest learns it has arrived first thing after resume.

import { spawn } from "node:child_process";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import type { DomainInfo, MigrateRequest, Toolstack, VifInfo } from "@xenroam/protocol";
import { relayArgument } from "../relay.js";
import { setVifBridges } from "../xlcfg.js";

export class XlError extends Error {
  override readonly name = "XlError";
}

/** The xl binary: `XENROAM_XL`, or `xl` from PATH. */
export const xlBinary = (): string => process.env.XENROAM_XL ?? "xl";

/** What `xenroam receive` prints on stderr, one line, for the source to read through xl. */
export const RECEIVE_REPORT = "xenroam-receive ";

interface XlResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs xl with piped output (never for the migration stream itself). */
function xl(args: readonly string[]): Promise<XlResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(xlBinary(), args, { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c) => (stdout += String(c)));
    child.stderr.on("data", (c) => (stderr += String(c)));
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
  /** Mobility layer: the control server the destination relays the guest's activation to (receive --relay). */
  readonly relayControl?: string;
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
export function receiveRune(o: XlOptions, vm: string, destination: string, request: MigrateRequest): string {
  const writes = Buffer.from(JSON.stringify(request.guestWrites ?? {})).toString("base64url");
  const relay = relayArgument(o.relayControl, vm, request.guestWrites);
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
  ].join(" ");
}

export class XlToolstack implements Toolstack {
  constructor(private readonly options: XlOptions) {}

  domain(vm: string): Promise<DomainInfo> {
    return xlDomain(vm);
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
    mark("xl-migrate");
    let r: XlResult;
    try {
      r = await xl([
        "migrate",
        "-C",
        swapped,
        "-s",
        "",
        vm,
        receiveRune(this.options, vm, destination, request),
      ]);
    } finally {
      rmSync(swapped, { force: true }); // xl has sent it; nothing of the migration stays in the state dir
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
  /** Writes into the guest's xenroam directory before unpause. */
  readonly writes: Readonly<Record<string, string>>;
  /** Writes one key into the new domain's xenstore (Dom0 client). */
  readonly write: (domid: number, key: string, value: string) => Promise<void>;
  /** Before the stream arrives: make sure the bridges the config names exist (the parking bridge). */
  readonly ensureBridges?: () => Promise<void>;
  /**
   * The carrier hold (host-plugin/src/hold.ts): `engage` runs while the domain is paused and returns the devids
   * it holds; `release` hands them to a detached process that lets them connect once the guest has switched.
   */
  readonly hold?: {
    readonly devids: readonly number[];
    readonly engage: (domid: number, devids: readonly number[]) => Promise<number[]>;
    readonly release: (domid: number, devids: readonly number[]) => void;
  };
  readonly log: (event: string, fields?: Record<string, unknown>) => void;
  /** Mobility layer: relays the guest's activation (never throws); unpause waits for it RELAY_WAIT_MS at most. */
  readonly relay?: () => Promise<unknown>;
}

/** How long the domain may stay paused for the relay of the guest's activation. */
export const RELAY_WAIT_MS = 250;

/**
 * The destination side. stdin/stdout carry the migration stream and go to `xl migrate-receive` untouched;
 * xenroam itself writes only to stderr.
 */
export async function xlReceive(o: ReceiveOptions): Promise<DomainInfo> {
  await o.ensureBridges?.();
  const code = await new Promise<number>((resolve, reject) => {
    const child = spawn(xlBinary(), ["migrate-receive", "-p"], { stdio: ["inherit", "inherit", "inherit"] });
    child.on("error", (err) => reject(new XlError(`cannot run ${xlBinary()}: ${err.message}`)));
    child.on("close", (c) => resolve(c ?? 1));
  });
  if (code !== 0) throw new XlError(`xl migrate-receive failed (exit ${code}); the source keeps the VM`);
  const domid = Number((await xlOk(["domid", o.vm])).trim());
  if (!Number.isInteger(domid) || domid <= 0) throw new XlError(`xl domid ${o.vm} gave no domain id`);
  const started = Date.now();
  // The source cannot see the pause on xl: the guest's activation goes to the control server from here.
  const relaying = o.relay?.();
  let held: number[] = [];
  try {
    // The hold first: a frontend must never see its backend at InitWait once the domain runs.
    if (o.hold) {
      held = await o.hold.engage(domid, o.hold.devids).catch((err: unknown) => {
        o.log("hold_failed", { vm: o.vm, domid, error: String(err) });
        return [];
      });
    }
    for (const [key, value] of Object.entries(o.writes)) await o.write(domid, key, value);
    if (relaying) await Promise.race([relaying, new Promise((r) => setTimeout(r, RELAY_WAIT_MS).unref())]);
  } finally {
    // Whatever happened to the arrival keys, the domain must not stay paused: the source has let go of it.
    try {
      await xlOk(["unpause", o.vm]);
    } finally {
      // Even if unpause failed: nothing may stay held without someone to release it.
      if (held.length > 0) o.hold?.release(domid, held);
    }
  }
  o.log("unpaused", { vm: o.vm, domid, arrivalMs: Date.now() - started, held });
  await relaying;
  const info = await xlDomain(o.vm);
  process.stderr.write(`${RECEIVE_REPORT}${JSON.stringify(info)}\n`);
  return info;
}

// The host plugin's core: step 1 (gateway staging and the guest's preparation), step 3 (migration with the
// vif attachments swapped, through the Toolstack port) and the cleanup after it, in the safe order. Every
// step records state before acting, so abort and a re-run converge; the VM's primary path is never touched.

import { parseIpv6, parsePrefix, prefixContains, printable, renderRadvdConf } from "@xenroam/core";
import {
  type DomainInfo,
  encodeMessage,
  KEYS,
  type PhaseMark,
  parseAnswer,
  type SignedActivation,
  type Site,
  type VifInfo,
} from "@xenroam/protocol";
import type { ControlRelay, HostPorts, HostState, Locks, MigrationRecord, VmState } from "./ports.js";
import { holdReleased } from "./hold.js";
import { MemoryLocks } from "./locks.js";
import { type RelayOutcome, relayActivation } from "./relay.js";
import { radvdFor, stagingBridge } from "./staging.js";
import { boundedAll, type EvacuationRow, type EvacuationSummary, planEvacuation, rowOf } from "./evacuate.js";

export type PrepareFailure = "silent" | "refused" | "malformed";

export class PrepareError extends Error {
  override readonly name = "PrepareError";
  constructor(
    readonly kind: PrepareFailure,
    message: string,
  ) {
    super(message);
  }
}

export class PluginError extends Error {
  override readonly name = "PluginError";
}

/** Another xenroam operation is at work on this VM: refused before anything was touched. */
/** What `reconcile` found and undid. */
export interface Repair {
  readonly vm?: string;
  readonly site?: string;
  readonly repaired: string;
  readonly why: string;
}

export class BusyError extends Error {
  override readonly name = "BusyError";
}

/** How long an operation waits for a site's staging bridge (another VM's prepare or cleanup holds it briefly). */
const SITE_LOCK_MS = 60_000;

export type PrepareResult =
  | { readonly kind: "same-site"; readonly site: string }
  | {
      readonly kind: "prepared";
      readonly migrationId: string;
      readonly site: string;
      readonly moa: string;
      readonly secondary: VifInfo;
      readonly reused: boolean;
      /** The guest's pre-signed activation of the MoA (mobility layer), for the relay at the pause. */
      readonly activation?: SignedActivation;
    };

export interface MigrationReport {
  readonly migrationId: string;
  readonly vm: string;
  readonly from: string;
  readonly to: string;
  readonly method: "dual-interface" | "plain";
  /** Why a plain migration was done instead, when the method was wanted. */
  readonly fallback?: string;
  /** The same in a word: the guest's prepare was silent, refused, or malformed. */
  readonly fallbackKind?: PrepareFailure;
  readonly moa?: string;
  readonly domid: number;
  /** How long the toolstack kept the VM paused, when it knows. */
  readonly pausedMs?: number;
  /** xl: the destination's steps between the domain complete and running (DomainInfo.arrival). */
  readonly arrival?: readonly PhaseMark[];
  /** When the migration started (ms since the epoch): the timeline's zero. */
  readonly startedAt: number;
  readonly timeline: readonly PhaseMark[];
}

export interface PrepareOptions {
  readonly migrationId?: string;
  /** How long the guest has to answer. */
  readonly timeoutMs?: number;
}

export const DEFAULT_PREPARE_TIMEOUT_MS = 8000;

/** How many VMs `xenroam evacuate` moves at once unless told. */
export const DEFAULT_EVACUATE_PARALLEL = 4;

export interface EvacuateOptions {
  /** The destination site. */
  readonly site: string;
  /** The site's hosts to use (default: all of them but this one). */
  readonly hosts?: readonly string[];
  readonly parallel?: number;
  /** How long each guest has to prepare. */
  readonly timeoutMs?: number;
  /** false: plain migrations (the baseline). */
  readonly method?: boolean;
  /** A line per step for people. */
  readonly onProgress?: (line: string) => void;
}
/** How long the destination keeps the old primary unplugged waiting for the guest's switch. */
export const HOLD_TIMEOUT_MS = 10_000;

export function newMigrationId(now: number, random: () => number = Math.random): string {
  const stamp = new Date(now).toISOString().replace(/[-:]/g, "").replace(/\..*$/, "");
  return `m${stamp}-${Math.floor(random() * 0xffffff)
    .toString(16)
    .padStart(6, "0")}`;
}

export class Engine {
  /** The host this engine runs on (the sites file's name for it). */
  get host(): string {
    return this.p.host;
  }

  private readonly locks: Locks;

  constructor(private readonly p: HostPorts) {
    this.locks = p.locks ?? new MemoryLocks();
  }

  /**
   * One operation per VM at a time, between processes too: a second is refused at once, saying who holds the
   * VM, and touches nothing (the first's staging, radvd and record stay as they are).
   */
  private async exclusive<T>(vm: string, what: string, run: () => Promise<T>): Promise<T> {
    const r = await this.locks.tryAcquire(`vm:${vm}`, `${what} ${vm}`);
    if ("holder" in r) {
      throw new BusyError(
        `another xenroam operation is at work on ${vm} (${printable(r.holder.what, 100)}${r.holder.pid ? `, process ${r.holder.pid}` : ""}, since ${printable(r.holder.since, 40)}): nothing was changed; wait for it to end, then see xenroam status`,
      );
    }
    try {
      return await run();
    } finally {
      await r.held.release();
    }
  }

  /** A site's staging bridge and radvd are changed by one operation at a time (two VMs may share them). */
  private async siteExclusive<T>(site: string, what: string, run: () => Promise<T>): Promise<T> {
    const held = await this.locks.acquire(`site:${site}`, what, SITE_LOCK_MS);
    try {
      return await run();
    } finally {
      await held.release();
    }
  }

  /**
   * What a crash left behind, undone (run before every command): a VM record whose operation is over — its
   * VM lock free — while its phase says a prepare was under way (the process that ran it died); a `prepared`
   * VM that the toolstack says runs elsewhere or as another domain now; a staging bridge (and its radvd) with
   * no user left. Left alone: a VM some process is at work on, a `migrating` record (xl may still be copying
   * the VM after xenroam died), a VM the toolstack cannot answer for. A repair that fails is reported, not
   * thrown. Returns what it repaired.
   */
  async reconcile(): Promise<Repair[]> {
    const { state, log } = this.p;
    const repairs: Repair[] = [];
    for (const vm of Object.keys((await state.read()).vms)) {
      const r = await this.locks.tryAcquire(`vm:${vm}`, `reconcile ${vm}`);
      if ("holder" in r) continue;
      try {
        // Read again under the VM's lock: a prepare that ended meanwhile left a record that is not a crash's.
        const rec = (await state.read()).vms[vm];
        if (!rec) continue;
        let why: string | undefined;
        if (rec.phase === "preparing") {
          why = `its prepare (migration ${rec.migrationId}) ended with the process that ran it`;
        } else if (rec.phase === "migrating") {
          // xl may still be copying the VM (it outlives a killed xenroam): never undone here.
          log("reconcile_skipped", { vm, migration: rec.migrationId, why: "a migration was under way" });
          continue;
        } else {
          // Only a definite answer counts: a toolstack that cannot say (a hiccup, a paused VM on XAPI) undoes
          // nothing.
          const dom = await this.p.toolstack.domain(vm).catch((err: unknown) => {
            log("reconcile_skipped", { vm, migration: rec.migrationId, why: (err as Error).message });
            return undefined;
          });
          if (dom && (dom.host !== this.p.host || dom.domid !== rec.domid))
            why = `prepared as domid ${rec.domid} here (migration ${rec.migrationId}), it ${dom.host !== this.p.host ? `runs on ${dom.host} now` : `is domid ${dom.domid} now`}`;
        }
        if (why === undefined) continue;
        try {
          if (!(await this.abortHeld(vm))) continue;
          repairs.push({ vm, repaired: `undid the prepare of ${vm}`, why });
          log("reconciled", { vm, migration: rec.migrationId, why });
        } catch (err) {
          // A repair that fails is reported, never in the way of the command the admin ran.
          repairs.push({
            vm,
            repaired: `FAILED to undo the prepare of ${vm}: ${(err as Error).message}`,
            why,
          });
          log("reconcile_failed", { vm, migration: rec.migrationId, error: (err as Error).message });
        }
      } finally {
        await r.held.release();
      }
    }
    const s = await state.read();
    for (const [site, st] of Object.entries(s.staging)) {
      const live = st.users.filter((u) => s.vms[u]?.site === site);
      if (live.length === st.users.length) continue;
      const why = `no prepared VM uses it${st.users.length ? ` (recorded: ${st.users.join(", ")})` : ""}`;
      try {
        await this.siteExclusive(site, "reconcile", async () => {
          const gone = st.users.filter((u) => !live.includes(u));
          for (const u of gone) await this.releaseStagingHeld(site, u, "reconcile");
          // A staging entry with no user at all (its bridge made, then the process gone before it recorded one).
          if (st.users.length === 0) await this.releaseStagingHeld(site, "", "reconcile");
        });
      } catch (err) {
        repairs.push({ site, repaired: `FAILED to clean ${st.bridge}: ${(err as Error).message}`, why });
        log("reconcile_failed", { site, bridge: st.bridge, error: (err as Error).message });
        continue;
      }
      repairs.push({
        site,
        repaired:
          live.length === 0
            ? `removed staging bridge ${st.bridge} and its radvd`
            : `dropped users of ${st.bridge}`,
        why,
      });
      log("reconciled", { site, bridge: st.bridge, users: st.users, live });
    }
    return repairs;
  }

  private async domain(vm: string): Promise<DomainInfo> {
    const dom = await this.p.toolstack.domain(vm);
    if (dom.host !== this.p.host) {
      throw new PluginError(
        `${vm} runs on ${dom.host}, not on this host (${this.p.host}); run xenroam there`,
      );
    }
    return dom;
  }

  /** The VM's primary (on the real bridge) and secondary (parked, or left on a staging bridge) vifs. */
  private vifsOf(
    vm: string,
    dom: DomainInfo,
    stagingBridges: ReadonlySet<string>,
  ): { primary: VifInfo; secondary: VifInfo } {
    const { real, parking } = this.p.bridges;
    const primary = dom.vifs.find((v) => v.bridge === real);
    const secondary =
      dom.vifs.find((v) => v.bridge === parking) ??
      dom.vifs.find((v) => stagingBridges.has(v.bridge) || v.bridge.startsWith("xr-"));
    if (!primary || !secondary) {
      throw new PluginError(
        `${vm} needs two vifs, one on ${real} and one on ${parking} (it has: ${dom.vifs.map((v) => `${v.ifname} on ${v.bridge}`).join(", ") || "none"}). ` +
          `In xl.cfg: vif = [ 'mac=…,bridge=${real}', 'mac=…,bridge=${parking}' ]`,
      );
    }
    return { primary, secondary };
  }

  /** Step 1 (and the wait for step 2): stage the destination gateway and have the guest take its MoA. */
  prepare(vm: string, destination: string, options: PrepareOptions = {}): Promise<PrepareResult> {
    return this.exclusive(vm, "prepare", () => this.prepareHeld(vm, destination, options));
  }

  private async prepareHeld(
    vm: string,
    destination: string,
    options: PrepareOptions,
  ): Promise<PrepareResult> {
    const { sites, state, channel, log } = this.p;
    const here = sites.siteOfHost(this.p.host);
    const site = sites.siteOfHost(destination);
    if (site.name === here.name) return { kind: "same-site", site: site.name };
    const refusal = await this.p.toolstack.methodRefusal?.(vm, destination);
    if (refusal) {
      throw new PluginError(
        `the method cannot move ${vm} to ${destination} here: ${refusal}. Migrate it plainly with --no-method (its address then changes by SLAAC)`,
      );
    }
    const dom = await this.domain(vm);
    const timeoutMs = options.timeoutMs ?? DEFAULT_PREPARE_TIMEOUT_MS;

    const existing = (await state.read()).vms[vm];
    if (
      existing?.phase === "prepared" &&
      existing.site === site.name &&
      existing.domid === dom.domid &&
      existing.moa
    ) {
      const answer = parseAnswer((await channel.read(dom.domid, KEYS.answer)) ?? "");
      if (answer.ok && answer.value.id === existing.migrationId && answer.value.status === "prepared") {
        const secondary = dom.vifs.find((v) => v.devid === existing.secondary.devid);
        if (secondary) {
          log("prepare_reused", { migration: existing.migrationId, vm, moa: existing.moa });
          return {
            kind: "prepared",
            migrationId: existing.migrationId,
            site: site.name,
            moa: existing.moa,
            secondary,
            reused: true,
            ...(answer.value.activation ? { activation: answer.value.activation } : {}),
          };
        }
      }
    }
    if (existing) await this.abortHeld(vm);

    const stagingBridges = new Set(Object.values((await state.read()).staging).map((st) => st.bridge));
    const { secondary } = this.vifsOf(vm, dom, stagingBridges);
    const id = options.migrationId ?? newMigrationId(this.p.now());
    const record: VmState = {
      migrationId: id,
      phase: "preparing",
      site: site.name,
      destination,
      domid: dom.domid,
      secondary: { devid: secondary.devid, ifname: secondary.ifname, mac: secondary.mac },
      startedAt: new Date(this.p.now()).toISOString(),
    };
    // Record first: whatever happens next, abort knows what to undo.
    await state.update((s) => ({
      state: this.withUser(this.withVm(s, vm, record), site, vm),
      result: undefined,
    }));
    log("prepare_started", { migration: id, vm, site: site.name, secondary: secondary.ifname });
    try {
      // The vif joins the staging bridge before radvd starts on it: a radvd started on a bridge without a port
      // (no carrier) is the suspect of the one real-Xen run whose guest never saw an RA.
      await this.siteExclusive(site.name, `prepare ${vm}`, async () => {
        const bridge = await this.ensureStagingBridge(site, id);
        await this.p.staging.attach(site, vm, secondary);
        await this.ensureStagingRadvd(site, bridge, id);
      });
      await channel.remove(dom.domid, KEYS.answer);
      await channel.write(
        dom.domid,
        KEYS.request,
        encodeMessage({
          v: 1,
          kind: "prepare",
          id,
          site: site.name,
          prefix: site.prefix,
          gateway: site.gateway,
          secondaryMac: secondary.mac,
          timeoutMs,
        }),
      );
      const text = await channel.waitFor(
        dom.domid,
        KEYS.answer,
        (t) => {
          const a = parseAnswer(t);
          return !a.ok || a.value.id === id;
        },
        timeoutMs,
      );
      if (text === undefined) {
        throw new PrepareError(
          "silent",
          `the guest agent in ${vm} did not answer within ${timeoutMs} ms; is xenroam-agent running there?`,
        );
      }
      const answer = parseAnswer(text);
      // What the guest wrote is shown to the admin and logged: never its control characters (printable).
      if (!answer.ok)
        throw new PrepareError("malformed", `refused the guest's answer: ${printable(answer.reason)}`);
      if (answer.value.status === "error")
        throw new PrepareError("refused", `${vm} could not prepare: ${printable(answer.value.reason)}`);
      if (answer.value.status !== "prepared")
        throw new PrepareError("refused", `${vm} answered ${answer.value.status}`);
      const moa = answer.value.moa;
      // The MoA is where correspondents will send the VM's traffic: an address of the destination site's prefix,
      // or the prepare is refused (a guest cannot point its binding at another network through Dom0).
      if (!prefixContains(parsePrefix(site.prefix), parseIpv6(moa)))
        throw new PrepareError(
          "refused",
          `${vm} answered MoA ${moa}, which is not in site ${site.name}'s prefix ${site.prefix}`,
        );
      await state.update((s) => ({
        state: this.withVm(s, vm, { ...record, phase: "prepared", moa }),
        result: undefined,
      }));
      const { activation } = answer.value;
      log("prepared", { migration: id, vm, moa, site: site.name, activation: activation !== undefined });
      if (activation?.vm === vm && this.p.control?.attest) await this.attest(vm, id, moa, this.p.control);
      return {
        kind: "prepared",
        migrationId: id,
        site: site.name,
        moa,
        secondary,
        reused: false,
        ...(activation ? { activation } : {}),
      };
    } catch (err) {
      // The guest's SLAAC depends on the staging radvd: say so when it is the part that is gone. Never in the
      // way of the abort below.
      const staging = (await state.read().catch(() => undefined))?.staging[site.name];
      const radvdGone = staging?.radvd !== undefined && !this.p.radvd.running(staging.radvd);
      log("prepare_failed", {
        migration: id,
        vm,
        error: (err as Error).message,
        ...(staging?.radvd ? { radvdRunning: !radvdGone } : {}),
      });
      // The prepare's own failure is the one to report (a PrepareError makes migrate fall back to plain).
      await this.abortHeld(vm).catch((e: unknown) =>
        log("abort_failed", { migration: id, vm, error: (e as Error).message }),
      );
      if (radvdGone && err instanceof PrepareError) {
        throw new PrepareError(
          err.kind,
          `${err.message} (radvd on ${staging.bridge} had exited: its log stays in the state directory as radvd-${staging.bridge}.log)`,
        );
      }
      throw err;
    }
  }

  /** Undoes a preparation: the guest is told, the secondary goes back to parking, staging is released. */
  abort(vm: string): Promise<boolean> {
    return this.exclusive(vm, "abort", () => this.abortHeld(vm));
  }

  private async abortHeld(vm: string): Promise<boolean> {
    const { state, channel, log } = this.p;
    const rec = (await state.read()).vms[vm];
    if (!rec) return false;
    await channel
      .write(rec.domid, KEYS.request, encodeMessage({ v: 1, kind: "abort", id: rec.migrationId }))
      .catch((err: unknown) =>
        log("abort_notify_failed", { migration: rec.migrationId, error: String(err) }),
      );
    // A secondary that cannot be parked again must not keep the VM's record (and every later prepare) stuck.
    await this.p.staging
      .detach(vm, rec.secondary)
      .catch((err: unknown) =>
        log("detach_failed", { migration: rec.migrationId, vm, error: (err as Error).message }),
      );
    await this.releaseStaging(rec.site, vm, rec.migrationId);
    await state.update((s) => ({ state: this.withoutVm(s, vm), result: undefined }));
    log("aborted", { migration: rec.migrationId, vm });
    return true;
  }

  /** Prepare (or reuse a preparation), migrate with the attachments swapped, clean up the source. */
  migrate(
    vm: string,
    destination: string,
    options: PrepareOptions & { readonly method?: boolean } = {},
  ): Promise<MigrationReport> {
    return this.exclusive(vm, `migrate to ${destination}`, () => this.migrateHeld(vm, destination, options));
  }

  private async migrateHeld(
    vm: string,
    destination: string,
    options: PrepareOptions & { readonly method?: boolean },
  ): Promise<MigrationReport> {
    const { log, now } = this.p;
    const started = now();
    const id = options.migrationId ?? newMigrationId(started);
    const timeline: PhaseMark[] = [];
    const mark = (phase: string) => {
      timeline.push({ phase, atMs: now() - started });
      log("phase", { migration: id, vm, phase, atMs: now() - started });
    };
    mark("start");
    const ended = { vm, startedAt: started, timeline };
    try {
      const r = await this.migrateMarked(vm, destination, options, { id, started, timeline, mark });
      await this.recordMigration({
        ...ended,
        migrationId: r.migrationId,
        outcome: r.fallbackKind ? "fallback" : r.method,
        ...(r.fallbackKind ? { fallback: r.fallbackKind } : {}),
        ...(r.pausedMs !== undefined ? { pausedMs: r.pausedMs } : {}),
        endedAt: now(),
      });
      return r;
    } catch (err) {
      await this.recordMigration({ ...ended, migrationId: id, outcome: "failed", endedAt: now() });
      throw err;
    }
  }

  /** Each migration's record goes to the metrics; one that cannot be written never fails the migration. */
  private async recordMigration(r: MigrationRecord): Promise<void> {
    if (!this.p.metrics) return;
    try {
      await this.p.metrics.record(r);
    } catch (err) {
      this.p.log("migration_metrics_failed", {
        migration: r.migrationId,
        vm: r.vm,
        error: printable((err as Error).message),
      });
    }
  }

  /** migrate's steps, each phase marked on the timeline. */
  private async migrateMarked(
    vm: string,
    destination: string,
    options: PrepareOptions & { readonly method?: boolean },
    run: {
      readonly id: string;
      readonly started: number;
      readonly timeline: readonly PhaseMark[];
      readonly mark: (phase: string) => void;
    },
  ): Promise<MigrationReport> {
    const { toolstack, state, log } = this.p;
    const { id, started, timeline, mark } = run;
    // The relay's connection is opened before anything is paused: Node's first request costs ~20 ms of CPU.
    const warmed = this.p.control?.health().catch(() => undefined);
    let prepared: PrepareResult | undefined;
    let fallback: PrepareError | undefined;
    if (options.method !== false) {
      try {
        prepared = await this.prepareHeld(vm, destination, { ...options, migrationId: id });
        mark(prepared.kind === "prepared" ? "guest-prepared" : "same-site");
      } catch (err) {
        if (!(err instanceof PrepareError)) throw err;
        fallback = err;
        log("fallback_plain_migration", { migration: id, vm, reason: err.message });
        mark("fallback");
      }
    }
    const migrationId = prepared?.kind === "prepared" ? prepared.migrationId : id;
    const dom = await this.domain(vm);
    const staged = prepared?.kind === "prepared" ? prepared : undefined;
    const useMethod = staged !== undefined;
    const bridges: Record<number, string> = {};
    for (const v of dom.vifs) {
      const real = v.bridge === this.p.bridges.real;
      // Step 3: the secondary lands on the real bridge, the primary on the parking one.
      bridges[v.devid] = staged
        ? v.devid === staged.secondary.devid
          ? this.p.bridges.real
          : this.p.bridges.parking
        : real
          ? v.bridge
          : this.p.bridges.parking;
    }
    if (useMethod) {
      await state.update((s) => {
        const rec = s.vms[vm];
        return { state: rec ? this.withVm(s, vm, { ...rec, phase: "migrating" }) : s, result: undefined };
      });
    }
    // The mobility layer: the guest's pre-signed activation goes to the control server as soon as the VM is
    // paused, so correspondents send to the new locator by the time it resumes (toolstacks that see the pause).
    const control = this.p.control;
    const activation = staged && this.relayable(vm, migrationId, staged, destination);
    const relay =
      activation && control ? this.relayAtPause(vm, migrationId, activation, control, mark) : undefined;
    if (relay) await warmed;
    let arrived: DomainInfo;
    try {
      // xl does not carry the guest's xenstore data/ directory to the destination (XAPI's vm-data does): the
      // request, the guest's answer and its status go along with the arrival, so the agent finds there the
      // channel it left, plus the signal to switch. Inside the try: a failed read undoes the prepare too.
      const carried: Record<string, string> = {};
      if (useMethod) {
        for (const key of [KEYS.request, KEYS.answer, KEYS.status]) {
          const value = await this.p.channel.read(dom.domid, key);
          if (value !== undefined) carried[key] = value;
        }
      }
      arrived = await toolstack.migrate(vm, destination, {
        migrationId,
        bridges,
        guestWrites: useMethod
          ? { ...carried, [KEYS.arrived]: encodeMessage({ v: 1, id: migrationId, host: destination }) }
          : {},
        ...(staged
          ? { announce: { moa: staged.moa, mac: staged.secondary.mac, bridge: this.p.bridges.real } }
          : {}),
        ...(staged
          ? {
              hold: {
                devids: dom.vifs.filter((v) => v.devid !== staged.secondary.devid).map((v) => v.devid),
                key: KEYS.status,
                released: (value: string) => holdReleased(value, migrationId),
                timeoutMs: HOLD_TIMEOUT_MS,
              },
            }
          : {}),
        mark,
        ...(relay ? { onPaused: relay.onPaused } : {}),
      });
      // Not waited for by the toolstack; settled here (it took milliseconds, during the pause) for its log.
      await relay?.outcome();
    } catch (err) {
      log("migrate_failed", { migration: migrationId, vm, error: (err as Error).message });
      // Before the guest hears of the abort: it withdraws its standby then, which must no longer be active.
      // On xl the destination relays (xenroam receive), unseen from here: try the rollback whenever the
      // activation could have gone; the server refuses it (409) when it did not.
      const relayed = await relay?.outcome();
      if (relayed !== "refused" && activation && control) {
        await this.rollBack(vm, migrationId, activation, control, mark);
      }
      if (useMethod) await this.abortHeld(vm);
      throw err;
    }
    // Toolstacks that see the moment themselves (xl, XAPI) marked it already.
    if (!timeline.some((m) => m.phase === "running-on-destination")) mark("running-on-destination");
    if (staged) {
      // The secondary left the staging bridge with the VM; only now may radvd send its goodbye RA.
      await this.releaseStaging(staged.site, vm, staged.migrationId);
      await state.update((s) => ({ state: this.withoutVm(s, vm), result: undefined }));
      mark("source-cleaned");
    }
    return {
      migrationId,
      vm,
      from: this.p.host,
      to: destination,
      method: useMethod ? "dual-interface" : "plain",
      ...(fallback ? { fallback: fallback.message, fallbackKind: fallback.kind } : {}),
      ...(staged ? { moa: staged.moa } : {}),
      domid: arrived.domid,
      ...(arrived.pausedMs !== undefined ? { pausedMs: arrived.pausedMs } : {}),
      ...(arrived.arrival ? { arrival: arrived.arrival } : {}),
      startedAt: started,
      timeline,
    };
  }

  /**
   * Every guest off this host to `site`: the toolstack's residents, dealt round-robin over the site's hosts (or
   * `hosts`), `parallel` at a time, each with the method (one staging bridge and radvd for the site, shared)
   * or falling back as `migrate` does. A VM that cannot go stays where it is and is reported; the others go on.
   */
  async evacuate(options: EvacuateOptions): Promise<EvacuationSummary> {
    const { sites, toolstack, host, log, now } = this.p;
    const started = now();
    const known = sites.document().sites.map((s) => s.name);
    if (!known.includes(options.site))
      throw new PluginError(`no site named "${options.site}" in the sites file (sites: ${known.join(", ")})`);
    if (!toolstack.residents)
      throw new PluginError(
        "this toolstack cannot list the VMs this host runs, so xenroam cannot evacuate it; migrate each VM with xenroam migrate",
      );
    const candidates =
      options.hosts && options.hosts.length > 0
        ? [...new Set(options.hosts)]
        : sites.hosts().filter((h) => sites.siteOfHost(h).name === options.site);
    for (const h of candidates) {
      const at = sites.siteOfHost(h).name; // throws, naming the known hosts, for one the file lacks
      if (at !== options.site)
        throw new PluginError(
          `--hosts: ${h} is in site ${at}, not ${options.site}; name hosts of ${options.site}`,
        );
    }
    const destinations = candidates.filter((h) => h !== host);
    if (destinations.length === 0)
      throw new PluginError(
        `site ${options.site} has no host to take the VMs but this one (${host}); name another site with --to`,
      );
    const parallel = options.parallel ?? DEFAULT_EVACUATE_PARALLEL;
    const plan = planEvacuation(await toolstack.residents(host), destinations);
    const progress = options.onProgress ?? (() => {});
    log("evacuate_started", { host, site: options.site, vms: plan.length, destinations, parallel });
    progress(
      plan.length === 0
        ? `nothing runs on ${host}: nothing to evacuate`
        : `evacuating ${plan.length} VM${plan.length === 1 ? "" : "s"} from ${host} to site ${options.site} (${destinations.join(", ")}), ${parallel} at a time`,
    );
    let done = 0;
    const rows = await boundedAll(plan, parallel, async (p) => {
      const begun = now();
      progress(`${p.vm} -> ${p.to}: migrating`);
      let row: EvacuationRow;
      try {
        const report = await this.migrate(p.vm, p.to, {
          ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
          ...(options.method === false ? { method: false } : {}),
        });
        row = rowOf(p, report, now() - begun);
      } catch (err) {
        const stayed = await toolstack
          .domain(p.vm)
          .then((d) => d.host === host)
          .catch(() => false);
        row = {
          vm: p.vm,
          to: p.to,
          outcome: "failed",
          why: printable((err as Error).message, 300),
          stayed,
          elapsedMs: now() - begun,
        };
      }
      done += 1;
      const detail =
        row.outcome === "failed"
          ? `could not go (${row.stayed ? `still runs on ${host}` : "state unknown"}): ${row.why}`
          : `${row.outcome}${row.downtimeMs !== undefined ? `, paused ${Math.round(row.downtimeMs)} ms` : ""}${row.why ? ` (${row.why})` : ""}`;
      progress(`[${done}/${plan.length}] ${p.vm} -> ${p.to}: ${detail}`);
      log("evacuate_vm", { ...row });
      return row;
    });
    const summary: EvacuationSummary = {
      host,
      site: options.site,
      destinations,
      parallel,
      rows,
      elapsedMs: now() - started,
    };
    log("evacuate_done", {
      host,
      vms: rows.length,
      failed: rows.filter((r) => r.outcome === "failed").length,
      ms: summary.elapsedMs,
    });
    return summary;
  }

  /**
   * This Dom0 vouches to the control server for the MoA the guest answered on the staging bridge of its
   * destination site (a locator the guest's MAC does not prove waits for that before it can be activated).
   * Never fails the prepare: without it the move still works, its binding only waits for a proof.
   */
  private async attest(vm: string, migration: string, moa: string, control: ControlRelay): Promise<void> {
    const started = this.p.now();
    try {
      const r = await control.attest?.(vm, moa);
      this.p.log("moa_attested", { migration, vm, moa, ...r, ms: this.p.now() - started });
    } catch (err) {
      this.p.log("moa_attest_failed", { migration, vm, moa, error: printable((err as Error).message) });
    }
  }

  /**
   * Dom0 relays only what it staged, and nothing the guest could not send itself: an activation of this VM
   * (a host's token may relay any VM's), for a MoA inside the destination site's prefix.
   */
  private relayable(
    vm: string,
    migration: string,
    staged: { readonly activation?: SignedActivation },
    destination: string,
  ): SignedActivation | undefined {
    const a = staged.activation;
    if (!a || !this.p.control) return undefined;
    const { prefix } = this.p.sites.siteOfHost(destination);
    if (a.vm === vm && prefixContains(parsePrefix(prefix), parseIpv6(a.locator))) return a;
    this.p.log("binding_relay_refused", { migration, vm, activationVm: a.vm, locator: a.locator, prefix });
    return undefined;
  }

  /**
   * The relay of the guest's activation: `onPaused` starts it (synchronously, never delaying the pause);
   * `outcome` is undefined until then.
   */
  private relayAtPause(
    vm: string,
    migration: string,
    activation: SignedActivation,
    control: ControlRelay,
    mark: (phase: string) => void,
  ): { onPaused: () => void; outcome: () => Promise<RelayOutcome> | undefined } {
    let outcome: Promise<RelayOutcome> | undefined;
    // Rendered now, before anything is paused: at the pause it is one connection and one write.
    const send = control.prepareActivate?.(activation);
    return {
      onPaused: () => {
        outcome ??= relayActivation(
          control,
          activation,
          this.p.log,
          { migration, vm },
          this.p.now,
          send,
        ).then((o) => {
          mark(o === "accepted" ? "binding-relayed" : "binding-relay-failed");
          return o;
        });
      },
      outcome: () => outcome,
    };
  }

  /**
   * A move that failed after the relay: the VM resumed here, so the control server makes its previous
   * locator active again (a fresh binding at the next sequence number: the guest's own copy of the relayed
   * one is stale from then on). Kept when the toolstack says the VM runs elsewhere after all.
   */
  private async rollBack(
    vm: string,
    migration: string,
    activation: SignedActivation,
    control: ControlRelay,
    mark: (phase: string) => void,
  ): Promise<void> {
    const { log, toolstack } = this.p;
    const fields = { migration, vm, locator: activation.locator, seq: activation.seq };
    const where = await toolstack.domain(vm).then(
      (d) => d.host,
      () => undefined,
    );
    if (where !== undefined && where !== this.p.host) {
      log("binding_kept", { ...fields, host: where });
      return;
    }
    if (where === undefined) {
      // Not found here under its name: xl renames its copy away once it has told the destination to go
      // (xl_migrate.c 236-253), so the VM most likely runs there. Keep the binding; the guest re-binds if not.
      log("binding_kept", { ...fields, host: "unknown" });
      return;
    }
    try {
      const back = await control.rollback(vm, activation);
      mark("binding-rolled-back");
      log("binding_rolled_back", { ...fields, active: back.locator, activeSeq: back.seq });
    } catch (err) {
      if ((err as { status?: number }).status === 409) log("binding_not_relayed", fields);
      else log("binding_rollback_failed", { ...fields, error: (err as Error).message });
    }
  }

  async status(): Promise<HostState & { readonly radvdRunning: Readonly<Record<string, boolean>> }> {
    const s = await this.p.state.read();
    const radvdRunning = Object.fromEntries(
      Object.entries(s.staging).map(([site, st]) => [
        site,
        st.radvd !== undefined && this.p.radvd.running(st.radvd),
      ]),
    );
    return { ...s, radvdRunning };
  }

  /** The site's staging bridge, made if need be; its name is recorded (XAPI names its own bridges). */
  private async ensureStagingBridge(site: Site, migration: string): Promise<string> {
    const { log } = this.p;
    const { bridge, created } = await this.p.staging.ensure(site);
    if (created) {
      log("staging_bridge_created", {
        migration,
        bridge,
        gateway: site.gateway.linkLocal,
        mac: site.gateway.mac,
      });
    }
    // Under the site's lock: nobody else changes the site's bridge meanwhile; one recorded already stays so.
    if ((await this.p.state.read()).staging[site.name]?.bridge === bridge) return bridge;
    await this.p.state.update((s) => {
      const st = s.staging[site.name] ?? { bridge, users: [] };
      return {
        state: { ...s, staging: { ...s.staging, [site.name]: { ...st, bridge } } },
        result: undefined,
      };
    });
    return bridge;
  }

  private async ensureStagingRadvd(site: Site, bridge: string, migration: string): Promise<void> {
    const { radvd, state, log } = this.p;
    const current = (await state.read()).staging[site.name];
    if (current?.radvd && radvd.running(current.radvd)) return;
    const ref = await radvd.start(bridge, renderRadvdConf([radvdFor(site, bridge)]));
    await state.update((s) => {
      const st = s.staging[site.name] ?? { bridge, users: [] };
      return {
        state: { ...s, staging: { ...s.staging, [site.name]: { ...st, radvd: ref } } },
        result: undefined,
      };
    });
    log("radvd_started", { migration, bridge, pid: ref.pid, prefix: site.prefix });
  }

  /** Drops one user of a staging bridge; the last one out stops radvd, then removes the bridge. */
  private releaseStaging(siteName: string, vm: string, migration: string): Promise<void> {
    return this.siteExclusive(siteName, `release ${vm}`, () =>
      this.releaseStagingHeld(siteName, vm, migration),
    );
  }

  private async releaseStagingHeld(siteName: string, vm: string, migration: string): Promise<void> {
    const { radvd, state, log } = this.p;
    const last = await state.update((s) => {
      const st = s.staging[siteName];
      if (!st) return { state: s, result: undefined };
      const users = st.users.filter((u) => u !== vm);
      if (users.length > 0)
        return {
          state: { ...s, staging: { ...s.staging, [siteName]: { ...st, users } } },
          result: undefined,
        };
      const { [siteName]: _gone, ...rest } = s.staging;
      return { state: { ...s, staging: rest }, result: st };
    });
    if (!last) return;
    if (last.radvd) await radvd.stop(last.bridge, last.radvd);
    await this.p.staging.remove(siteName, last.bridge);
    log("staging_removed", { migration, bridge: last.bridge });
  }

  private withVm(s: HostState, vm: string, rec: VmState): HostState {
    return { ...s, vms: { ...s.vms, [vm]: rec } };
  }

  private withoutVm(s: HostState, vm: string): HostState {
    const { [vm]: _gone, ...vms } = s.vms;
    return { ...s, vms };
  }

  private withUser(s: HostState, site: Site, vm: string): HostState {
    const st = s.staging[site.name] ?? { bridge: stagingBridge(site.name), users: [] };
    const users = st.users.includes(vm) ? st.users : [...st.users, vm];
    return { ...s, staging: { ...s.staging, [site.name]: { ...st, users } } };
  }
}

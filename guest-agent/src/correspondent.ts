// The correspondent node: keeps the nftables maps HoA→active locator (egress) and locator→HoA (ingress) of
// every VM it talks to. Two feeds: the control server's watch stream (authoritative: the registry's owner of
// each HoA, standby locators before they are active, resumable from a revision), and signed bindings sent
// straight by mobile nodes at step 4 (verified with the server's public key; stale, replayed, expired, forged
// and other-VM bindings refused). Ports only; main.ts wires HTTP, UDP and nft.

import type { KeyObject } from "node:crypto";
import { canonicalIpv6 } from "@xenroam/core";
import {
  BindingBook,
  type BindingRecord,
  bindingShapeProblem,
  type Change,
  type SignedBinding,
  type Standby,
  type Verdict,
} from "@xenroam/control";
import {
  type Binding,
  type Nft,
  renderCorrespondent,
  renderCorrespondentSwitch,
  renderRemoval,
} from "@xenroam/mobility";
import type { Log } from "./core.js";
import { RefusalLog } from "./gate.js";

export interface WatchApi {
  changes(
    since: number,
    waitMs: number,
    signal?: AbortSignal,
  ): Promise<{ revision: number; changes: Change[] }>;
}

export interface CorrespondentPorts {
  readonly nft: Nft;
  readonly watch: WatchApi;
  readonly publicKey: KeyObject;
  readonly log: Log;
  readonly now?: () => number;
  /** Long-poll length and the back-off after a failed poll (tests make them short). */
  readonly pollMs?: number;
  /** How long after a fast switch the whole table is rendered again (default 1 s). */
  readonly canonicalDelayMs?: number;
  readonly retryMs?: number;
  /** How often refused datagrams are logged one by one: the first of each window, then a count. */
  readonly refusalLogMs?: number;
}

interface Entry {
  /** When this entry last changed (a counter): the newer claim on a locator wins. */
  touched: number;
  vm: string;
  active: string | undefined;
  seq: number;
  locators: string[];
  /** The HoA's standbys as the server lists them: a direct binding is taken only for a proven one's seq. */
  standbys: readonly Standby[];
}

export class Correspondent {
  private readonly entries = new Map<string, Entry>();
  private readonly book: BindingBook;
  private revision = 0;
  private applying: Promise<void> = Promise.resolve();
  private dirty = false;
  private rendered = "";
  private ingressKnown = new Set<string>();
  private canonicalTimer: ReturnType<typeof setTimeout> | undefined;
  private clock = 0;

  /** The binding datagram last accepted per HoA, as it came (its copies are recognised without a verify). */
  private readonly verified = new Map<string, SignedBinding>();
  /** Refusals of datagrams, logged a few at a time (a flood of forgeries costs no log line each). */
  private readonly refusals: RefusalLog;

  private refuse(b: SignedBinding, from: string | undefined, reason: string): Verdict {
    this.refusals.refused(
      {
        ...(from ? { from } : {}),
        hoa: typeof b?.hoa === "string" ? b.hoa.slice(0, 45) : undefined,
        seq: typeof b?.seq === "number" ? b.seq : undefined,
        reason,
      },
      (this.ports.now ?? Date.now)(),
    );
    return { ok: false, reason };
  }

  /** Logs the count of refusals not logged one by one (main.ts calls it on a timer). */
  flushRefusals(): void {
    this.refusals.flush();
  }

  constructor(private readonly ports: CorrespondentPorts) {
    this.refusals = new RefusalLog(ports.log, ports.refusalLogMs ?? 10_000);
    // A direct binding is taken only for a locator the stream lists as a current, proven standby of its HoA,
    // at the sequence number issued for it: a withdrawn, reset or re-registered standby's activation is stale.
    this.book = new BindingBook(
      ports.publicKey,
      (hoa) => this.entries.get(hoa)?.vm,
      ports.now,
      (hoa, locator) => this.entries.get(hoa)?.standbys.find((s) => s.locator === locator && s.proven)?.seq,
    );
  }

  /** The revision of the last change seen from the server; a reconnect resumes after it. */
  get lastRevision(): number {
    return this.revision;
  }

  /** Bindings as the maps hold them (HoAs with an active locator). */
  bindings(): Binding[] {
    return [...this.entries]
      .filter(([, e]) => e.active !== undefined)
      .map(([hoa, e]) => ({ hoa, active: e.active as string, locators: e.locators }));
  }

  /** A batch from the watch stream. The server is authoritative, except that a newer direct binding wins. */
  async onChanges(changes: readonly Change[]): Promise<void> {
    for (const { revision, binding } of changes) {
      this.revision = Math.max(this.revision, revision);
      this.merge(binding);
    }
    if (changes.length > 0) await this.apply();
  }

  /** A signed binding received from a mobile node (or relayed). Applied at once when it passes every rule. */
  async onSigned(b: SignedBinding, from?: string): Promise<Verdict> {
    // Nothing that is not a binding's shape reaches a parser or the signature check.
    const shape = bindingShapeProblem(b);
    if (shape) return this.refuse(b, from, `malformed binding: ${shape}`);
    // Mobile nodes repeat each binding (datagrams get lost): a copy of the active one is no news. The very
    // bytes verified before are not verified again (a flood of replayed copies costs a comparison each).
    let current: ReturnType<BindingBook["get"]>;
    try {
      current = this.book.get(b.hoa);
    } catch (err) {
      return this.refuse(b, from, `malformed binding: ${(err as Error).message}`);
    }
    const seen = current && this.verified.get(current.hoa);
    if (
      current &&
      current.seq === b.seq &&
      current.locator === canonicalOrSelf(b.locator) &&
      seen !== undefined &&
      seen.sig === b.sig &&
      seen.vm === b.vm &&
      seen.expiresAt === b.expiresAt
    ) {
      return { ok: true };
    }
    const verdict = this.book.accept(b);
    if (!verdict.ok) return this.refuse(b, from, verdict.reason);
    this.verified.set(canonicalIpv6(b.hoa), b);
    const accepted = this.book.get(b.hoa);
    const entry = accepted && this.entries.get(accepted.hoa);
    if (!accepted || !entry) return verdict;
    const previous = entry.active;
    entry.active = accepted.locator;
    entry.seq = accepted.seq;
    entry.touched = ++this.clock;
    entry.locators = unique([accepted.locator, ...(previous ? [previous] : []), ...entry.locators]);
    entry.standbys = []; // as at the server: an activation ends the standbys registered before it
    const started = Date.now();
    await this.switchFast(accepted.hoa, accepted.locator, entry.locators);
    this.ports.log("binding_accepted", {
      hoa: accepted.hoa,
      locator: accepted.locator,
      seq: accepted.seq,
      applyMs: Date.now() - started,
    });
    return verdict;
  }

  /**
   * Follows the watch stream until `signal` aborts; reconnects with back-off, resuming after the last revision
   * (on any replica of the server: `watch` fails over between them itself, and fails when none answers).
   */
  async follow(signal: AbortSignal): Promise<void> {
    const { watch, log } = this.ports;
    const now = this.ports.now ?? Date.now;
    let failures = 0;
    let lostAt = 0;
    while (!signal.aborted) {
      try {
        const { changes } = await watch.changes(this.revision, this.ports.pollMs ?? 25_000, signal);
        if (failures > 0) log("watch_resumed", { revision: this.revision, downMs: now() - lostAt });
        failures = 0;
        await this.onChanges(changes);
      } catch (err) {
        if (signal.aborted) break;
        if (failures === 0) {
          lostAt = now();
          log("watch_lost", { revision: this.revision, error: (err as Error).message });
        }
        failures += 1;
        const wait = Math.min(5000, (this.ports.retryMs ?? 200) * 2 ** Math.min(failures, 5));
        await new Promise((r) => setTimeout(r, wait));
      }
    }
  }

  /** Shutdown: the maps go with the table. */
  async stop(): Promise<void> {
    clearTimeout(this.canonicalTimer);
    await this.applying;
    await this.ports.nft.apply(renderRemoval());
    this.ports.log("correspondent_stopped", { bindings: this.entries.size });
  }

  private merge(b: BindingRecord): void {
    const entry = this.entries.get(b.hoa);
    // The server's record wins when it is as new as ours; when the HoA changed hands; and when the server has
    // issued past our direct binding and no longer lists its locator (withdrawn, or reset): that binding is
    // no longer the VM's word.
    const superseded =
      entry !== undefined &&
      (b.vm !== entry.vm ||
        ((b.issued ?? b.seq) >= entry.seq &&
          entry.active !== undefined &&
          !b.locators.includes(entry.active)));
    if (!entry || b.seq >= entry.seq || superseded) {
      // A move the datagrams did not bring (lost, or the VM could not send them): the stream did.
      if (b.active && b.seq > (entry?.seq ?? 0)) {
        this.ports.log("binding_learned", { hoa: b.hoa, locator: b.active, seq: b.seq, via: "watch" });
      }
      this.entries.set(b.hoa, {
        touched: ++this.clock,
        vm: b.vm,
        active: b.active,
        seq: b.seq,
        locators: [...b.locators],
        standbys: b.standbys ?? [],
      });
      if (superseded) {
        this.book.forget(b.hoa);
        this.verified.delete(b.hoa);
        this.ports.log("binding_superseded", {
          hoa: b.hoa,
          held: entry.active,
          by: b.active ?? null,
          seq: b.seq,
        });
      }
      if (b.active && b.seq > 0) {
        this.book.seed({ vm: b.vm, hoa: b.hoa, locator: b.active, seq: b.seq, expiresAt: Infinity });
      }
    } else {
      // We already hold a newer direct binding; keep it, and learn the server's standby locators (a later
      // move's standby is registered while the server has not heard of the direct one yet).
      entry.locators = unique([...entry.locators, ...b.locators]);
      entry.standbys = b.standbys ?? [];
    }
  }

  /** One nft transaction at a time, in order; a failure does not stop the ones after it. */
  private enqueue(work: () => Promise<void>): Promise<void> {
    const run = this.applying.then(work);
    this.applying = run.catch(() => undefined);
    return run;
  }

  /** The whole table from the current state, one transaction; bursts coalesce into one. */
  private apply(): Promise<void> {
    this.dirty = true;
    return this.enqueue(async () => {
      if (!this.dirty) return;
      this.dirty = false;
      const bindings = this.consistent();
      const script = renderCorrespondent(bindings);
      if (script === this.rendered) return;
      try {
        await this.ports.nft.apply(script);
      } catch (err) {
        this.dirty = true; // the next change tries again with the whole state
        this.rendered = "";
        throw err;
      }
      this.rendered = script;
      this.ingressKnown = new Set(bindings.flatMap((b) => [b.active, ...b.locators]));
    });
  }

  /**
   * Step 4 at the correspondent: only additions (see renderCorrespondentSwitch), ~3 ms instead of a whole
   * table's ~18 ms; the canonical table follows shortly after, off the critical path.
   */
  private switchFast(hoa: string, locator: string, locators: readonly string[]): Promise<void> {
    const done = this.enqueue(async () => {
      if (!this.rendered) {
        this.dirty = true; // no table yet (or a failed render): the full render below is the switch
        return;
      }
      const fresh = locators.filter((l) => !this.ingressKnown.has(l));
      await this.ports.nft.apply(renderCorrespondentSwitch(hoa, locator, fresh));
      for (const l of fresh) this.ingressKnown.add(l);
      this.rendered = ""; // the kernel is ahead of the last full render: the next one must not be skipped
    });
    clearTimeout(this.canonicalTimer);
    this.canonicalTimer = setTimeout(() => {
      this.apply().catch((err: unknown) => this.ports.log("apply_failed", { error: (err as Error).message }));
    }, this.ports.canonicalDelayMs ?? 1000);
    this.canonicalTimer.unref?.();
    return done.then(() => (this.dirty ? this.apply() : undefined));
  }

  /** A locator claimed by two HoAs (an address reused before the stream caught up) goes to the newer claim. */
  private consistent(): Binding[] {
    const owner = new Map<string, string>();
    const out: Binding[] = [];
    const touched = (hoa: string) => this.entries.get(hoa)?.touched ?? 0;
    const sorted = this.bindings().sort((a, b) => touched(b.hoa) - touched(a.hoa));
    for (const b of sorted) {
      if (owner.has(b.active)) continue;
      const locators = b.locators.filter((l) => !owner.has(l));
      for (const l of [b.active, ...locators]) owner.set(l, b.hoa);
      out.push({ ...b, locators });
    }
    return out;
  }
}

const unique = (xs: readonly string[]) => [...new Set(xs)];

function canonicalOrSelf(text: string): string {
  try {
    return canonicalIpv6(text);
  } catch {
    return text;
  }
}

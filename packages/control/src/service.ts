// The control server's core, without HTTP: the registry (sites and hosts, VMs with their HoA and vif MACs,
// credentials), each HoA's active and standby locators with sequence numbers, a revisioned change stream for
// watchers, and the signing of activations. Storage is the Store port (SQLite by default).

import { createHash, randomBytes, timingSafeEqual, type KeyObject } from "node:crypto";
import {
  canonicalIpv6,
  canonicalMac,
  equalIpv6,
  isLinkLocal,
  parseIpv6,
  parsePrefix,
  prefixContains,
  slaacAddress,
  specialAddressProblem,
} from "@xenroam/core";
import { parseSites, SitesError, type SitesDocument } from "@xenroam/protocol";
import { BindingBook, type SignedBinding, signBinding, signatureValid, type Verdict } from "./bindings.js";
import type { BindingRecord, Change, Principal, Standby, Store, VmRecord } from "./store.js";

export class ControlError extends Error {
  override readonly name = "ControlError";
  constructor(
    readonly status: 400 | 401 | 403 | 404 | 409 | 429,
    message: string,
  ) {
    super(message);
  }
}

function routable(what: string, text: string): string {
  let a: string;
  try {
    a = canonicalIpv6(text);
  } catch (err) {
    throw new ControlError(400, `${what}: ${(err as Error).message}`);
  }
  if (isLinkLocal(parseIpv6(a)))
    throw new ControlError(400, `${what} ${a} is link-local; it must be routable`);
  return a;
}

export interface ServiceOptions {
  readonly store: Store;
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
  /** Admin bearer tokens (from the server's configuration, never from the database). */
  readonly adminTokens?: readonly string[];
  readonly now?: () => number;
  /** How long a pre-signed activation stays valid. */
  readonly activationTtlMs?: number;
  /** Addresses no VM may claim as a locator besides the sites' hosts and gateways: the server's own. */
  readonly reserved?: readonly string[];
}

/** Standbys a VM holds at once (unproven ones included): registering one more drops its oldest. */
export const MAX_STANDBYS = 4;

/** The record with its published locators: the active one, the one before it, and the proven standbys. */
function record(b: Omit<BindingRecord, "locators">): BindingRecord {
  const { previous, ...rest } = b;
  const locators = [
    ...new Set(
      [b.active, previous, ...b.standbys.filter((s) => s.proven).map((s) => s.locator)].filter(
        (l): l is string => l !== undefined,
      ),
    ),
  ];
  return { ...rest, locators, ...(previous !== undefined ? { previous } : {}) };
}

const emptyBinding = (vm: VmRecord): BindingRecord => ({
  hoa: vm.hoa,
  vm: vm.name,
  active: undefined,
  seq: 0,
  issued: 0,
  locators: [],
  standbys: [],
});

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

export const hashToken = (token: string): string => createHash("sha256").update(token).digest("hex");
const newToken = (): string => randomBytes(24).toString("base64url");

function checkName(what: string, name: string): string {
  if (!NAME.test(name)) {
    throw new ControlError(400, `bad ${what} name "${name}": 1-64 characters, letters, digits, _ . -`);
  }
  return name;
}

export class ControlService {
  private readonly store: Store;
  private readonly now: () => number;
  private readonly ttl: number;
  private readonly adminHashes: Buffer[];
  private readonly reserved: Set<string>;
  /** Long polls waiting for a change, each with the revision it waits to pass. */
  private readonly waiters = new Map<(why: "change" | "stop") => void, number>();
  private readonly commitListeners = new Set<(revision: number) => void>();
  /** Changes the store has told of (each wakes the long polls): a read begun after the last one is current. */
  private notified = 0;
  /** Reads of the change stream under way, by `since` and `limit`, each with `notified` as it began. */
  private readonly reads = new Map<
    string,
    { readonly notified: number; readonly page: Promise<{ revision: number; changes: Change[] }> }
  >();
  /**
   * Writes are serialised: each reads, decides and writes without another in between, in this process (this
   * queue) and across the servers sharing the store (its `exclusive`).
   */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly options: ServiceOptions) {
    this.store = options.store;
    this.now = options.now ?? Date.now;
    this.ttl = options.activationTtlMs ?? 10 * 60_000;
    this.adminHashes = (options.adminTokens ?? []).map((t) => Buffer.from(hashToken(t), "hex"));
    this.reserved = new Set((options.reserved ?? []).map((a) => canonicalIpv6(a)));
    // Every change wakes the long polls it concerns: this server's, and other servers' on a shared store.
    this.store.subscribe((revision) => {
      this.notified++;
      for (const [wake, since] of [...this.waiters]) if (revision > since) wake("change");
    });
  }

  /**
   * Whether a VM may hold `locator`, and whether it is proven to be its own; throws (403) when it may never:
   * a special address, the control server's, a host's or a gateway's, outside every registered site prefix,
   * or the SLAAC address another VM's registered MAC makes there. Proven: its interface identifier is the
   * modified EUI-64 of one of this VM's MACs. Unproven in a site whose `locatorProof` is "eui64": refused.
   * `vouched`: an admin names it, or it was proven before, which is proof enough.
   */
  private async claimable(vm: VmRecord, locator: string, vouched = false): Promise<{ proven: boolean }> {
    const addr = parseIpv6(locator);
    const special = specialAddressProblem(addr);
    if (special) throw new ControlError(403, `locator ${locator} is ${special}: never a VM's`);
    if (this.reserved.has(locator))
      throw new ControlError(403, `locator ${locator} is the control server's own address`);
    const doc = await this.store.sites();
    if (!doc) {
      throw new ControlError(
        409,
        "no sites registered yet: a locator must lie in a registered site's prefix (xenroam-control put-sites FILE)",
      );
    }
    const site = doc.sites.find((s) => prefixContains(parsePrefix(s.prefix), addr));
    if (!site) {
      throw new ControlError(
        403,
        `locator ${locator} lies in no registered site's prefix (${doc.sites.map((s) => `${s.name} ${s.prefix}`).join(", ")})`,
      );
    }
    const host = doc.hosts.find((h) => h.address !== undefined && equalIpv6(parseIpv6(h.address), addr));
    if (host) throw new ControlError(403, `locator ${locator} is host ${host.name}'s address`);
    const gateway = doc.sites.find(
      (s) => s.gateway.address !== undefined && equalIpv6(parseIpv6(s.gateway.address), addr),
    );
    if (gateway)
      throw new ControlError(403, `locator ${locator} is site ${gateway.name}'s gateway's address`);
    const prefix = parsePrefix(site.prefix);
    const derives = (v: VmRecord) => v.macs.some((m) => equalIpv6(slaacAddress(prefix, m), addr));
    if (derives(vm)) return { proven: true };
    const other = (await this.store.vms()).find((v) => v.name !== vm.name && derives(v));
    if (other) {
      throw new ControlError(
        403,
        `locator ${locator} is the SLAAC (EUI-64) address a MAC of VM ${other.name} makes in site ${site.name}: reserved for that VM`,
      );
    }
    if (vouched) return { proven: true };
    if (site.locatorProof === "eui64") {
      throw new ControlError(
        403,
        `site ${site.name} takes only locators derived from the VM's registered MACs (EUI-64): ${locator} is not one of ${vm.name}'s (MACs: ${vm.macs.join(", ") || "none registered"})`,
      );
    }
    return { proven: false };
  }

  /** Who a bearer token belongs to, if anyone. */
  async authenticate(token: string): Promise<Principal | undefined> {
    const h = hashToken(token);
    const hb = Buffer.from(h, "hex");
    if (this.adminHashes.some((a) => timingSafeEqual(a, hb))) return { kind: "admin" };
    return this.store.principal(h);
  }

  /** Replaces the sites document (sites, their gateways, and the hosts in each), validated first. */
  async putSites(value: unknown): Promise<SitesDocument> {
    let doc: SitesDocument;
    try {
      doc = parseSites(value, "the sites document").document();
    } catch (err) {
      if (err instanceof SitesError) throw new ControlError(400, err.message);
      throw err;
    }
    await this.serial(() => this.store.putSites(doc));
    return doc;
  }

  async sites(): Promise<SitesDocument> {
    const doc = await this.store.sites();
    if (!doc)
      throw new ControlError(404, "no sites registered yet: PUT /v1/sites (xenroam-control sites FILE)");
    return doc;
  }

  /**
   * Registers (or re-registers) a VM with its HoA and vif MACs, and issues its token (re-registering issues
   * a new one and revokes the old). A HoA belongs to one VM.
   */
  async registerVm(
    nameText: string,
    hoaText: string,
    macTexts: readonly string[] = [],
  ): Promise<VmRecord & { token: string }> {
    const name = checkName("VM", nameText);
    const hoa = routable("HoA", hoaText);
    const special = specialAddressProblem(parseIpv6(hoa));
    if (special) throw new ControlError(400, `HoA ${hoa} is ${special}: never a VM's home address`);
    const macs = macTexts.map((m) => {
      try {
        return canonicalMac(m);
      } catch (err) {
        throw new ControlError(400, `MAC ${m}: ${(err as Error).message}`);
      }
    });
    return this.serial(async () => {
      const owner = await this.store.vmByHoa(hoa);
      if (owner && owner.name !== name) {
        throw new ControlError(409, `HoA ${hoa} already belongs to ${owner.name}`);
      }
      const holder = await this.store.hoaOfLocator(hoa);
      if (holder && holder !== hoa) throw new ControlError(409, `${hoa} is a locator of HoA ${holder}`);
      // A MAC proves the locators it makes (EUI-64): it belongs to one VM.
      const sharing = (await this.store.vms()).find(
        (v) => v.name !== name && v.macs.some((m) => macs.includes(m)),
      );
      if (sharing) {
        throw new ControlError(
          409,
          `MAC ${sharing.macs.find((m) => macs.includes(m))} is already VM ${sharing.name}'s`,
        );
      }
      const previous = await this.store.vm(name);
      const vm = { name, hoa, macs };
      await this.store.putVm(vm);
      const current = await this.store.binding(hoa);
      if (!current || current.vm !== name || previous?.hoa !== hoa) {
        // A HoA that changes hands starts past everything signed for its former owner: correspondents take
        // the new record over any direct binding they hold, and no old activation is newer than it.
        const seq = current ? current.issued + 1 : 0;
        await this.commit({ ...emptyBinding(vm), seq, issued: seq });
      }
      const token = newToken();
      await this.store.putCredential(hashToken(token), { kind: "vm", name });
      return { ...vm, token };
    });
  }

  async vm(name: string): Promise<VmRecord> {
    const vm = await this.store.vm(name);
    if (!vm) throw new ControlError(404, `no VM named ${name}`);
    return vm;
  }

  async vms(): Promise<VmRecord[]> {
    return this.store.vms();
  }

  /** Issues a token for a host or a correspondent (re-issuing revokes the old one). */
  async registerPeer(nameText: string): Promise<{ name: string; token: string }> {
    const name = checkName("peer", nameText);
    const token = newToken();
    await this.serial(() => this.store.putCredential(hashToken(token), { kind: "peer", name }));
    return { name, token };
  }

  /**
   * Step 2: a VM registers the MoA it just took as a standby locator, and receives a pre-signed activation
   * of it at the next sequence number (issued to this registration only) to hand out at step 4 with no round
   * trip to this server. Correspondents learn a proven standby (they accept packets from it from now on); an
   * unproven one waits for a host's or an admin's attestation. Registering a standby again issues a new
   * activation: the older one is stale.
   */
  async registerStandby(vmName: string, locatorText: string): Promise<SignedBinding> {
    const locator = routable("locator", locatorText);
    return this.serial(async () => {
      const vm = await this.store.vm(vmName);
      if (!vm) throw new ControlError(404, `no VM named ${vmName}`);
      if (locator === vm.hoa) throw new ControlError(400, `the locator must differ from the HoA ${vm.hoa}`);
      const holder = (await this.store.hoaOfLocator(locator)) ?? (await this.store.vmByHoa(locator))?.hoa;
      if (holder !== undefined && holder !== vm.hoa) {
        throw new ControlError(409, `locator ${locator} is already claimed by HoA ${holder}`);
      }
      const current = (await this.store.binding(vm.hoa)) ?? emptyBinding(vm);
      // Proven once stays proven: the active locator, the one before it (the guest takes it back after a
      // failed move), or a standby attested before.
      const held =
        locator === current.active ||
        locator === current.previous ||
        current.standbys.some((s) => s.locator === locator && s.proven);
      const { proven } = await this.claimable(vm, locator, held);
      const seq = current.issued + 1;
      const expiresAt = this.now() + this.ttl;
      const others = current.standbys.filter((s) => s.locator !== locator);
      const standbys = [
        ...others.slice(Math.max(0, others.length - (MAX_STANDBYS - 1))),
        { locator, seq, proven, expiresAt },
      ];
      await this.commit(record({ ...current, issued: seq, standbys }));
      return signBinding(this.options.privateKey, { vm: vm.name, hoa: vm.hoa, locator, seq, expiresAt });
    });
  }

  /**
   * A host (the source Dom0, which saw the guest answer with this MoA at a prepare) or an admin vouches that
   * a VM's unproven standby is the VM's: it is published, and activated at once when the VM asked for that
   * while it waited. Idempotent.
   */
  async attest(
    vmName: string,
    locatorText: string,
  ): Promise<{ locator: string; seq: number; attested: boolean; activated: boolean; revision?: number }> {
    const locator = routable("locator", locatorText);
    return this.serial(async () => {
      const vm = await this.store.vm(vmName);
      if (!vm) throw new ControlError(404, `no VM named ${vmName}`);
      const current = await this.store.binding(vm.hoa);
      const standby = current?.standbys.find((s) => s.locator === locator);
      // Attested before and activated since (or proven by its MAC and activated): nothing to do.
      if (current?.active === locator && !standby)
        return { locator, seq: current.seq, attested: false, activated: false };
      if (!current || !standby) {
        throw new ControlError(
          404,
          `${locator} is not a registered standby of ${vm.name}: the VM registers it first (at its prepare)`,
        );
      }
      if (standby.proven) return { locator, seq: standby.seq, attested: false, activated: false };
      const holder = (await this.store.hoaOfLocator(locator)) ?? (await this.store.vmByHoa(locator))?.hoa;
      if (holder !== undefined && holder !== vm.hoa) {
        throw new ControlError(409, `locator ${locator} is already claimed by HoA ${holder}`);
      }
      // Two VMs waiting for a proof of one locator (one saw the other's DAD on a shared staging bridge): the
      // first to register it is the one that took it; a later claim is not vouched for.
      const earlier = (await this.store.standbyClaims(locator)).find(
        (c) =>
          c.hoa !== vm.hoa &&
          (c.standby.expiresAt ?? 0) > this.now() &&
          (c.standby.expiresAt ?? 0) < (standby.expiresAt ?? Infinity),
      );
      if (earlier) {
        throw new ControlError(
          409,
          `locator ${locator} was registered first by HoA ${earlier.hoa}, still waiting for its proof: not attested for ${vm.name}`,
        );
      }
      await this.claimable(vm, locator); // the sites may have changed since it was registered
      const live = (standby.expiresAt ?? Infinity) > this.now();
      if (standby.requested && live && standby.seq > current.seq) {
        const revision = await this.commit(this.activated(current, locator, standby.seq));
        return { locator, seq: standby.seq, attested: true, activated: true, revision };
      }
      const standbys = current.standbys.map((s) => (s === standby ? { ...s, proven: true } : s));
      const revision = await this.commit(record({ ...current, standbys }));
      return { locator, seq: standby.seq, attested: true, activated: false, revision };
    });
  }

  /**
   * An aborted prepare: its standby locator leaves the binding, so correspondents stop accepting packets from
   * it, and the sequence advances, so its activation is stale everywhere even if it is registered again.
   * Never the active locator. Idempotent: a locator that is not listed is answered `withdrawn: false`.
   */
  async withdrawStandby(vmName: string, locatorText: string): Promise<{ withdrawn: boolean }> {
    const locator = routable("locator", locatorText);
    return this.serial(async () => {
      const vm = await this.store.vm(vmName);
      if (!vm) throw new ControlError(404, `no VM named ${vmName}`);
      const current = await this.store.binding(vm.hoa);
      const listed =
        current?.locators.includes(locator) || current?.standbys.some((s) => s.locator === locator);
      if (!current || !listed) return { withdrawn: false };
      if (current.active === locator) {
        throw new ControlError(
          409,
          `${locator} is the active locator of ${vm.name}; only standbys can be withdrawn`,
        );
      }
      // A withdrawn locator is no longer the VM's: no rollback may return to it.
      const { previous, ...rest } = current;
      await this.commit(
        record({
          ...rest,
          issued: current.issued + 1,
          standbys: current.standbys.filter((s) => s.locator !== locator),
          ...(previous && previous !== locator ? { previous } : {}),
        }),
      );
      return { withdrawn: true };
    });
  }

  /**
   * An admin's answer to a binding gone wrong (a hijacked or stuck HoA): every standby and the rollback
   * target go, the sequence advances past everything issued (every activation signed before is stale at the
   * server and at every correspondent), and the HoA is bound to `to` when given (an admin's word is the
   * proof) or to nothing until the VM registers and activates a locator again.
   */
  async reset(
    vmName: string,
    toText?: string,
  ): Promise<{ binding: BindingRecord; activation?: SignedBinding }> {
    const to = toText === undefined ? undefined : routable("locator", toText);
    return this.serial(async () => {
      const vm = await this.store.vm(vmName);
      if (!vm) throw new ControlError(404, `no VM named ${vmName}`);
      const current = (await this.store.binding(vm.hoa)) ?? emptyBinding(vm);
      if (to !== undefined) {
        if (to === vm.hoa) throw new ControlError(400, `the locator must differ from the HoA ${vm.hoa}`);
        const holder = (await this.store.hoaOfLocator(to)) ?? (await this.store.vmByHoa(to))?.hoa;
        if (holder !== undefined && holder !== vm.hoa) {
          throw new ControlError(409, `locator ${to} is already claimed by HoA ${holder}`);
        }
        await this.claimable(vm, to, true);
      }
      const seq = current.issued + 1;
      const binding = record({ hoa: vm.hoa, vm: vm.name, active: to, seq, issued: seq, standbys: [] });
      await this.commit(binding);
      const activation =
        to === undefined
          ? undefined
          : signBinding(this.options.privateKey, {
              vm: vm.name,
              hoa: vm.hoa,
              locator: to,
              seq,
              expiresAt: this.now() + this.ttl,
            });
      return { binding, ...(activation ? { activation } : {}) };
    });
  }

  /**
   * Step 4: a signed activation arrives (from the VM, or relayed); accepted only under every rule, and only
   * for the locator's current, proven registration. A copy of the binding that is active already (Dom0
   * relayed it at the pause, then the VM sent its own) is refused like any replay, changing nothing, and
   * flagged `alreadyActive` so its sender knows it took effect. One for a standby still waiting for its
   * proof is remembered (`awaitingProof`): the attestation activates it.
   */
  async activate(
    b: SignedBinding,
  ): Promise<Verdict & { revision?: number; alreadyActive?: boolean; awaitingProof?: boolean }> {
    return this.serial(async () => {
      const current = await this.store.binding(canonicalIpv6Safe(b.hoa));
      const book = new BindingBook(
        this.options.publicKey,
        (hoa) => (current?.hoa === hoa ? current.vm : undefined),
        this.now,
        (hoa, locator) =>
          current?.hoa === hoa
            ? current.standbys.find((s) => s.locator === locator && s.proven)?.seq
            : undefined,
      );
      if (current && current.seq > 0 && current.active) {
        // Seed the book with what is active, so replays of older bindings are refused.
        book.seed({
          vm: current.vm,
          hoa: current.hoa,
          locator: current.active,
          seq: current.seq,
          expiresAt: Infinity,
        });
      }
      const verdict = book.accept(b);
      if (!verdict.ok) {
        const locator = canonicalIpv6Safe(b.locator);
        const genuine = () => current?.vm === b.vm && signatureValid(this.options.publicKey, b);
        if (current?.active === locator && current.seq === b.seq && genuine())
          return { ...verdict, alreadyActive: true };
        const waiting = current?.standbys.find((s) => s.locator === locator && !s.proven && s.seq === b.seq);
        if (current && waiting && b.seq > current.seq && b.expiresAt > this.now() && genuine()) {
          if (!waiting.requested) {
            const standbys = current.standbys.map((s) => (s === waiting ? { ...s, requested: true } : s));
            await this.commit(record({ ...current, standbys }));
          }
          return {
            ok: false,
            awaitingProof: true,
            reason: `locator ${locator} is not proven to be ${current.vm}'s yet: it is activated once a host of the sites (the source Dom0 at a prepare) or an admin attests it (xenroam-control attest ${current.vm} ${locator})`,
          };
        }
        return verdict;
      }
      if (!current) return { ok: false, reason: "HoA is not registered" };
      const revision = await this.commit(this.activated(current, canonicalIpv6(b.locator), b.seq));
      return { ok: true, revision };
    });
  }

  /** The record once `locator` is active at `seq`: the one before it kept for packets in flight, no standbys. */
  private activated(current: BindingRecord, locator: string, seq: number): BindingRecord {
    const previous = current.active && current.active !== locator ? current.active : undefined;
    return record({
      hoa: current.hoa,
      vm: current.vm,
      active: locator,
      seq,
      issued: Math.max(current.issued, seq),
      standbys: [],
      ...(previous ? { previous } : {}),
    });
  }

  /**
   * Undoes an activation relayed for a move that then failed (the VM resumed where it was): the locator that
   * activation replaced becomes active again, in a fresh binding signed at the next sequence number, so the
   * VM's own copy of the undone activation is stale everywhere. Only that exact activation (locator and
   * sequence number) can be undone, only while it is the active one, only back to the locator it replaced,
   * and once: a rollback leaves nothing to roll back to. With `proof`, the caller (a host) must present that
   * activation itself, signed by this server: only who held it (the guest and the Dom0s it was handed to)
   * may undo it.
   */
  async rollback(
    vmName: string,
    undo: { readonly locator: string; readonly seq: number } | SignedBinding,
    options: { readonly proof?: boolean } = {},
  ): Promise<SignedBinding> {
    const locator = routable("locator", undo.locator);
    if (!Number.isSafeInteger(undo.seq) || undo.seq < 1)
      throw new ControlError(400, "seq must be a positive whole number");
    if (
      options.proof &&
      !("sig" in undo && undo.vm === vmName && signatureValid(this.options.publicKey, undo))
    ) {
      throw new ControlError(
        403,
        `a host may undo only an activation of ${vmName} it holds: send that signed binding`,
      );
    }
    return this.serial(async () => {
      const vm = await this.store.vm(vmName);
      if (!vm) throw new ControlError(404, `no VM named ${vmName}`);
      const current = await this.store.binding(vm.hoa);
      if (current?.vm !== vm.name || current.active !== locator || current.seq !== undo.seq) {
        throw new ControlError(
          409,
          `nothing to roll back: the active binding of ${vm.name} is ${current?.active ?? "none"} at sequence ${current?.seq ?? 0}, not ${locator} at ${undo.seq}`,
        );
      }
      const previous = current.previous;
      if (!previous) {
        throw new ControlError(
          409,
          `${vm.name} has no previous locator to return to (or it was rolled back already)`,
        );
      }
      const binding = signBinding(this.options.privateKey, {
        vm: vm.name,
        hoa: vm.hoa,
        locator: previous,
        seq: current.issued + 1,
        expiresAt: this.now() + this.ttl,
      });
      // The undone locator stays listed (still a standby of the VM, its activation now stale) until the VM
      // withdraws it.
      const undone: Standby = { locator, seq: current.seq, proven: true };
      await this.commit(
        record({
          hoa: vm.hoa,
          vm: vm.name,
          active: previous,
          seq: binding.seq,
          issued: binding.seq,
          standbys: [...current.standbys.filter((s) => s.locator !== locator), undone],
        }),
      );
      return binding;
    });
  }

  /** Whether a peer is one of the hosts of the sites document (hosts may roll back what they relayed). */
  async isHost(name: string): Promise<boolean> {
    return (await this.store.sites())?.hosts.some((h) => h.name === name) ?? false;
  }

  async binding(hoa: string): Promise<BindingRecord> {
    const b = await this.store.binding(routable("HoA", hoa));
    if (!b) throw new ControlError(404, `no binding for ${hoa}`);
    return b;
  }

  /** Changes after `since`; waits up to `waitMs` for one when there are none yet (long poll). */
  async changes(
    since: number,
    waitMs = 0,
    limit = 500,
    signal?: AbortSignal,
  ): Promise<{ revision: number; changes: Change[] }> {
    const deadline = Date.now() + waitMs;
    let stopping = signal?.aborted ?? false;
    for (;;) {
      // Listening before reading: a change committed while the page is read wakes this poll, never slips by.
      let wake: (why: "change" | "stop") => void = () => {};
      const woken = new Promise<"change" | "stop" | "timeout">((resolve) => (wake = resolve));
      // The asker gone (its connection closed): it ends as at a stop, and frees what it held at once.
      const gone = () => wake("stop");
      signal?.addEventListener("abort", gone, { once: true });
      if (waitMs > 0 && !stopping) this.waiters.set(wake, since);
      try {
        const { revision, changes } = await this.page(since, limit);
        const left = deadline - Date.now();
        if (changes.length > 0 || left <= 0 || stopping) {
          const last = changes.at(-1)?.revision ?? 0;
          // With a full page, the watcher resumes after its last change; otherwise it is up to date.
          return { revision: changes.length === limit && last ? last : Math.max(revision, last), changes };
        }
        let timer: NodeJS.Timeout | undefined;
        const timeout = new Promise<"timeout">(
          (resolve) => (timer = setTimeout(() => resolve("timeout"), left)),
        );
        // Woken for nothing new (a store that lost track says anything may have changed): reads and waits on.
        stopping = (await Promise.race([woken, timeout])) === "stop";
        clearTimeout(timer);
      } finally {
        this.waiters.delete(wake);
        signal?.removeEventListener("abort", gone);
      }
    }
  }

  /**
   * The revision and the changes after `since`, read once for every caller that asks the same while no change
   * is told of: a change wakes every long poll at once, and a thousand of them share one read of the store
   * instead of making a thousand. Safe for a poll that listens before it asks: a change told of after the read
   * began wakes it to read again, and one told of before is in the read (it began after).
   */
  private page(since: number, limit: number): Promise<{ revision: number; changes: Change[] }> {
    const key = `${since}/${limit}`;
    const shared = this.reads.get(key);
    if (shared && shared.notified === this.notified) return shared.page;
    const read = {
      notified: this.notified,
      page: (async () => {
        // The revision is read before the changes: one committed in between is in the page, so the watcher
        // never resumes past a change it did not get.
        const revision = await this.store.revision();
        return { revision, changes: await this.store.changesSince(since, limit) };
      })(),
    };
    this.reads.set(key, read);
    const done = () => {
      if (this.reads.get(key) === read) this.reads.delete(key);
    };
    read.page.then(done, done);
    return read.page;
  }

  /** Wakes every long poll (shutdown): they answer with what they have. */
  wakeWatchers(): void {
    for (const wake of [...this.waiters.keys()]) wake("stop");
  }

  /** Calls `listener` with each revision this server commits, before its watchers wake (the metrics' fan-out). */
  onCommit(listener: (revision: number) => void): () => void {
    this.commitListeners.add(listener);
    return () => this.commitListeners.delete(listener);
  }

  private async commit(b: BindingRecord): Promise<number> {
    const revision = await this.store.putBinding(b);
    for (const l of this.commitListeners) l(revision);
    return revision;
  }

  private serial<T>(work: () => Promise<T>): Promise<T> {
    const exclusive = () => this.store.exclusive(work);
    const run = this.queue.then(exclusive, exclusive);
    this.queue = run.catch(() => undefined);
    return run;
  }
}

function canonicalIpv6Safe(text: string): string {
  try {
    return canonicalIpv6(text);
  } catch {
    return text;
  }
}

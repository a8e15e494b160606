// The control server's core, without HTTP: the registry (sites and hosts, VMs with their HoA and vif MACs,
// credentials), each HoA's active and standby locators with sequence numbers, a revisioned change stream for
// watchers, and the signing of activations. Storage is the Store port (SQLite by default).

import { createHash, randomBytes, timingSafeEqual, type KeyObject } from "node:crypto";
import { canonicalIpv6, canonicalMac, isLinkLocal, parseIpv6 } from "@xenroam/core";
import { parseSites, SitesError, type SitesDocument } from "@xenroam/protocol";
import { BindingBook, type SignedBinding, signBinding, signatureValid, type Verdict } from "./bindings.js";
import type { BindingRecord, Change, Principal, Store, VmRecord } from "./store.js";

export class ControlError extends Error {
  override readonly name = "ControlError";
  constructor(
    readonly status: 400 | 401 | 403 | 404 | 409,
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
}

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
  private readonly waiters = new Set<() => void>();
  /** Writes are serialised: each reads, decides and writes without another in between. */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly options: ServiceOptions) {
    this.store = options.store;
    this.now = options.now ?? Date.now;
    this.ttl = options.activationTtlMs ?? 10 * 60_000;
    this.adminHashes = (options.adminTokens ?? []).map((t) => Buffer.from(hashToken(t), "hex"));
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
      const previous = await this.store.vm(name);
      const vm = { name, hoa, macs };
      await this.store.putVm(vm);
      const current = await this.store.binding(hoa);
      if (!current || current.vm !== name || previous?.hoa !== hoa) {
        await this.commit({ hoa, vm: name, active: undefined, seq: current?.seq ?? 0, locators: [] });
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
   * Step 2: a VM registers the MoA it just took as a standby locator. Correspondents learn it (they accept
   * packets from it from now on); the VM receives a pre-signed activation to hand out at step 4 with no
   * round trip to this server.
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
      const current = await this.store.binding(vm.hoa);
      const seq = current?.seq ?? 0;
      const locators = [...new Set([...(current?.locators ?? []), locator])];
      if (!current || current.locators.length !== locators.length) {
        await this.commit({
          hoa: vm.hoa,
          vm: vm.name,
          active: current?.active,
          seq,
          locators,
          ...(current?.previous ? { previous: current.previous } : {}),
        });
      }
      return signBinding(this.options.privateKey, {
        vm: vm.name,
        hoa: vm.hoa,
        locator,
        seq: seq + 1,
        expiresAt: this.now() + this.ttl,
      });
    });
  }

  /**
   * An aborted prepare: its standby locator leaves the binding, so correspondents stop accepting packets from
   * it. Never the active locator. Idempotent: a locator that is not listed is answered `withdrawn: false`.
   */
  async withdrawStandby(vmName: string, locatorText: string): Promise<{ withdrawn: boolean }> {
    const locator = routable("locator", locatorText);
    return this.serial(async () => {
      const vm = await this.store.vm(vmName);
      if (!vm) throw new ControlError(404, `no VM named ${vmName}`);
      const current = await this.store.binding(vm.hoa);
      if (!current?.locators.includes(locator)) return { withdrawn: false };
      if (current.active === locator) {
        throw new ControlError(
          409,
          `${locator} is the active locator of ${vm.name}; only standbys can be withdrawn`,
        );
      }
      // A withdrawn locator is no longer the VM's: no rollback may return to it.
      const { previous, ...rest } = current;
      await this.commit({
        ...rest,
        locators: current.locators.filter((l) => l !== locator),
        ...(previous && previous !== locator ? { previous } : {}),
      });
      return { withdrawn: true };
    });
  }

  /**
   * Step 4: a signed activation arrives (from the VM, or relayed); accepted only under every rule. A copy of
   * the binding that is active already (Dom0 relayed it at the pause, then the VM sent its own) is refused
   * like any replay, changing nothing, and flagged `alreadyActive` so its sender knows it took effect.
   */
  async activate(b: SignedBinding): Promise<Verdict & { revision?: number; alreadyActive?: boolean }> {
    return this.serial(async () => {
      const current = await this.store.binding(canonicalIpv6Safe(b.hoa));
      const book = new BindingBook(
        this.options.publicKey,
        (hoa) => (current?.hoa === hoa ? current.vm : undefined),
        this.now,
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
        const active =
          current?.active !== undefined &&
          current.vm === b.vm &&
          current.seq === b.seq &&
          current.active === canonicalIpv6Safe(b.locator) &&
          signatureValid(this.options.publicKey, b);
        return active ? { ...verdict, alreadyActive: true } : verdict;
      }
      if (!current) return { ok: false, reason: "HoA is not registered" };
      const locator = canonicalIpv6(b.locator);
      // A pre-signed activation is good only while its standby is registered: a withdrawn one (an aborted
      // prepare) cannot be activated later, by the VM or by anyone holding a copy.
      if (locator !== current.active && !current.locators.includes(locator)) {
        return {
          ok: false,
          reason: `locator ${locator} is not registered for ${current.hoa} (withdrawn, or never registered as a standby)`,
        };
      }
      // The active locator, the one before it (packets still in flight), and no older ones.
      const previous = current.active && current.active !== locator ? current.active : undefined;
      const locators = [locator, ...(previous ? [previous] : [])];
      const revision = await this.commit({
        hoa: current.hoa,
        vm: current.vm,
        active: locator,
        seq: b.seq,
        locators,
        ...(previous ? { previous } : {}),
      });
      return { ok: true, revision };
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
        seq: current.seq + 1,
        expiresAt: this.now() + this.ttl,
      });
      // The undone locator stays listed (still a standby of the VM) until the VM withdraws it.
      await this.commit({
        hoa: vm.hoa,
        vm: vm.name,
        active: previous,
        seq: binding.seq,
        locators: [...new Set([previous, ...current.locators])],
      });
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
  async changes(since: number, waitMs = 0, limit = 500): Promise<{ revision: number; changes: Change[] }> {
    let changes = await this.store.changesSince(since, limit);
    if (changes.length === 0 && waitMs > 0) {
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          this.waiters.delete(done);
          resolve();
        };
        const timer = setTimeout(done, waitMs);
        this.waiters.add(done);
      });
      changes = await this.store.changesSince(since, limit);
    }
    const last = changes.at(-1)?.revision;
    // With a full page, the watcher resumes after its last change; otherwise it is up to date.
    return { revision: changes.length === limit && last ? last : await this.store.revision(), changes };
  }

  /** Wakes every long poll (shutdown): they answer with what they have. */
  wakeWatchers(): void {
    for (const w of [...this.waiters]) w();
  }

  private async commit(b: BindingRecord): Promise<number> {
    const revision = await this.store.putBinding(b);
    this.wakeWatchers();
    return revision;
  }

  private serial<T>(work: () => Promise<T>): Promise<T> {
    const run = this.queue.then(work, work);
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

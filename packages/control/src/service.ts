// The control server's core, without HTTP: VMs and their HoAs, each HoA's active and standby locators with
// sequence numbers, a revisioned change log for watchers, and the signing of activations. Storage is a port
// (MemoryStore here; a database later), so nothing of a backend leaks into the API.

import type { KeyObject } from "node:crypto";
import { canonicalIpv6, isLinkLocal, parseIpv6 } from "@xenroam/core";
import { BindingBook, type SignedBinding, signBinding, type Verdict } from "./bindings.js";

export interface VmRecord {
  readonly name: string;
  readonly hoa: string;
}

export interface BindingRecord {
  readonly hoa: string;
  readonly vm: string;
  readonly active: string | undefined;
  /** Sequence number of the active binding (0: none yet). */
  readonly seq: number;
  /** Every locator registered for the HoA (the active one included): correspondents accept packets from all. */
  readonly locators: readonly string[];
}

export interface Change {
  readonly revision: number;
  readonly binding: BindingRecord;
}

/** Storage port. Every write returns the revision it produced; revisions only grow. */
export interface Store {
  vm(name: string): Promise<VmRecord | undefined>;
  vmByHoa(hoa: string): Promise<VmRecord | undefined>;
  putVm(vm: VmRecord): Promise<void>;
  binding(hoa: string): Promise<BindingRecord | undefined>;
  putBinding(b: BindingRecord): Promise<number>;
  changesSince(revision: number, limit: number): Promise<Change[]>;
  revision(): Promise<number>;
}

export class MemoryStore implements Store {
  private readonly vms = new Map<string, VmRecord>();
  private readonly bindings = new Map<string, BindingRecord>();
  private readonly log: Change[] = [];
  async vm(name: string) {
    return this.vms.get(name);
  }
  async vmByHoa(hoa: string) {
    return [...this.vms.values()].find((v) => v.hoa === hoa);
  }
  async putVm(vm: VmRecord) {
    this.vms.set(vm.name, vm);
  }
  async binding(hoa: string) {
    return this.bindings.get(hoa);
  }
  async putBinding(b: BindingRecord) {
    this.bindings.set(b.hoa, b);
    const revision = this.log.length + 1;
    this.log.push({ revision, binding: b });
    return revision;
  }
  async changesSince(revision: number, limit: number) {
    return this.log.filter((c) => c.revision > revision).slice(0, limit);
  }
  async revision() {
    return this.log.length;
  }
}

export class ControlError extends Error {
  override readonly name = "ControlError";
  constructor(
    readonly status: 400 | 403 | 404 | 409,
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
  readonly now?: () => number;
  /** How long a pre-signed activation stays valid. */
  readonly activationTtlMs?: number;
}

export class ControlService {
  private readonly store: Store;
  private readonly now: () => number;
  private readonly ttl: number;
  private readonly waiters = new Set<() => void>();

  constructor(private readonly options: ServiceOptions) {
    this.store = options.store;
    this.now = options.now ?? Date.now;
    this.ttl = options.activationTtlMs ?? 10 * 60_000;
  }

  /** Registers (or re-registers) a VM and its HoA. A HoA belongs to one VM. */
  async registerVm(name: string, hoaText: string): Promise<VmRecord> {
    if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(name)) throw new ControlError(400, `bad VM name "${name}"`);
    const hoa = routable("HoA", hoaText);
    const owner = await this.store.vmByHoa(hoa);
    if (owner && owner.name !== name)
      throw new ControlError(409, `HoA ${hoa} already belongs to ${owner.name}`);
    const vm = { name, hoa };
    await this.store.putVm(vm);
    if (!(await this.store.binding(hoa))) {
      await this.commit({ hoa, vm: name, active: undefined, seq: 0, locators: [] });
    }
    return vm;
  }

  /**
   * Step 2: a VM registers the MoA it just took as a standby locator. Correspondents learn it (they accept
   * packets from it from now on); the VM receives a pre-signed activation to hand out at step 4 with no
   * round trip to this server.
   */
  async registerStandby(vmName: string, locatorText: string): Promise<SignedBinding> {
    const vm = await this.store.vm(vmName);
    if (!vm) throw new ControlError(404, `no VM named ${vmName}`);
    const locator = routable("locator", locatorText);
    const current = await this.store.binding(vm.hoa);
    const locators = [...new Set([...(current?.locators ?? []), locator])];
    await this.commit({
      hoa: vm.hoa,
      vm: vm.name,
      active: current?.active,
      seq: current?.seq ?? 0,
      locators,
    });
    return signBinding(this.options.privateKey, {
      vm: vm.name,
      hoa: vm.hoa,
      locator,
      seq: (current?.seq ?? 0) + 1,
      expiresAt: this.now() + this.ttl,
    });
  }

  /** Step 4: a signed activation arrives (from the VM, or relayed); accepted only under every rule. */
  async activate(b: SignedBinding): Promise<Verdict & { revision?: number }> {
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
    if (!verdict.ok || !current) return verdict.ok ? { ok: false, reason: "HoA is not registered" } : verdict;
    const locator = canonicalIpv6(b.locator);
    const locators = [...new Set([...current.locators, locator])];
    const revision = await this.commit({ ...current, active: locator, seq: b.seq, locators });
    return { ok: true, revision };
  }

  async binding(hoa: string): Promise<BindingRecord | undefined> {
    return this.store.binding(routable("HoA", hoa));
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
    return { revision: await this.store.revision(), changes };
  }

  private async commit(b: BindingRecord): Promise<number> {
    const revision = await this.store.putBinding(b);
    for (const w of [...this.waiters]) w();
    return revision;
  }
}

function canonicalIpv6Safe(text: string): string {
  try {
    return canonicalIpv6(text);
  } catch {
    return text;
  }
}

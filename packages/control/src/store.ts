// The control server's storage port and its in-memory implementation (tests, `--database :memory:`).
// SQLite (sqlite.ts) is the default backend, etcd (etcd.ts) the one several servers share. Nothing here
// leaks a backend into the service or the HTTP API.

import type { SitesDocument } from "@xenroam/protocol";

export interface VmRecord {
  readonly name: string;
  readonly hoa: string;
  /** The MACs of the VM's vifs (primary first), as the admin registered them; informational. */
  readonly macs: readonly string[];
}

/** A locator a VM registered for its next move, with the sequence number its activation was issued. */
export interface Standby {
  readonly locator: string;
  /** The sequence number of the one activation issued for this registration: any other is stale. */
  readonly seq: number;
  /**
   * Whether the locator is proven to be the VM's (its interface identifier derives from a registered MAC,
   * or a host or an admin attested it). Unproven standbys are not published and cannot be activated.
   */
  readonly proven: boolean;
  /** The VM asked for its activation before it was proven: the attestation activates it. */
  readonly requested?: boolean;
  /** When its activation expires (ms since the epoch); also orders claims of one locator by two VMs. */
  readonly expiresAt?: number;
}

export interface BindingRecord {
  readonly hoa: string;
  readonly vm: string;
  readonly active: string | undefined;
  /** Sequence number of the active binding (0: none yet). */
  readonly seq: number;
  /**
   * The highest sequence number issued for this HoA (an activation signed, a standby withdrawn, a reset):
   * every new registration takes the next one, so an activation issued before is stale once it is not the
   * current standby's.
   */
  readonly issued: number;
  /**
   * Locators correspondents accept packets from for this HoA: the active one, the one before it (packets
   * still in flight after a move), and proven standbys registered since.
   */
  readonly locators: readonly string[];
  /** Standbys registered since the last activation: a correspondent takes a direct binding only for these. */
  readonly standbys: readonly Standby[];
  /**
   * The locator that was active before `active`, while a rollback may still return to it: set by an
   * activation, cleared by a rollback or when that locator is withdrawn. Absent when there is none.
   */
  readonly previous?: string;
}

export interface Change {
  /** The revision of the HoA's latest change: a watcher resumes after the highest one it has seen. */
  readonly revision: number;
  readonly binding: BindingRecord;
}

export type Principal =
  | { readonly kind: "admin" }
  | { readonly kind: "vm"; readonly name: string }
  | { readonly kind: "peer"; readonly name: string };

/** A store that cannot do what it was asked (cannot be opened, unreachable, lost its write lock). */
export class StoreError extends Error {
  override readonly name = "StoreError";
}

/**
 * Storage port. `putBinding` returns the revision it produced; revisions only grow, survive restarts and,
 * on a store several servers share, are the same on every server. `changesSince` is compacted: the newest
 * record of each HoA changed after the revision, in revision order. `revision` is the newest change's (0:
 * none yet).
 */
export interface Store {
  vm(name: string): Promise<VmRecord | undefined>;
  vmByHoa(hoa: string): Promise<VmRecord | undefined>;
  vms(): Promise<VmRecord[]>;
  putVm(vm: VmRecord): Promise<void>;
  sites(): Promise<SitesDocument | undefined>;
  putSites(doc: SitesDocument): Promise<void>;
  binding(hoa: string): Promise<BindingRecord | undefined>;
  /** The HoA whose binding lists this locator, if any. */
  hoaOfLocator(locator: string): Promise<string | undefined>;
  /** Every HoA with this locator among its standbys (proven or not), with that standby. */
  standbyClaims(locator: string): Promise<Array<{ readonly hoa: string; readonly standby: Standby }>>;
  putBinding(b: BindingRecord): Promise<number>;
  changesSince(revision: number, limit: number): Promise<Change[]>;
  revision(): Promise<number>;
  /** Credentials are stored hashed (SHA-256 of the token); a token itself is never kept. */
  putCredential(tokenHash: string, who: Exclude<Principal, { kind: "admin" }>): Promise<void>;
  principal(tokenHash: string): Promise<Principal | undefined>;
  /**
   * Runs `work`, a read-decide-write, with no other server's write between its reads and its writes. A
   * store one process owns (memory, SQLite) just runs it: the service's own queue orders its writes. A
   * shared one (etcd) holds a lock every server takes, and refuses the writes of a server that lost it.
   */
  exclusive<T>(work: () => Promise<T>): Promise<T>;
  /**
   * Calls `onChange` with the revision of each binding change from now on: this server's and, on a shared
   * store, every other's. A revision may come twice; Number.MAX_SAFE_INTEGER says the store may have missed
   * some (it lost its connection for a while). Returns what unsubscribes.
   */
  subscribe(onChange: (revision: number) => void): () => void;
  close(): Promise<void>;
}

/** The subscribers of a store's changes (they must not throw: they only wake what waits). */
export class ChangeListeners {
  private readonly listeners = new Set<(revision: number) => void>();

  add(onChange: (revision: number) => void): () => void {
    const own = (revision: number) => onChange(revision); // one entry per subscription, even of one function
    this.listeners.add(own);
    return () => {
      this.listeners.delete(own);
    };
  }

  notify(revision: number): void {
    for (const listener of [...this.listeners]) listener(revision);
  }
}

export class MemoryStore implements Store {
  private readonly vmsByName = new Map<string, VmRecord>();
  private readonly bindings = new Map<string, Change>();
  private readonly credentials = new Map<string, Principal>();
  private readonly listeners = new ChangeListeners();
  private siteDoc: SitesDocument | undefined;
  private rev = 0;

  async vm(name: string) {
    return this.vmsByName.get(name);
  }
  async vmByHoa(hoa: string) {
    return [...this.vmsByName.values()].find((v) => v.hoa === hoa);
  }
  async vms() {
    return [...this.vmsByName.values()].sort((a, b) => a.name.localeCompare(b.name));
  }
  async putVm(vm: VmRecord) {
    this.vmsByName.set(vm.name, vm);
  }
  async sites() {
    return this.siteDoc;
  }
  async putSites(doc: SitesDocument) {
    this.siteDoc = doc;
  }
  async binding(hoa: string) {
    return this.bindings.get(hoa)?.binding;
  }
  async hoaOfLocator(locator: string) {
    for (const { binding } of this.bindings.values())
      if (binding.locators.includes(locator)) return binding.hoa;
    return undefined;
  }
  async standbyClaims(locator: string) {
    return [...this.bindings.values()].flatMap(({ binding }) =>
      binding.standbys.filter((s) => s.locator === locator).map((standby) => ({ hoa: binding.hoa, standby })),
    );
  }
  async putBinding(binding: BindingRecord) {
    this.rev += 1;
    this.bindings.set(binding.hoa, { revision: this.rev, binding });
    this.listeners.notify(this.rev);
    return this.rev;
  }
  async changesSince(revision: number, limit: number) {
    return [...this.bindings.values()]
      .filter((c) => c.revision > revision)
      .sort((a, b) => a.revision - b.revision)
      .slice(0, limit);
  }
  async revision() {
    return this.rev;
  }
  async putCredential(tokenHash: string, who: Exclude<Principal, { kind: "admin" }>) {
    for (const [h, p] of this.credentials) {
      if (p.kind === who.kind && p.name === who.name) this.credentials.delete(h);
    }
    this.credentials.set(tokenHash, who);
  }
  async principal(tokenHash: string) {
    return this.credentials.get(tokenHash);
  }
  async exclusive<T>(work: () => Promise<T>) {
    return work();
  }
  subscribe(onChange: (revision: number) => void) {
    return this.listeners.add(onChange);
  }
  async close() {}
}

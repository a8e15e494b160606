// The Store on an etcd cluster, which any number of xenroam-control servers share: one registry, one change
// stream whose revisions are etcd's own, and one write lock. The only importer of etcd3.
//
// Keys under the prefix (default /xenroam/):
//   schema                     "1"
//   sites                      the sites document (JSON)
//   vm/NAME                    a VM record (JSON)            vm-hoa/HOA            NAME
//   binding/HOA                a binding record (JSON): its mod_revision is the change's revision
//   revision                   "", written with every binding: its mod_revision is the newest change's
//   locator/LOCATOR/HOA        ""                            (each locator a binding lists)
//   standby/LOCATOR/HOA        the standby (JSON)            (each standby a binding holds)
//   credential/SHA256          the principal (JSON)          principal/KIND/NAME   SHA256
//   lock/LEASE                 ""                            (a server waiting for, or holding, the write lock)
//   signing-key                the public half of the key every server signs with (PEM)

import { rootCertificates } from "node:tls";
import {
  Etcd3,
  type ICompare,
  type IKeyValue,
  type IRangeRequest,
  type IRequestOp,
  type ITxnRequest,
  type ITxnResponse,
  type Lease,
  type Watcher,
} from "etcd3";
import type { SitesDocument } from "@xenroam/protocol";
import {
  type BindingRecord,
  type Change,
  ChangeListeners,
  type Principal,
  type Standby,
  type Store,
  StoreError,
  type VmRecord,
} from "./store.js";

export const DEFAULT_ETCD_PREFIX = "/xenroam/";
const SCHEMA = "1";
/** Tries of one compare-and-swap write whose keys another writer changed meanwhile. */
const CAS_TRIES = 20;

/** Where a cluster is, as `--store etcd://HOST:PORT,…[/PREFIX/]` names it (etcds:// for TLS). */
export interface EtcdTarget {
  /** HOST:PORT ([IPV6]:PORT), one a member. */
  readonly endpoints: readonly string[];
  readonly tls: boolean;
  /** Every key of this deployment starts with it; it begins and ends with "/". */
  readonly prefix: string;
}

const ENDPOINT = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::(\d{1,5}))?$/;

/** Parses `etcd://h1:2379,h2:2379` (a port left out is 2379), optionally with a key prefix as its path. */
export function parseEtcdUrl(text: string): EtcdTarget {
  const usage = `expected etcd://HOST:PORT[,HOST:PORT…][/PREFIX/] (etcds:// for TLS), e.g. etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379; got "${text}"`;
  const m = /^(etcds?):\/\/([^/]+)(\/.*)?$/.exec(text);
  if (!m) throw new StoreError(usage);
  const endpoints = (m[2] as string).split(",").map((e) => {
    const port = ENDPOINT.exec(e);
    if (!port) throw new StoreError(`bad etcd endpoint "${e}": ${usage}`);
    if (port[1] !== undefined && !(Number(port[1]) >= 1 && Number(port[1]) <= 65535))
      throw new StoreError(`bad port in etcd endpoint "${e}"`);
    return port[1] === undefined ? `${e}:2379` : e;
  });
  const path = m[3] ?? "";
  if (path && !/^(\/[A-Za-z0-9_.-]+)*\/?$/.test(path))
    throw new StoreError(`bad key prefix "${path}": path segments of letters, digits, _ . -; ${usage}`);
  const prefix = path === "" || path === "/" ? DEFAULT_ETCD_PREFIX : `${path.replace(/\/$/, "")}/`;
  return { endpoints, tls: m[1] === "etcds", prefix };
}

export interface EtcdStoreOptions extends EtcdTarget {
  /** TLS (etcds://): the CA that signed the members' certificates (PEM; default: the system's CAs). */
  readonly ca?: Buffer;
  /** A client certificate and its key (PEM), for a cluster that asks for one (--client-cert-auth). */
  readonly cert?: Buffer;
  readonly key?: Buffer;
  /** An etcd user (auth enabled on the cluster). */
  readonly user?: { readonly name: string; readonly password: string };
  /** How long one call, and opening the store, may take. Default 5 s. */
  readonly timeoutMs?: number;
  /**
   * The lease of this server's write lock, in seconds: a server that dies (or stalls) holding the lock
   * blocks the others' writes this long at most, and its own late writes are refused. Default 3: with 10, a
   * replica SIGKILLed mid-write held a migration's activation back 9.7 s in the lab's failover bench; etcd
   * renews a lease every third of it, and raises one below its minimum (1.5 election timeouts) to that.
   */
  readonly lockTtlSeconds?: number;
  /** How long a write waits for the lock before it fails. Default 10 s. */
  readonly lockWaitMs?: number;
  /** While the watch is down, long polls look again this often (ms). Default 250. */
  readonly lookMs?: number;
  /** Where `etcd_watch_down` and `etcd_watch_resumed {downMs}` go. */
  readonly log?: (event: string, fields?: Record<string, unknown>) => void;
}

/** The smallest key after every key starting with `prefix` (etcd's range end for a prefix). */
function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if ((end[i] as number) < 0xff) {
      end[i] = (end[i] as number) + 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

function decodeBinding(value: Buffer): BindingRecord {
  const r = JSON.parse(value.toString()) as Omit<BindingRecord, "active"> & { active: string | null };
  return {
    hoa: r.hoa,
    vm: r.vm,
    active: r.active ?? undefined,
    seq: r.seq,
    issued: Math.max(r.issued, r.seq),
    locators: r.locators,
    standbys: r.standbys,
    ...(r.previous ? { previous: r.previous } : {}),
  };
}

const encodeBinding = (b: BindingRecord): string => JSON.stringify({ ...b, active: b.active ?? null });

/** The writes of one transaction, at most one per key (etcd refuses a key twice). */
class Writes {
  private readonly ops = new Map<string, IRequestOp>();
  put(key: Buffer, value: string): this {
    this.ops.set(key.toString("latin1"), { request_put: { key, value: Buffer.from(value) } });
    return this;
  }
  delete(key: Buffer): this {
    this.ops.set(key.toString("latin1"), { request_delete_range: { key } });
    return this;
  }
  get list(): IRequestOp[] {
    return [...this.ops.values()];
  }
}

interface HeldLock {
  readonly key: Buffer;
  /** The create revision of the lock key: the lock is still this server's while that key is. */
  readonly revision: string;
}

export class EtcdStore implements Store {
  private readonly listeners = new ChangeListeners();
  private readonly target: EtcdTarget;
  private readonly lockTtlSeconds: number;
  private readonly lockWaitMs: number;
  /** This process's exclusive sections, one at a time: the lock is one per lease. */
  private queue: Promise<unknown> = Promise.resolve();
  private held: HeldLock | undefined;
  /** This server's exclusive sections waiting for a lock key before theirs to go. */
  private readonly lockWaiters = new Set<() => void>();
  private session: Lease | undefined;
  private watcher: Watcher | undefined;
  private closed = false;
  private readonly lookMs: number;
  private readonly log: (event: string, fields?: Record<string, unknown>) => void;
  /** Ends the looks long polls take while the watch is down (follow). */
  private stopLooking: () => void = () => {};

  private constructor(
    private readonly client: Etcd3,
    options: EtcdStoreOptions,
  ) {
    this.target = { endpoints: options.endpoints, tls: options.tls, prefix: options.prefix };
    this.lockTtlSeconds = options.lockTtlSeconds ?? 3;
    this.lockWaitMs = options.lockWaitMs ?? 10_000;
    this.lookMs = options.lookMs ?? 250;
    this.log = options.log ?? (() => {});
  }

  /**
   * Connects, checks (or writes) the schema under the prefix and starts following the bindings; fails
   * within `timeoutMs` when the cluster cannot be reached or refuses this client.
   */
  static async open(options: EtcdStoreOptions): Promise<EtcdStore> {
    if (options.endpoints.length === 0) throw new StoreError("no etcd endpoint given");
    const timeoutMs = options.timeoutMs ?? 5000;
    const tls = options.tls || options.ca !== undefined || options.cert !== undefined;
    const client = new Etcd3({
      hosts: options.endpoints.map((e) => `${tls ? "https" : "http"}://${e}`),
      ...(tls
        ? {
            credentials: {
              rootCertificate: options.ca ?? Buffer.from(rootCertificates.join("\n")),
              ...(options.key ? { privateKey: options.key } : {}),
              ...(options.cert ? { certChain: options.cert } : {}),
            },
          }
        : {}),
      ...(options.user ? { auth: { username: options.user.name, password: options.user.password } } : {}),
      dialTimeout: timeoutMs,
      defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + timeoutMs }),
    });
    const store = new EtcdStore(client, options);
    const within = <T>(p: Promise<T>): Promise<T> => {
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
      });
      return Promise.race([p, late]).finally(() => clearTimeout(timer));
    };
    let found: string | undefined;
    try {
      const res = await within(store.schema());
      found = res.schema;
      if (found === SCHEMA) await within(store.follow(String(BigInt(res.revision) + 1n)));
    } catch (err) {
      await store.close();
      throw new StoreError(
        `etcd cluster ${options.endpoints.join(",")} cannot be used: ${(err as Error).message}. Check that it is up (etcdctl --endpoints=${options.endpoints.join(",")} endpoint health)${tls ? ", that --etcd-ca names the CA of its certificates (and --etcd-cert/--etcd-key this client's, if it asks for one)" : " and serves plain http (etcds:// for TLS)"}${options.user ? `, and that etcd user ${options.user.name} and its password are right` : ""}`,
      );
    }
    if (found !== SCHEMA) {
      await store.close();
      throw new StoreError(
        `etcd prefix ${options.prefix} holds xenroam schema ${found}; this xenroam-control understands ${SCHEMA}`,
      );
    }
    return store;
  }

  /** The schema under the prefix (written when there is none yet), and the revision it was read at. */
  private async schema(): Promise<{ schema: string | undefined; revision: string }> {
    const key = this.key("schema");
    const res = await this.txn(
      {
        compare: [{ key, target: "Create", result: "Equal", create_revision: 0 }],
        success: [{ request_put: { key, value: Buffer.from(SCHEMA) } }],
        failure: [{ request_range: { key } }],
      },
      "checking the schema",
    );
    const schema = res.succeeded ? SCHEMA : res.responses[0]?.response_range.kvs[0]?.value.toString();
    return { schema, revision: res.header.revision };
  }

  /** The key named by `parts` under the prefix; each a name or an address: a "/" in one would alias another. */
  private key(...parts: string[]): Buffer {
    for (const p of parts) {
      if (p === "" || p.includes("/"))
        throw new StoreError(`"${p}" cannot name an etcd key (empty, or a "/")`);
    }
    return Buffer.from(this.target.prefix + parts.join("/"));
  }

  /** Every key under `parts/`. */
  private dir(...parts: string[]): { key: Buffer; range_end: Buffer } {
    const key = Buffer.concat([this.key(...parts), Buffer.from("/")]);
    return { key, range_end: prefixEnd(key) };
  }

  /** What follows the directory in a key found under it. */
  private static tail(kv: IKeyValue, dir: { key: Buffer }): string {
    return kv.key.subarray(dir.key.length).toString();
  }

  // All etcd traffic goes through range and txn: etcd3's errors become StoreErrors here, once.

  private async range(req: IRangeRequest, what: string) {
    try {
      return await this.client.kv.range(req);
    } catch (err) {
      throw this.failure(err, what);
    }
  }

  private async txn(req: ITxnRequest, what: string): Promise<ITxnResponse> {
    try {
      return await this.client.kv.txn(req);
    } catch (err) {
      throw this.failure(err, what);
    }
  }

  private failure(err: unknown, what: string): StoreError {
    if (err instanceof StoreError) return err;
    return new StoreError(`etcd ${this.target.endpoints.join(",")}: ${what}: ${(err as Error).message}`);
  }

  private async get(key: Buffer, what: string): Promise<IKeyValue | undefined> {
    return (await this.range({ key }, what)).kvs[0];
  }

  /**
   * Applies `writes` if every compare holds (and this server still holds the write lock, inside
   * `exclusive`): the response, or undefined when a compare failed (the caller reads again and retries).
   */
  private async write(compare: ICompare[], writes: Writes, what: string): Promise<ITxnResponse | undefined> {
    const held = this.held;
    const fence: ICompare[] = held
      ? [{ key: held.key, target: "Create", result: "Equal", create_revision: held.revision }]
      : [];
    const res = await this.txn({ compare: [...compare, ...fence], success: writes.list }, what);
    if (res.succeeded) return res;
    if (held && (await this.get(held.key, "checking the write lock"))?.create_revision !== held.revision) {
      throw new StoreError(
        `lost the etcd write lock while ${what} (this server could not renew its ${this.lockTtlSeconds} s lease in time): nothing was written; try again`,
      );
    }
    return undefined;
  }

  private async cas(what: string, attempt: () => Promise<ITxnResponse | undefined>): Promise<ITxnResponse> {
    for (let i = 0; i < CAS_TRIES; i++) {
      const res = await attempt();
      if (res) return res;
    }
    throw new StoreError(
      `${what}: its keys kept changing under ${CAS_TRIES} tries (a writer outside the lock?)`,
    );
  }

  async vm(name: string): Promise<VmRecord | undefined> {
    const kv = await this.get(this.key("vm", name), `reading VM ${name}`);
    return kv && (JSON.parse(kv.value.toString()) as VmRecord);
  }

  async vmByHoa(hoa: string): Promise<VmRecord | undefined> {
    const kv = await this.get(this.key("vm-hoa", hoa), `reading the VM of HoA ${hoa}`);
    return kv && this.vm(kv.value.toString());
  }

  async vms(): Promise<VmRecord[]> {
    const res = await this.range(this.dir("vm"), "listing VMs");
    return res.kvs.map((kv) => JSON.parse(kv.value.toString()) as VmRecord);
  }

  async putVm(vm: VmRecord): Promise<void> {
    const key = this.key("vm", vm.name);
    const index = this.key("vm-hoa", vm.hoa);
    await this.cas(`writing VM ${vm.name}`, async () => {
      const [prev, holder] = await Promise.all([
        this.get(key, `reading VM ${vm.name}`),
        this.get(index, `reading the VM of HoA ${vm.hoa}`),
      ]);
      const holderName = holder?.value.toString();
      if (holderName !== undefined && holderName !== vm.name)
        throw new StoreError(`HoA ${vm.hoa} is VM ${holderName}'s`);
      const writes = new Writes().put(key, JSON.stringify(vm)).put(index, vm.name);
      const before = prev && (JSON.parse(prev.value.toString()) as VmRecord);
      if (before && before.hoa !== vm.hoa) writes.delete(this.key("vm-hoa", before.hoa));
      return this.write(
        [
          { key, target: "Mod", result: "Equal", mod_revision: prev?.mod_revision ?? 0 },
          { key: index, target: "Mod", result: "Equal", mod_revision: holder?.mod_revision ?? 0 },
        ],
        writes,
        `writing VM ${vm.name}`,
      );
    });
  }

  async sites(): Promise<SitesDocument | undefined> {
    const kv = await this.get(this.key("sites"), "reading the sites");
    return kv && (JSON.parse(kv.value.toString()) as SitesDocument);
  }

  async putSites(doc: SitesDocument): Promise<void> {
    await this.cas("writing the sites", () =>
      this.write([], new Writes().put(this.key("sites"), JSON.stringify(doc)), "writing the sites"),
    );
  }

  async binding(hoa: string): Promise<BindingRecord | undefined> {
    const kv = await this.get(this.key("binding", hoa), `reading binding ${hoa}`);
    return kv && decodeBinding(kv.value);
  }

  async hoaOfLocator(locator: string): Promise<string | undefined> {
    const dir = this.dir("locator", locator);
    const res = await this.range({ ...dir, limit: 1, keys_only: true }, `looking up locator ${locator}`);
    const kv = res.kvs[0];
    return kv && EtcdStore.tail(kv, dir);
  }

  async standbyClaims(locator: string): Promise<Array<{ hoa: string; standby: Standby }>> {
    const dir = this.dir("standby", locator);
    const res = await this.range(dir, `looking up standby ${locator}`);
    return res.kvs.map((kv) => ({
      hoa: EtcdStore.tail(kv, dir),
      standby: JSON.parse(kv.value.toString()) as Standby,
    }));
  }

  /** The binding, its locator and standby index entries and the revision, in one transaction at one revision. */
  async putBinding(b: BindingRecord): Promise<number> {
    const key = this.key("binding", b.hoa);
    const res = await this.cas(`writing binding ${b.hoa}`, async () => {
      const prev = await this.get(key, `reading binding ${b.hoa}`);
      const old = prev && decodeBinding(prev.value);
      const writes = new Writes().put(key, encodeBinding(b)).put(this.key("revision"), "");
      for (const l of old?.locators ?? [])
        if (!b.locators.includes(l)) writes.delete(this.key("locator", l, b.hoa));
      for (const l of b.locators)
        if (!old?.locators.includes(l)) writes.put(this.key("locator", l, b.hoa), "");
      for (const s of old?.standbys ?? [])
        if (!b.standbys.some((n) => n.locator === s.locator))
          writes.delete(this.key("standby", s.locator, b.hoa));
      for (const s of b.standbys) writes.put(this.key("standby", s.locator, b.hoa), JSON.stringify(s));
      return this.write(
        [{ key, target: "Mod", result: "Equal", mod_revision: prev?.mod_revision ?? 0 }],
        writes,
        `writing binding ${b.hoa}`,
      );
    });
    return Number(res.header.revision);
  }

  /**
   * Ranges over the bindings as they are now, so etcd's compaction of older revisions never hides a change:
   * a watcher from before it gets every HoA changed since, at its newest record.
   */
  async changesSince(revision: number, limit: number): Promise<Change[]> {
    if (limit <= 0) return [];
    const res = await this.range(
      {
        ...this.dir("binding"),
        min_mod_revision: revision + 1,
        sort_target: "Mod",
        sort_order: "Ascend",
        limit,
      },
      `reading changes since revision ${revision}`,
    );
    return res.kvs.map((kv) => ({ revision: Number(kv.mod_revision), binding: decodeBinding(kv.value) }));
  }

  async revision(): Promise<number> {
    return Number((await this.get(this.key("revision"), "reading the revision"))?.mod_revision ?? 0);
  }

  async putCredential(tokenHash: string, who: Exclude<Principal, { kind: "admin" }>): Promise<void> {
    const owner = this.key("principal", who.kind, who.name);
    await this.cas(`writing the credential of ${who.kind} ${who.name}`, async () => {
      const prev = await this.get(owner, `reading the credential of ${who.kind} ${who.name}`);
      const writes = new Writes()
        .put(this.key("credential", tokenHash), JSON.stringify({ kind: who.kind, name: who.name }))
        .put(owner, tokenHash);
      const old = prev?.value.toString();
      if (old && old !== tokenHash) writes.delete(this.key("credential", old));
      return this.write(
        [{ key: owner, target: "Mod", result: "Equal", mod_revision: prev?.mod_revision ?? 0 }],
        writes,
        `writing the credential of ${who.kind} ${who.name}`,
      );
    });
  }

  async principal(tokenHash: string): Promise<Principal | undefined> {
    const kv = await this.get(this.key("credential", tokenHash), "reading a credential");
    return kv && (JSON.parse(kv.value.toString()) as Principal);
  }

  /**
   * Records the public half of the servers' signing key at the first server's start, and refuses a server
   * whose key is another: correspondents pin one key, so every server must sign with the same one.
   */
  async pinSigningKey(publicKeyPem: string): Promise<void> {
    const key = this.key("signing-key");
    const res = await this.txn(
      {
        compare: [{ key, target: "Create", result: "Equal", create_revision: 0 }],
        success: [{ request_put: { key, value: Buffer.from(publicKeyPem) } }],
        failure: [{ request_range: { key } }],
      },
      "checking the signing key",
    );
    const pinned = res.succeeded ? publicKeyPem : res.responses[0]?.response_range.kvs[0]?.value.toString();
    if (pinned !== publicKeyPem) {
      throw new StoreError(
        `this server's signing key is not the one the other servers on etcd ${this.target.endpoints.join(",")} sign with (its public half is at ${this.target.prefix}signing-key): give every server a copy of the same key file (--key); after a deliberate key change on every server, delete that etcd key first`,
      );
    }
  }

  /**
   * Holds the cluster-wide write lock while `work` runs (etcd's own mutex recipe: each server's key under
   * lock/, on its lease, and the oldest key holds it), and every write `work` makes carries the check that
   * the lock is still this server's.
   */
  exclusive<T>(work: () => Promise<T>): Promise<T> {
    const locked = async () => {
      const held = await this.lock();
      this.held = held;
      try {
        return await work();
      } finally {
        this.held = undefined;
        // Left behind (etcd unreachable), the key is this lease's: the next exclusive section takes it over,
        // or it goes with the lease.
        await this.txn(
          { success: [{ request_delete_range: { key: held.key } }] },
          "releasing the write lock",
        ).catch(() => undefined);
      }
    };
    const run = this.queue.then(locked, locked);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async lease(): Promise<string> {
    if (!this.session || this.session.revoked()) {
      const lease = this.client.lease(this.lockTtlSeconds);
      lease.on("lost", () => {
        if (this.session === lease) this.session = undefined;
      });
      this.session = lease;
    }
    try {
      return await this.session.grant();
    } catch (err) {
      this.session = undefined;
      throw this.failure(err, "granting the write lock's lease");
    }
  }

  private async lock(): Promise<HeldLock> {
    try {
      return await this.queueForLock(await this.lease());
    } catch (err) {
      // The lease expired or was revoked before its keepalive noticed: once more, on a new one.
      if (!/requested lease not found/.test((err as Error).message)) throw err;
      this.session?.release();
      this.session = undefined;
      return this.queueForLock(await this.lease());
    }
  }

  private async queueForLock(lease: string): Promise<HeldLock> {
    const deadline = Date.now() + this.lockWaitMs;
    const key = this.key("lock", BigInt(lease).toString(16));
    const locks = this.dir("lock");
    const oldest: IRequestOp = {
      request_range: { ...locks, sort_target: "Create", sort_order: "Ascend", limit: 1, keys_only: true },
    };
    const res = await this.txn(
      {
        compare: [{ key, target: "Create", result: "Equal", create_revision: 0 }],
        success: [{ request_put: { key, value: Buffer.alloc(0), lease } }, oldest],
        failure: [{ request_range: { key, keys_only: true } }, oldest],
      },
      "taking the write lock",
    );
    const revision = res.succeeded
      ? res.header.revision
      : res.responses[0]?.response_range.kvs[0]?.create_revision;
    if (revision === undefined)
      throw new StoreError("the write lock's key vanished as it was taken (its lease expired)");
    if (res.responses[1]?.response_range.kvs[0]?.create_revision === revision) return { key, revision };
    // Queued: wait until every key taken before this one is gone (its holder released it, or died).
    try {
      for (;;) {
        // Listening before reading: a key deleted while the range is read wakes the wait.
        let released = () => {};
        const woken = new Promise<void>((resolve) => (released = resolve));
        this.lockWaiters.add(released);
        try {
          const before = await this.range(
            {
              ...locks,
              max_create_revision: String(BigInt(revision) - 1n),
              sort_target: "Create",
              sort_order: "Descend",
              limit: 1,
              keys_only: true,
            },
            "waiting for the write lock",
          );
          const ahead = before.kvs[0];
          if (!ahead) return { key, revision };
          const left = deadline - Date.now();
          if (left <= 0) {
            throw new StoreError(
              `the etcd write lock stayed taken for ${this.lockWaitMs} ms (by ${ahead.key.toString()}: another xenroam-control, or one that died less than ${this.lockTtlSeconds} s ago)`,
            );
          }
          // The watch tells of a release at once; a look every second covers the watch's reconnections.
          let timer: NodeJS.Timeout | undefined;
          await Promise.race([
            woken,
            new Promise((resolve) => (timer = setTimeout(resolve, Math.min(left, 1000)))),
          ]);
          clearTimeout(timer);
        } finally {
          this.lockWaiters.delete(released);
        }
      }
    } catch (err) {
      await this.txn({ success: [{ request_delete_range: { key } }] }, "giving up the write lock").catch(
        () => undefined,
      );
      throw err;
    }
  }

  subscribe(onChange: (revision: number) => void): () => void {
    return this.listeners.add(onChange);
  }

  /**
   * Follows every key under the prefix from `revision` on with one etcd watch, for the store's life (etcd3
   * mishandles watches opened and cancelled by the dozen on one stream): a binding written is told to the
   * subscribers, a lock key deleted wakes this server's lock waiters. When etcd cancels the watch (it
   * compacted the history the watch had to resume from, after a long disconnection), a new one starts from
   * now and the subscribers are told anything may have changed. Resolves once etcd has the watch.
   */
  private follow(revision?: string): Promise<void> {
    const builder = this.client.watch().prefix(this.target.prefix);
    // Created, not yet connected: the listeners are in place before any event can arrive.
    const watcher = (revision ? builder.startRevision(revision) : builder).watcher();
    this.watcher = watcher;
    const bindings = this.dir("binding").key;
    const locks = this.dir("lock").key;
    const startsWith = (key: Buffer, dir: Buffer) => key.subarray(0, dir.length).equals(dir);
    const wakeLockWaiters = () => {
      for (const released of [...this.lockWaiters]) released();
    };
    let connected = false;
    let disconnected = false;
    // While the watch is down (its member died; etcd3 reconnects it after a back-off of up to seconds), what
    // other servers commit wakes nothing here: the lab's failover bench saw a correspondent watching this
    // server get another's activation 2 s late. Long polls look again every lookMs meanwhile, each look one
    // read shared by all (a poll that cannot read fails, and its client goes on at another server).
    let looking: NodeJS.Timeout | undefined;
    let downAt = 0;
    const stopLooking = () => {
      clearInterval(looking);
      looking = undefined;
    };
    this.stopLooking = stopLooking;
    return new Promise((resolve, reject) => {
      watcher
        .on("put", (kv) => {
          if (startsWith(kv.key, bindings)) this.listeners.notify(Number(kv.mod_revision));
        })
        .on("delete", (kv) => {
          if (startsWith(kv.key, locks)) wakeLockWaiters();
        })
        .on("disconnected", () => {
          disconnected = true;
          if (this.closed || looking !== undefined) return;
          downAt = Date.now();
          this.log("etcd_watch_down", { lookMs: this.lookMs });
          looking = setInterval(() => {
            this.listeners.notify(Number.MAX_SAFE_INTEGER);
            wakeLockWaiters();
          }, this.lookMs);
        })
        .on("connected", () => {
          connected = true;
          if (looking !== undefined) this.log("etcd_watch_resumed", { downMs: Date.now() - downAt });
          stopLooking();
          resolve();
          // Resumed from its last revision; told anyway, in case a change slipped between reconnections.
          if (disconnected) {
            this.listeners.notify(Number.MAX_SAFE_INTEGER);
            wakeLockWaiters();
          }
          disconnected = false;
        })
        .on("error", (err) => {
          stopLooking();
          if (this.watcher === watcher) this.watcher = undefined;
          if (!connected) reject(err);
          else void this.refollow();
        });
    });
  }

  private async refollow(): Promise<void> {
    while (!this.closed) {
      try {
        await this.follow();
        this.listeners.notify(Number.MAX_SAFE_INTEGER);
        for (const released of [...this.lockWaiters]) released();
        return;
      } catch {
        // No watch at all meanwhile: long polls look again at each try.
        this.listeners.notify(Number.MAX_SAFE_INTEGER);
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
  }

  /** Stops following, releases the lease (and with it any lock key) and closes the connections. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.stopLooking();
    const bounded = (p: Promise<unknown> | undefined) =>
      Promise.race([p?.catch(() => undefined), new Promise((r) => setTimeout(r, 2000).unref())]);
    await bounded(this.queue);
    await bounded(this.watcher?.cancel());
    await bounded(this.session?.revoke());
    this.client.close();
  }
}

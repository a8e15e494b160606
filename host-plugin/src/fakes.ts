// Fakes for the host plugin's ports, recording what they were asked. Used by the engine's table tests.

import type { DomainInfo, MigrateRequest, SignedActivation, Toolstack, VifInfo } from "@xenroam/protocol";
import {
  type ControlRelay,
  type Dom0Channel,
  EMPTY_STATE,
  type HostState,
  type MigrationMetrics,
  type MigrationRecord,
  type ProcessRef,
  type RadvdControl,
  type StateStore,
} from "./ports.js";

/** One shared timeline so tests can check the order of effects across ports. */
export type Journal = string[];

export class MemoryState implements StateStore {
  state: HostState = EMPTY_STATE;
  async read() {
    return this.state;
  }
  async update<T>(fn: (s: HostState) => { state: HostState; result: T }): Promise<T> {
    const { state, result } = fn(this.state);
    this.state = state;
    return result;
  }
}

export class FakeRadvd implements RadvdControl {
  readonly configs = new Map<number, string>();
  private next = 1000;
  private readonly live = new Set<number>();
  constructor(private readonly journal: Journal = []) {}
  async start(name: string, config: string): Promise<ProcessRef> {
    const pid = this.next++;
    this.live.add(pid);
    this.configs.set(pid, config);
    this.journal.push(`radvd start ${name}`);
    return { pid, startTime: 1 };
  }
  /** Every radvd exits on its own (a fault), as if killed from outside. */
  crashAll(): void {
    this.live.clear();
  }
  async stop(name: string, ref: ProcessRef) {
    this.live.delete(ref.pid);
    this.journal.push(`radvd stop ${name} ${ref.pid}`);
  }
  running(ref: ProcessRef) {
    return this.live.has(ref.pid);
  }
  get count() {
    return this.live.size;
  }
}

/** A Dom0 channel whose guest is a function: it sees each write and may write back. */
export class FakeDom0Channel implements Dom0Channel {
  readonly keys = new Map<string, string>();
  private readonly waiters = new Set<() => void>();
  guest: ((domid: number, key: string, value: string) => void) | undefined;
  constructor(private readonly journal: Journal = []) {}
  private k(domid: number, key: string) {
    return `${domid}/${key}`;
  }
  async read(domid: number, key: string) {
    return this.keys.get(this.k(domid, key));
  }
  async write(domid: number, key: string, value: string) {
    this.keys.set(this.k(domid, key), value);
    this.journal.push(`xenstore write ${domid}/${key}`);
    for (const w of this.waiters) w();
    queueMicrotask(() => this.guest?.(domid, key, value));
  }
  /** What the guest writes (not journalled as Dom0's). */
  guestWrite(domid: number, key: string, value: string) {
    this.keys.set(this.k(domid, key), value);
    for (const w of this.waiters) w();
  }
  async remove(domid: number, key: string) {
    this.keys.delete(this.k(domid, key));
  }
  waitFor(domid: number, key: string, accept: (v: string) => boolean, timeoutMs: number) {
    return new Promise<string | undefined>((resolve) => {
      const check = () => {
        const v = this.keys.get(this.k(domid, key));
        if (v !== undefined && accept(v)) done(v);
      };
      const done = (v: string | undefined) => {
        this.waiters.delete(check);
        clearTimeout(timer);
        resolve(v);
      };
      const timer = setTimeout(() => done(undefined), timeoutMs);
      this.waiters.add(check);
      check();
    });
  }
}

export class FakeToolstack implements Toolstack {
  readonly requests: MigrateRequest[] = [];
  readonly domains = new Map<string, DomainInfo>();
  /**
   * A migration that fails once the VM was paused: "resumed-here" as when the destination's restore fails
   * (the VM runs on at the source), "moved" as when something fails after it runs at the destination.
   */
  failAfterPause: "resumed-here" | "moved" | undefined;
  /**
   * xl-shaped: the source never sees the pause (onPaused is not called); the destination's own step runs there
   * instead (xenroam receive relays the guest's activation, unseen by the engine).
   */
  atDestinationPause: (() => Promise<unknown>) | undefined;
  /** Set: the toolstack cannot swap before resume (XAPI inside a pool) and says why. */
  refusal: string | undefined;
  /** VMs whose migration fails before the pause (the destination unreachable): they stay where they are. */
  readonly unreachable = new Set<string>();
  /** At most this many migrations were under way at once (what evacuate's --parallel bounds). */
  mostAtOnce = 0;
  /** How long a migration's copy takes before the pause. */
  copyMs = 1;
  private underway = 0;
  constructor(private readonly journal: Journal = []) {}
  async methodRefusal() {
    return this.refusal;
  }
  addVm(vm: string, host: string, domid: number, vifs: VifInfo[]) {
    this.domains.set(vm, { vm, host, domid, vifs });
  }
  async domain(vm: string) {
    const d = this.domains.get(vm);
    if (!d) throw new Error(`no VM ${vm}`);
    return d;
  }
  async residents(host: string) {
    return [...this.domains.values()].filter((d) => d.host === host).map((d) => d.vm);
  }
  async migrate(vm: string, destination: string, request: MigrateRequest) {
    this.underway += 1;
    this.mostAtOnce = Math.max(this.mostAtOnce, this.underway);
    try {
      // A turn of the event loop, so migrations that run together overlap here as real ones do.
      await new Promise((r) => setTimeout(r, this.copyMs));
      return await this.migrateNow(vm, destination, request);
    } finally {
      this.underway -= 1;
    }
  }
  private async migrateNow(vm: string, destination: string, request: MigrateRequest) {
    if (this.unreachable.has(vm)) throw new Error(`cannot reach ${destination} for ${vm}`);
    const d = await this.domain(vm);
    this.requests.push(request);
    this.journal.push(`toolstack migrate ${vm} ${destination} ${JSON.stringify(request.bridges)}`);
    this.journal.push(`toolstack pause ${vm}`);
    if (this.atDestinationPause) await this.atDestinationPause();
    else request.onPaused?.();
    if (this.failAfterPause === "resumed-here") {
      this.journal.push(`toolstack resume ${vm} here`);
      throw new Error("restore failed on the destination");
    }
    const moved: DomainInfo = {
      vm,
      host: destination,
      domid: d.domid + 1,
      vifs: d.vifs.map((v) => ({
        ...v,
        ifname: `vif${d.domid + 1}.${v.devid}`,
        bridge: request.bridges[v.devid] ?? "",
      })),
      pausedMs: 50,
    };
    this.domains.set(vm, moved);
    if (this.failAfterPause === "moved") throw new Error("post-migration step failed");
    return moved;
  }
}

/** The control server as the host uses it: answers after `delayMs`; `refuse` makes activations fail with 409. */
export class FakeControl implements ControlRelay {
  delayMs = 0;
  refuse = false;
  /**
   * The activation is taken but the answer says it already was (409 already-active): what a replica answers
   * when the relay is sent again after the first replica took it and died before answering.
   */
  alreadyActive = false;
  private seq = 0;
  constructor(private readonly journal: Journal = []) {}
  private later<T>(value: () => T): Promise<T> {
    return new Promise((r) => setTimeout(r, this.delayMs)).then(value);
  }
  async health() {
    this.journal.push("control health");
    return { ok: true };
  }
  activate(b: SignedActivation) {
    this.journal.push(`control activate ${b.locator} ${b.seq}`);
    return this.later(() => {
      if (this.refuse) throw Object.assign(new Error("replayed or stale"), { status: 409 });
      this.seq = b.seq;
      if (this.alreadyActive)
        throw Object.assign(new Error("already active"), { status: 409, code: "already-active" });
      this.journal.push(`control activated ${b.locator} ${b.seq}`);
      return { revision: b.seq };
    });
  }
  async attest(vm: string, locator: string) {
    this.journal.push(`control attest ${vm} ${locator}`);
    return { attested: true, activated: false };
  }
  rollback(vm: string, undo: SignedActivation) {
    this.journal.push(`control rollback ${vm} ${undo.locator} ${undo.seq}`);
    return this.later(() => {
      if (undo.seq !== this.seq) throw Object.assign(new Error("nothing to roll back"), { status: 409 });
      return {
        vm,
        hoa: "2001:db8:f::5",
        locator: "2001:db8:a::5",
        seq: undo.seq + 1,
        expiresAt: 1,
        kid: "A".repeat(11),
        sig: "x",
      };
    });
  }
}

/** Migration records kept in memory; `fail` makes recording throw (a full disk, a missing directory). */
export class FakeMigrationMetrics implements MigrationMetrics {
  readonly records: MigrationRecord[] = [];
  fail = false;
  constructor(private readonly journal: Journal = []) {}
  async record(r: MigrationRecord) {
    this.journal.push(`metrics record ${r.vm} ${r.outcome}${r.fallback ? ` ${r.fallback}` : ""}`);
    if (this.fail) throw new Error("no space left on device");
    this.records.push(r);
  }
}

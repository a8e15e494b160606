// Fakes for the host plugin's ports, recording what they were asked. Used by the engine's table tests.

import type { DomainInfo, MigrateRequest, Toolstack, VifInfo } from "@xenroam/protocol";
import {
  type Dom0Channel,
  EMPTY_STATE,
  type HostState,
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
  constructor(private readonly journal: Journal = []) {}
  addVm(vm: string, host: string, domid: number, vifs: VifInfo[]) {
    this.domains.set(vm, { vm, host, domid, vifs });
  }
  async domain(vm: string) {
    const d = this.domains.get(vm);
    if (!d) throw new Error(`no VM ${vm}`);
    return d;
  }
  async migrate(vm: string, destination: string, request: MigrateRequest) {
    const d = await this.domain(vm);
    this.requests.push(request);
    this.journal.push(`toolstack migrate ${vm} ${destination} ${JSON.stringify(request.bridges)}`);
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
    return moved;
  }
}

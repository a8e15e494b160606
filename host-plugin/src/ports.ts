// The host plugin's ports: everything outside the core, each with a real adapter and a fake.

import type { PhaseMark, SignedActivation, Site, SiteDirectory, Toolstack, VifInfo } from "@xenroam/protocol";

/** Dom0's side of the guest channel: keys under a domain's xenroam directory. */
export interface Dom0Channel {
  read(domid: number, key: string): Promise<string | undefined>;
  write(domid: number, key: string, value: string): Promise<void>;
  remove(domid: number, key: string): Promise<void>;
  /** Resolves with the key's value once `accept` takes it, or undefined when the deadline passes. */
  waitFor(
    domid: number,
    key: string,
    accept: (value: string) => boolean,
    timeoutMs: number,
  ): Promise<string | undefined>;
}

/** An opaque handle on a process the plugin started (PID plus start time). */
export interface ProcessRef {
  readonly pid: number;
  readonly startTime: number;
}

/** radvd, one process per staging bridge. The only thing in the plugin that starts radvd. */
export interface RadvdControl {
  start(name: string, config: string): Promise<ProcessRef>;
  /** Stops the radvd `start(name, …)` returned `ref` for, and removes what it left (config, pid file, log). */
  stop(name: string, ref: ProcessRef): Promise<void>;
  running(ref: ProcessRef): boolean;
}

/**
 * Step 1's network side: the staging bridge that impersonates a destination site's gateway (its MAC and
 * link-local; radvd runs on it), and the secondary vif's moves between it and its parking place. On xl and in
 * the lab a Linux bridge xenroam makes (adapters/linux-staging.ts); on XAPI a XAPI internal network, so that
 * XAPI itself attaches the vif there (adapters/xapi-staging.ts).
 */
export interface StagingNetwork {
  /** Makes the site's staging bridge, or finds it made, and (re)applies the gateway's MAC and link-local. */
  ensure(site: Site): Promise<{ readonly bridge: string; readonly created: boolean }>;
  /** Puts the VM's secondary vif on the site's staging bridge (isolated from other guests' where it can). */
  attach(site: Site, vm: string, secondary: VifInfo): Promise<void>;
  /** Puts the secondary vif back where it waits between migrations; nothing when the vif is gone. */
  detach(vm: string, secondary: { readonly devid: number; readonly ifname: string }): Promise<void>;
  /** The site's last user is gone: undo what `ensure` made here. */
  remove(site: string, bridge: string): Promise<void>;
}

export interface StagingState {
  readonly bridge: string;
  readonly users: readonly string[];
  readonly radvd?: ProcessRef;
}

export interface VmState {
  readonly migrationId: string;
  readonly phase: "preparing" | "prepared" | "migrating";
  readonly site: string;
  readonly destination: string;
  readonly domid: number;
  readonly secondary: { readonly devid: number; readonly ifname: string; readonly mac: string };
  readonly moa?: string;
  readonly startedAt: string;
}

export interface HostState {
  readonly staging: Readonly<Record<string, StagingState>>;
  readonly vms: Readonly<Record<string, VmState>>;
}

export const EMPTY_STATE: HostState = { staging: {}, vms: {} };

/** Host-local state, read and changed under a lock so concurrent commands do not trample each other. */
export interface StateStore {
  read(): Promise<HostState>;
  update<T>(fn: (s: HostState) => { state: HostState; result: T }): Promise<T>;
}

export type Log = (event: string, fields?: Record<string, unknown>) => void;

/** Who holds a lock: its process, what it is doing, since when (ISO time). */
export interface LockHolder {
  readonly pid: number;
  readonly what: string;
  readonly since: string;
}

export interface Held {
  release(): Promise<void>;
}

/**
 * Locks between the xenroam processes of one host, released by the kernel when their holder dies (flock-style):
 * one per VM around a whole operation, one per site around its staging bridge, one around the state file.
 */
export interface Locks {
  /** Takes `key` now, or says who holds it. */
  tryAcquire(key: string, what: string): Promise<{ held: Held } | { holder: LockHolder }>;
  /** Takes `key`, waiting at most `timeoutMs` for its holder to let go. */
  acquire(key: string, what: string, timeoutMs: number): Promise<Held>;
}

/**
 * The control server, as the host uses it for the mobility layer (ControlClient, with a host's peer token):
 * relay a guest's pre-signed activation while the VM is paused, and undo it when the move then fails.
 */
export interface ControlRelay {
  /** Any cheap request: made before the pause, so the relay then reuses a warm client and connection. */
  health(): Promise<unknown>;
  activate(b: SignedActivation): Promise<{ revision: number }>;
  /** `activate`, made ready now to go later at the least cost (ControlClient.prepareActivate). */
  prepareActivate?(b: SignedActivation): () => Promise<{ revision: number }>;
  /** Undoes `activation` (which must be the VM's active binding): its previous locator is active again. */
  rollback(vm: string, activation: SignedActivation): Promise<SignedActivation>;
  /** Vouches for a MoA the guest answered at a prepare (ControlClient.attest). */
  attest?(vm: string, locator: string): Promise<{ attested: boolean; activated: boolean }>;
}

/** One migration as it ended, for the metrics operators scrape. */
export interface MigrationRecord {
  readonly migrationId: string;
  readonly vm: string;
  /** The method, a plain migration asked for (or a move within a site), a fallback to one, or a failure. */
  readonly outcome: "dual-interface" | "plain" | "fallback" | "failed";
  /** Why the method gave way to a plain migration: the guest's prepare was silent, refused or malformed. */
  readonly fallback?: "silent" | "refused" | "malformed";
  /** When it started and ended, ms since the epoch. */
  readonly startedAt: number;
  readonly endedAt: number;
  readonly timeline: readonly PhaseMark[];
  /** How long the toolstack kept the VM paused, when it says. */
  readonly pausedMs?: number;
}

/** Where each migration's record goes once it ends: node_exporter's textfile collector (adapters/textfile.ts). */
export interface MigrationMetrics {
  record(m: MigrationRecord): Promise<void>;
}

export interface HostPorts {
  readonly host: string;
  readonly bridges: { readonly real: string; readonly parking: string };
  readonly staging: StagingNetwork;
  readonly radvd: RadvdControl;
  readonly channel: Dom0Channel;
  readonly toolstack: Toolstack;
  readonly sites: SiteDirectory;
  readonly state: StateStore;
  readonly log: Log;
  readonly now: () => number;
  /** When set, a guest's pre-signed activation is relayed at the pause (on toolstacks that see it). */
  readonly control?: ControlRelay;
  /** Between processes (adapters/locks.ts); absent: within this process only (MemoryLocks). */
  readonly locks?: Locks;
  /** Each migration's timeline and outcome, once it ends; absent: not recorded. */
  readonly metrics?: MigrationMetrics;
}

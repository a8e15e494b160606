// The Toolstack port: what the host plugin asks of xl, XAPI or the lab. Implementations live with their
// adapters (packages/lab for the lab; host-plugin for xl and XAPI); the host plugin's core sees only this.

export interface VifInfo {
  readonly devid: number;
  readonly mac: string;
  /** The Dom0-side interface, e.g. "vif5.1". */
  readonly ifname: string;
  /** The bridge it is attached to now. */
  readonly bridge: string;
}

export interface DomainInfo {
  readonly vm: string;
  readonly domid: number;
  readonly host: string;
  readonly vifs: readonly VifInfo[];
  /** After a migration: how long the VM was paused, when the toolstack knows. */
  readonly pausedMs?: number;
  /**
   * After a migration, xl: the destination's own steps while the domain was complete but not yet running,
   * in ms from the moment xl had it complete (its "ready" message): found, held, written, relayed, ready-sent,
   * and xl-done (xl had unpaused it and exited).
   */
  readonly arrival?: readonly PhaseMark[];
}

/** A named moment of a migration, milliseconds since the migration started. */
export interface PhaseMark {
  readonly phase: string;
  readonly atMs: number;
}

export interface MigrateRequest {
  readonly migrationId: string;
  /** Bridge per vif devid at the destination: swapped for the method, unchanged for a plain migration. */
  readonly bridges: Readonly<Record<number, string>>;
  /**
   * Keys (relative to the guest's xenroam directory) the destination writes into the restored domain's
   * xenstore: how the guest learns that it has arrived. When, per toolstack: lab and xl before the VM
   * resumes (xl: while the memory arrives, `xenroam receive`); XAPI as the destination plugs the incoming
   * domain's VIFs, before the memory copy (the vif-hotplug hook; xenopsd does not wait for it), and again
   * after unpause (vm-post-migrate: ocaml/xenopsd/lib/xenops_server.ml 2820-2830, xen-api e2ee48d6).
   */
  readonly guestWrites?: Readonly<Record<string, string>>;
  /**
   * Vifs (devids) the destination restores unplugged — the guest sees no carrier on them — and plugs once
   * `release` is satisfied or its timeout passes. For the method: the old primary, held until the guest has
   * switched, so that from the first instant after resume the guest's kernel routes around it.
   */
  readonly hold?: {
    readonly devids: readonly number[];
    /** A key of the guest's xenroam directory, and the value that releases the hold. */
    readonly key: string;
    readonly released: (value: string) => boolean;
    readonly timeoutMs: number;
  };
  /**
   * The guest's new primary there — its address (MoA), its MAC, the destination bridge its vif lands on: the
   * destination's Dom0 announces the address to the site's
   * router (an unsolicited NA with the vif's MAC, host-plugin/src/announce.ts) before the guest runs, so the
   * packets correspondents already send there (relayed at the pause) wait for no neighbour discovery. xl only.
   */
  readonly announce?: { readonly moa: string; readonly mac: string; readonly bridge: string };
  readonly mark?: (phase: string) => void;
  /**
   * Called once, synchronously, when the toolstack has paused the VM on the source for the last time (the
   * stop-and-copy begins) — for work that must be done by the time the VM resumes, such as relaying the
   * guest's pre-signed binding. The toolstack does not wait for anything the callback starts. Toolstacks that
   * see the pause call it: the lab, and xl (the source watches libxl's suspend of the guest; without that
   * watch xl's destination relays before the domain runs instead). XAPI does not.
   */
  readonly onPaused?: () => void;
}

export interface Toolstack {
  /** The VM as it runs on this host now. */
  domain(vm: string): Promise<DomainInfo>;
  /**
   * Why this toolstack cannot attach the vifs swapped before the VM resumes at `destination` (then the
   * method would cut the guest off until a swap after resume: worse than a plain migration); undefined when
   * it can. The engine refuses the method with this reason before it touches anything.
   */
  methodRefusal?(vm: string, destination: string): Promise<string | undefined>;
  /** Live-migrates the VM to `destination`; resolves once it runs there. */
  migrate(vm: string, destination: string, request: MigrateRequest): Promise<DomainInfo>;
  /**
   * The guests running on `host` now, by name (Dom0 and domains being migrated in or out left out): what
   * `xenroam evacuate` moves. Absent where the toolstack cannot tell; evacuate then refuses, saying so.
   */
  residents?(host: string): Promise<string[]>;
}

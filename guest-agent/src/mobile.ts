// The mobile node: the guest keeps its home address (HoA) across migrations. The HoA sits on lo; the
// agent's routes prefer it as source; one nftables table rewrites HoA<->MoA statelessly (packages/mobility).
// Step 2 registers the new MoA as a standby locator with the control server and keeps the pre-signed
// activation it gets back (a copy goes to Dom0 with the answer, which may relay it while the VM is paused);
// step 4 hands that activation to the known correspondents directly (UDP), then to the server — no round trip
// before traffic flows again. Ports only; main.ts wires the real ones.

import { canonicalIpv6, formatIpv6, parseIpv6, parsePrefix, prefixContains } from "@xenroam/core";
import type { SignedBinding } from "@xenroam/control";
import { type Locator, type Nft, renderMobileNode, renderRemoval } from "@xenroam/mobility";
import { type AddressInfo, type Netlink, usableLocator } from "@xenroam/netlink";
import type { Log, MobilityHooks } from "./core.js";

/** A site as the control server tells a VM: its prefix and its gateway. */
/**
 * How long a binding is retried while the control server does not take it (unreachable, restarting): quickly
 * at first, then every minute for about as long as a pre-signed activation lives (10 min). A server down for
 * longer than a few seconds after a move must not leave the HoA on the old locator until the next one.
 */
const RETRY_MS = [200, 1000, 5000, 15_000, 30_000, ...Array<number>(9).fill(60_000)];

export interface SiteView {
  readonly name: string;
  readonly prefix: string;
  readonly gateway: { readonly linkLocal: string };
}

/** What the mobile node needs of the control server. */
export interface ControlApi {
  registerStandby(vm: string, locator: string): Promise<SignedBinding>;
  withdrawStandby(vm: string, locator: string): Promise<{ withdrawn: boolean }>;
  activate(b: SignedBinding): Promise<{ revision: number }>;
  /** The sites (for a roam: which site an address is in, and its gateway). */
  sites?(): Promise<{ readonly sites: readonly SiteView[] }>;
}

/** Sends a signed binding to every known correspondent (UDP datagrams; best effort, repeated). */
export type Announce = (b: SignedBinding) => Promise<void>;

/** Survives an agent restart: what the nftables table and the next activation are built from. */
export interface MobileState {
  readonly locators: readonly Locator[];
  /** The pre-signed activation for a prepared standby, per migration. */
  readonly pending?: { readonly migration: string; readonly binding: SignedBinding } | undefined;
  /** The highest sequence number this node has activated. */
  readonly seq: number;
  /** The last migration whose activation was handed out (switched() is idempotent per migration). */
  readonly done?: string | undefined;
  /** A roam's new locator that is in the rewrite but not yet bound at the control server (retried). */
  readonly unbound?: string | undefined;
  /**
   * The sites as the control server last gave them: read while the server is reachable, since after a move
   * the method did not make it is not (the default route still points at the old site's gateway).
   */
  readonly sites?: readonly SiteView[] | undefined;
}

export interface StateFile {
  load(): MobileState | undefined;
  save(state: MobileState): void;
  remove(): void;
}

export interface MobilePorts {
  readonly netlink: Netlink;
  readonly nft: Nft;
  readonly control: ControlApi;
  readonly announce: Announce;
  readonly state: StateFile;
  readonly log: Log;
  /** Retry timing for the server activation (tests make it short). */
  readonly retryMs?: readonly number[];
  /** How long step 4 waits for the new primary's carrier before announcing anyway (default 2 s). */
  readonly carrierWaitMs?: number;
  /** A prepare's refresh of the sites document comes at a random point of this long after it (default 3 s). */
  readonly sitesRefreshSpreadMs?: number;
  /** [0, 1): where in that spread (Math.random; tests fix it). */
  readonly random?: () => number;
}

export const CARRIER_WAIT_MS = 2000;

/** A prepare's refresh of the sites document comes within this long after it (spread: see prepared). */
const SITES_REFRESH_SPREAD_MS = 3000;

/**
 * Addresses refreshed within this many hundredths of a second of each other came from one RA (the kernel
 * handles all of an RA's prefixes at once): hearing both, the guest has not moved.
 */
export const ROAM_TIE_CS = 5;

export interface MobileConfig {
  readonly vm: string;
  readonly hoa: string;
}

/** The addresses of an interface that can be a locator (never a temporary one, never the HoA). */
const globalAddressesOf = async (netlink: Netlink, ifname: string, hoa: string) =>
  (await netlink.addresses(ifname)).filter((a) => usableLocator(a) && a.address !== hoa);

export class MobileNode implements MobilityHooks {
  readonly hoa: string;
  private state: MobileState;
  private activating: Promise<void> = Promise.resolve();
  private readonly unknownPrefixes = new Set<string>();
  /** A roam's binding is being attempted. */
  private binding = false;
  /** stop() ran: nothing reinstalls the rewrite after it. */
  private stopped = false;

  constructor(
    private readonly config: MobileConfig,
    private readonly ports: MobilePorts,
  ) {
    this.hoa = canonicalIpv6(config.hoa);
    this.state = ports.state.load() ?? { locators: [], seq: 0 };
  }

  /**
   * Start: the HoA on lo, the primary's routes adopted (`adoptPrimary`, from the agent core), the rewrite for
   * the current locators, and — on a first start — the primary's address registered and activated as the
   * HoA's locator. Idempotent: a restart converges.
   */
  async start(adoptPrimary: () => Promise<string | undefined>): Promise<void> {
    const { netlink, log } = this.ports;
    const onLo = (await netlink.addresses("lo")).some((a) => a.address === this.hoa);
    if (!onLo) await netlink.addAddress("lo", `${this.hoa}/128`, { nodad: true });
    // Routes may prefer the HoA as source only once it is a local address.
    const primary = await adoptPrimary();
    if (this.state.locators.length === 0) {
      // A first start: the guest must be on the network (the caller retries until it is).
      if (!primary) throw new Error("no interface has a default route yet");
      const [addr] = await globalAddressesOf(netlink, primary, this.hoa);
      if (!addr) throw new Error(`${primary} has no global address yet`);
      await this.apply({ ...this.state, locators: [{ ifname: primary, moa: addr.address }] });
    } else {
      await this.ports.nft.apply(renderMobileNode({ hoa: this.hoa, locators: this.state.locators }));
    }
    const first = this.state.locators[0];
    if (this.state.seq === 0 && first) {
      // Never activated (a first start, or the server was unreachable then): register and activate.
      const binding = await this.ports.control.registerStandby(this.config.vm, first.moa);
      await this.handOut(binding, "start");
    }
    // A roam whose binding did not go through before a restart: bind it now.
    if (this.state.unbound) this.retryUnbound("start");
    // The sites, while the server is reachable: a later roam needs them when it is not. In the background:
    // right after a move the server may be out of reach, and the roam must not wait for that to time out.
    void this.refreshSites();
    log("mobility_started", { hoa: this.hoa, locators: this.state.locators });
  }

  /**
   * Step 2, once the MoA is up on the secondary: accept it on ingress, rewrite to it when the kernel routes
   * by that interface, and register it as a standby for a pre-signed activation, which is returned (for Dom0
   * to relay at the pause). A server that cannot be reached does not fail the prepare: the switch then
   * activates through the server (slower).
   */
  async prepared(migration: string, primary: string, standby: Locator): Promise<SignedBinding | undefined> {
    const { log } = this.ports;
    const current = this.state.locators.find((l) => l.ifname === primary);
    const locators = [
      ...(current ? [current] : []),
      { ifname: standby.ifname, moa: canonicalIpv6(standby.moa) },
    ];
    await this.apply({ ...this.state, locators, pending: undefined });
    try {
      const binding = await this.ports.control.registerStandby(this.config.vm, standby.moa);
      this.save({ ...this.state, pending: { migration, binding } });
      // Kept current for a roam, should this move end up without the method; a moment later, at a random
      // point of it, not in the burst of a host preparing its VMs all at once (one more TLS call each).
      setTimeout(
        () => {
          if (!this.stopped) void this.refreshSites();
        },
        (this.ports.random ?? Math.random)() * (this.ports.sitesRefreshSpreadMs ?? SITES_REFRESH_SPREAD_MS),
      ).unref();
      log("standby_registered", {
        migration,
        moa: binding.locator,
        seq: binding.seq,
        expiresAt: binding.expiresAt,
      });
      return binding;
    } catch (err) {
      log("standby_unregistered", { migration, error: (err as Error).message });
      return undefined;
    }
  }

  /**
   * Step 4, right after the routes moved: correspondents first (directly), then the server. Returns once the
   * correspondents have been sent the binding; the server's acknowledgement is awaited in the background.
   */
  async switched(migration: string, primary: string): Promise<void> {
    const { log } = this.ports;
    if (this.state.done === migration) return;
    const pending = this.state.pending?.migration === migration ? this.state.pending.binding : undefined;
    const locator = this.state.locators.find((l) => l.ifname === primary);
    await this.carrierOf(primary, migration);
    if (pending && locator && pending.locator === locator.moa) {
      await this.handOut(pending, migration);
      return;
    }
    this.save({ ...this.state, done: migration });
    // No pre-signed activation (the server was unreachable at step 2): ask for one now.
    const [addr] = locator
      ? [{ address: locator.moa }]
      : await globalAddressesOf(this.ports.netlink, primary, this.hoa);
    if (!addr) {
      log("activation_failed", { migration, reason: `${primary} has no locator` });
      return;
    }
    if (!locator) await this.apply({ ...this.state, locators: [{ ifname: primary, moa: addr.address }] });
    this.activating = this.activating.then(async () => {
      for (const wait of [0, ...(this.ports.retryMs ?? RETRY_MS)]) {
        await new Promise((r) => setTimeout(r, wait));
        if (this.stopped) return;
        try {
          const binding = await this.ports.control.registerStandby(this.config.vm, addr.address);
          await this.handOut(binding, migration);
          return;
        } catch (err) {
          log("activation_retry", { migration, error: (err as Error).message });
        }
      }
    });
  }

  /**
   * Right after a resume the frontend of the new primary is still reconnecting to its backend (on real Xen:
   * hundreds of ms under TCG, less on hardware); datagrams sent before it has a carrier are lost. Waits for it,
   * bounded: the announcement goes out either way.
   */
  private async carrierOf(ifname: string, migration: string): Promise<void> {
    const started = Date.now();
    const deadline = started + (this.ports.carrierWaitMs ?? CARRIER_WAIT_MS);
    for (;;) {
      const link = await this.ports.netlink.link(ifname);
      if (link?.carrier) {
        const ms = Date.now() - started;
        if (ms > 0) this.ports.log("carrier_waited", { migration, ifname, ms });
        return;
      }
      if (Date.now() >= deadline) {
        this.ports.log("carrier_missing", { migration, ifname, ms: Date.now() - started });
        return;
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /**
   * Whether the primary hears another site than its locator's. Each RA refreshes the addresses SLAAC made from
   * its prefixes (the kernel's tstamp), all of one RA at once; after a move the new site's address is refreshed
   * and the old one is not. The most recently refreshed locator-capable address of the primary is where the
   * guest is — when the locator's own address is not refreshed as recently (within ROAM_TIE_CS), and the two
   * lie in different sites of the sites document (which also names the new site's gateway). Undefined when
   * nothing moved, or when the new address is in no known site (logged once per prefix).
   */
  async locate(
    primary: string,
  ): Promise<{ from?: string; to: string; site: string; gateway: string } | undefined> {
    if (this.stopped || this.state.unbound) {
      if (this.state.unbound && !this.binding) this.retryUnbound("check");
      return undefined;
    }
    const locator = this.state.locators.find((l) => l.ifname === primary);
    const addrs = await globalAddressesOf(this.ports.netlink, primary, this.hoa);
    if (addrs.length === 0) return undefined;
    const refreshed = (a: { refreshedCs?: number | undefined }) => a.refreshedCs ?? 0;
    const newest = addrs.reduce((a, b) => (refreshed(b) > refreshed(a) ? b : a));
    if (locator && newest.address === locator.moa) return undefined;
    const mine = locator && addrs.find((a) => a.address === locator.moa);
    if (mine && refreshed(newest) - refreshed(mine) <= ROAM_TIE_CS) return undefined;
    const site = await this.siteOf(newest.address);
    if (!site) return undefined;
    if (locator && (await this.siteOf(locator.moa))?.name === site.name) return undefined;
    return {
      ...(locator ? { from: locator.moa } : {}),
      to: newest.address,
      site: site.name,
      gateway: site.gateway.linkLocal,
    };
  }

  /**
   * Cheap, in memory: whether an address the kernel announced could mean a move — global, usable, in a /64 of
   * none of the current locators. The RA refreshes of the locators' own prefixes (every few seconds; on a
   * staging bridge every few tens of ms) are not.
   */
  unfamiliar(a: AddressInfo): boolean {
    if (!usableLocator(a) || a.address === this.hoa) return false;
    const p64 = (x: string) => parseIpv6(x).slice(0, 4).join(":");
    return !this.state.locators.some((l) => p64(l.moa) === p64(a.address));
  }

  /** The site an address is in (the sites document, fetched again when a prefix is not in the copy). */
  private async siteOf(address: string): Promise<SiteView | undefined> {
    const inSite = (s: SiteView) => prefixContains(parsePrefix(s.prefix), parseIpv6(address));
    let site = this.state.sites?.find(inSite);
    if (!site) {
      await this.refreshSites();
      site = this.state.sites?.find(inSite);
    }
    if (!site) {
      const key = formatIpv6(parseIpv6(address)).split(":").slice(0, 4).join(":");
      if (!this.unknownPrefixes.has(key)) {
        this.unknownPrefixes.add(key);
        this.ports.log("roam_unknown_site", {
          address,
          reason: "no site of the control server has this prefix",
        });
      }
    }
    return site;
  }

  /** The sites document, read again and kept in the state file (best effort: the copy stays when it fails). */
  async refreshSites(): Promise<void> {
    if (!this.ports.control.sites) return;
    const doc = await this.ports.control.sites().catch(() => undefined);
    if (!doc) return;
    const sites = doc.sites.map((x) => ({
      name: x.name,
      prefix: x.prefix,
      gateway: { linkLocal: x.gateway.linkLocal },
    }));
    if (JSON.stringify(sites) !== JSON.stringify(this.state.sites)) this.save({ ...this.state, sites });
  }

  /**
   * After a move the method did not make: the primary's locator is `address` from now on (the rewrite at
   * once), and the HoA is bound to it in the background (retried until the control server takes it).
   */
  async roamed(primary: string, address: string, trigger: string): Promise<void> {
    if (this.stopped) return;
    const moa = canonicalIpv6(address);
    const locators = [...this.state.locators.filter((l) => l.ifname !== primary), { ifname: primary, moa }];
    await this.apply({ ...this.state, locators, pending: undefined, unbound: moa });
    this.retryUnbound(trigger);
  }

  /** Binds the roam's locator (registers it and activates it): correspondents directly, then the server. */
  private retryUnbound(trigger: string): void {
    const address = this.state.unbound;
    if (!address || this.binding || this.stopped) return;
    const migration = `roam-${Date.now().toString(36)}`;
    this.binding = true;
    this.activating = this.activating.then(async () => {
      try {
        for (const wait of [0, ...(this.ports.retryMs ?? RETRY_MS)]) {
          await new Promise((r) => setTimeout(r, wait));
          if (this.stopped || this.state.unbound !== address) return;
          try {
            const binding = await this.ports.control.registerStandby(this.config.vm, address);
            this.save({ ...this.state, unbound: undefined });
            await this.handOut(binding, migration);
            return;
          } catch (err) {
            this.ports.log("activation_retry", { migration, trigger, error: (err as Error).message });
          }
        }
        this.ports.log("activation_failed", {
          migration,
          reason: `the control server did not take ${address} yet`,
        });
      } finally {
        this.binding = false;
      }
    });
  }

  /** The prepare was undone: the standby locator is dropped from the rewrite and its activation forgotten. */
  async aborted(migration: string, primary: string | undefined): Promise<void> {
    const kept = this.state.locators.filter((l) => l.ifname === primary);
    // Without a known primary, keep the locators: an empty rewrite would cut the HoA off.
    const locators = primary && kept.length > 0 ? kept : this.state.locators;
    if (locators.length === this.state.locators.length && this.state.pending?.migration !== migration) return;
    const dropped = this.state.locators.filter((l) => !locators.includes(l));
    await this.apply({ ...this.state, locators, pending: undefined });
    this.ports.log("standby_dropped", { migration, locators });
    // The server lets correspondents accept packets from registered locators: this one goes there too. Best
    // effort (the next activation prunes it anyway) and in the background: the guest's answer to Dom0 (its
    // reason, before Dom0's deadline) must not wait on the control server.
    this.activating = this.activating.then(async () => {
      let active = false;
      for (const l of dropped) {
        await this.ports.control.withdrawStandby(this.config.vm, l.moa).then(
          (r) => this.ports.log("standby_withdrawn", { migration, moa: l.moa, withdrawn: r.withdrawn }),
          (err: unknown) => {
            // 409: the standby is the active locator — Dom0 relayed its activation at a pause, the move then
            // failed and no rollback reached the server. The guest takes its own locator back below.
            active ||= (err as { status?: number }).status === 409;
            this.ports.log("standby_withdraw_failed", {
              migration,
              moa: l.moa,
              error: (err as Error).message,
            });
          },
        );
      }
      const [here] = locators;
      if (active && here && locators.length === 1) {
        await this.ports.control.registerStandby(this.config.vm, here.moa).then(
          (binding) => this.handOut(binding, migration),
          (err: unknown) =>
            this.ports.log("locator_reclaim_failed", {
              migration,
              moa: here.moa,
              error: (err as Error).message,
            }),
        );
      }
    });
  }

  /** Waits for background activations (tests, shutdown). */
  async settled(): Promise<void> {
    let seen: Promise<void>;
    do {
      seen = this.activating;
      await seen;
    } while (seen !== this.activating);
  }

  /** Shutdown: the rewrite goes; the HoA stays on lo (sockets bound to it keep working locally). */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.ports.nft.apply(renderRemoval());
    this.ports.log("mobility_stopped", { hoa: this.hoa });
  }

  private async handOut(binding: SignedBinding, migration: string): Promise<void> {
    const { log, announce, control } = this.ports;
    const started = Date.now();
    await announce(binding).catch((err: unknown) =>
      log("announce_failed", { migration, error: (err as Error).message }),
    );
    this.save({
      ...this.state,
      pending: undefined,
      seq: Math.max(this.state.seq, binding.seq),
      done: migration,
    });
    log("binding_announced", { migration, moa: binding.locator, seq: binding.seq, ms: Date.now() - started });
    this.activating = this.activating.then(async () => {
      for (const wait of [0, ...(this.ports.retryMs ?? RETRY_MS)]) {
        await new Promise((r) => setTimeout(r, wait));
        if (this.stopped) return;
        try {
          const { revision } = await control.activate(binding);
          log("binding_activated", { migration, seq: binding.seq, revision });
          return;
        } catch (err) {
          const e = err as Error & { status?: number; code?: string };
          // Dom0 relayed this very binding while the VM was paused: it is active already.
          if (e.status === 409 && e.code === "already-active") {
            log("binding_activated", { migration, seq: binding.seq, already: true });
            return;
          }
          // The locator waits for a host's or an admin's attestation: the server activates it then.
          if (e.status === 409 && e.code === "awaiting-proof") {
            log("binding_awaits_proof", { migration, seq: binding.seq, reason: e.message });
            return;
          }
          // 409: refused for good (a newer binding is active, or it expired); say so and stop.
          if (e.status === 409) {
            log("binding_refused", { migration, seq: binding.seq, reason: e.message });
            return;
          }
          log("activation_retry", { migration, error: e.message });
        }
      }
    });
  }

  private async apply(state: MobileState): Promise<void> {
    await this.ports.nft.apply(renderMobileNode({ hoa: this.hoa, locators: state.locators }));
    this.save(state);
  }

  private save(state: MobileState): void {
    this.state = state;
    this.ports.state.save(state);
  }
}

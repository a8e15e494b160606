// The guest agent's core: steps 2 (MoA allocation) and 4 (interface switch) of the method. It converges the
// guest's interfaces to what the channel (xenstore) says — request, arrival, its own last status — so any
// event, a reconnection after resume, or a restart in any phase leads to the same result. Ports only.

import { isNetlinkError, type LinkInfo, type Netlink, type RouteInfo } from "@xenroam/netlink";
import {
  type AgentStatus,
  encodeMessage,
  KEYS,
  type PrepareAnswer,
  type PrepareRequest,
  parseAgentStatus,
  type SignedActivation,
  parseAnswer,
  parseArrival,
  parseRequest,
} from "@xenroam/protocol";

/**
 * Routes the agent installs; neither can equal the kernel's RA-learned metric (1024). The primary's is the
 * guest's default route (with the HoA as its source): below every RA-learned one, the kernel's (which the
 * agent removes where it can), systemd-networkd's (1024) and NetworkManager's (100 for ethernet), which their
 * managers add again at each RA on the vif they keep. Above them (1100, until 2026-12-04), a networkd guest's
 * new connections took networkd's route, without the HoA as source, and the mobility layer's ingress rewrite
 * turned their answers to the HoA: on real Xen with the Debian guest the standby's registration at the
 * prepare never reached the control server.
 */
export const PRIMARY_METRIC = 64;
export const STANDBY_METRIC = 2100;
/**
 * After the reflex: how long the agent waits for the new primary's carrier before going on. It is woken by the
 * link event (linkChanged) and looks again itself every REFLEX_CARRIER_POLL_MS in case one is missed: on one
 * vCPU, shared through Xen's scheduler with Dom0's xenstored, every poll slows the frontend it waits for.
 */
export const REFLEX_CARRIER_WAIT_MS = 2000;
export const REFLEX_CARRIER_POLL_MS = 250;
/** How much earlier than Dom0's deadline the agent gives up waiting for its MoA, to answer with the reason. */
export const ANSWER_MARGIN_MS = 1500;

/** The guest's side of the Dom0 channel: keys under its xenroam directory. */
export interface GuestChannel {
  read(key: string): Promise<string | undefined>;
  write(key: string, value: string): Promise<void>;
}

export type Log = (event: string, fields?: Record<string, unknown>) => void;

/** The mobility layer as the core sees it (MobileNode in mobile.ts); absent when the VM has no HoA. */
export interface MobilityHooks {
  readonly hoa: string;
  /**
   * Step 2, the MoA is up on the standby interface. Returns the pre-signed activation of that MoA when the
   * control server issued one: it goes to Dom0 with the answer, so Dom0 can relay it while the VM is paused.
   */
  prepared(
    migration: string,
    primary: string,
    standby: { ifname: string; moa: string },
  ): Promise<SignedActivation | undefined>;
  /** Step 4, the routes moved to `primary`: hand out the activation. Idempotent per migration. */
  switched(migration: string, primary: string): Promise<void>;
  /** The prepare was undone (abort or failure): back to the primary's locator only. */
  aborted(migration: string, primary: string | undefined): Promise<void>;
  /**
   * Whether the primary now hears another site than its locator's (a move the method did not make): the
   * address to take, or undefined when nothing moved.
   */
  locate?(
    primary: string,
  ): Promise<
    | { readonly from?: string; readonly to: string; readonly site: string; readonly gateway: string }
    | undefined
  >;
  /** The primary's locator becomes `address`: the rewrite points at it and the HoA is bound to it. */
  roamed?(primary: string, address: string, trigger: string): Promise<void>;
}

export interface AgentPorts {
  readonly netlink: Netlink;
  readonly channel: GuestChannel;
  readonly log: Log;
  readonly mobility?: MobilityHooks;
}

interface Roles {
  primary: LinkInfo;
  secondary: LinkInfo;
}

export class AgentError extends Error {
  override readonly name = "AgentError";
}

export class Agent {
  private running: Promise<void> = Promise.resolve();
  private again = false;
  private busy = false;
  /** One change of the guest's network at a time: the method's steps and a roam never interleave. */
  private lock: Promise<unknown> = Promise.resolve();
  private roaming: Promise<void> | undefined;
  private roamAgain = false;
  /** The phase this agent last wrote (kept here: a roam decides without a round trip to Dom0's channel). */
  private phase: AgentStatus["phase"] | undefined;
  /** Who waits for which link's carrier (awaitCarrier), woken by linkChanged. */
  private readonly carrierWaiters = new Map<string, Set<() => void>>();
  /** Set by a prepare that succeeded, until its migration is switched or undone: what `reflex` acts on. */
  private armed:
    { readonly id: string; readonly oldPrimary: string; readonly newPrimary: string } | undefined;
  /**
   * The old primary `reflex` set down, for which migration: the switch then does not again, and a pass that
   * does not switch after all (an abort written meanwhile, an arrival the schema refuses) sets it up again.
   */
  private down: { readonly id: string; readonly dev: string } | undefined;

  constructor(private readonly ports: AgentPorts) {}

  /**
   * Looks at the channel and the interfaces and does what is missing. Calls while one runs are coalesced
   * into one more run, so a burst of watch events costs one pass.
   */
  converge(reason: string): Promise<void> {
    if (this.busy) {
      this.again = true;
      return this.running;
    }
    this.busy = true;
    this.running = (async () => {
      try {
        do {
          this.again = false;
          await this.exclusive(() => this.pass(reason));
        } while (this.again);
      } finally {
        this.busy = false;
      }
    })();
    return this.running;
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.lock.then(fn, fn);
    this.lock = run.catch(() => {});
    return run;
  }

  /**
   * Convergence after a move the method did not make — a fallback to a plain migration, a plain `xl migrate`
   * by hand, the agent down during the move: when the primary hears another site's RAs than its locator's
   * (mobility.locate), the default route goes to that site's gateway, the rewrite to the new address, and the
   * HoA is bound there (mobility.roamed). Never while a method migration is being prepared or switched.
   * Calls while one runs are coalesced into one more run. Never throws (logs).
   */
  roam(trigger: string): Promise<void> {
    if (this.roaming) {
      this.roamAgain = true;
      return this.roaming;
    }
    this.roaming = (async () => {
      try {
        do {
          this.roamAgain = false;
          await this.roamOnce(trigger).catch((err: unknown) =>
            this.ports.log("roam_failed", {
              trigger,
              error: err instanceof Error ? err.message : String(err),
            }),
          );
        } while (this.roamAgain);
      } finally {
        this.roaming = undefined;
      }
    })();
    return this.roaming;
  }

  private async roamOnce(trigger: string): Promise<void> {
    const { mobility, netlink, log } = this.ports;
    if (!mobility?.locate || !mobility.roamed || this.methodBusy()) return;
    // Prepared, the guest expects its arrival: the periodic look (a route dump, the sites) would run at the
    // resume, on the one vCPU the new primary's frontend is connecting with. An address from another site's RA
    // (trigger "address") is still looked at: a move without the method makes one.
    if (this.armed && trigger === "timer") return;
    const primaryNow = async () =>
      (await netlink.routes()).find((r) => r.dst === "default" && r.metric === PRIMARY_METRIC)?.dev;
    const primary = await primaryNow();
    if (!primary) return;
    // Decided without the lock (reads only); the lock is taken to act, and the decision checked again there.
    const moved = await mobility.locate(primary);
    if (!moved) return;
    await this.exclusive(async () => {
      if (this.methodBusy() || (await primaryNow()) !== primary) return;
      const started = Date.now();
      // The site's gateway from the sites document; a MAC the guest cached for that link-local at the old
      // site (gateways may share fe80::1) must not be used here.
      await netlink.flushNeighbours(primary).catch(() => {});
      await this.replaceDefault(primary, moved.gateway, PRIMARY_METRIC);
      await mobility.roamed?.(primary, moved.to, trigger);
      // The old site's address stays on the primary after a move without the method (valid for a day,
      // preferred for hours: a source the kernel may still pick, an address nothing routes here any more).
      // The method's switch takes it away with the old primary; here it goes once the HoA is bound anew.
      let dropped: string | undefined;
      if (moved.from && moved.from !== moved.to) {
        const held = (await netlink.addresses(primary)).find((a) => a.address === moved.from);
        if (held) {
          await netlink
            .deleteAddress(primary, `${held.address}/${held.prefixLength}`)
            .then(() => (dropped = held.address))
            .catch((err: unknown) =>
              log("roam_address_kept", { address: held.address, error: (err as Error).message }),
            );
        }
      }
      log("roamed", {
        ...(dropped ? { dropped } : {}),
        trigger,
        primary,
        from: moved.from,
        to: moved.to,
        site: moved.site,
        gateway: moved.gateway,
        ms: Date.now() - started,
      });
    });
  }

  private async setStatus(status: AgentStatus): Promise<void> {
    this.phase = status.phase;
    await this.ports.channel.write(KEYS.status, encodeMessage(status));
  }

  /** A method migration is being prepared or switched by this agent: no roam may touch the network now. */
  private methodBusy(): boolean {
    return this.phase === "preparing" || this.phase === "switching";
  }

  private async answer(a: PrepareAnswer): Promise<void> {
    await this.ports.channel.write(KEYS.answer, encodeMessage(a));
  }

  /** Ethernet interfaces of the guest (no loopback), by name. */
  private async nics(): Promise<LinkInfo[]> {
    return (await this.ports.netlink.links()).filter((l) => l.name !== "lo" && l.mac !== undefined);
  }

  /**
   * The one step of the switch that must not wait (measured on real Xen, scripts/xen/domu/trace.sh): after a
   * resume the guest's kernel keeps routing into the old primary — its frontend is detached (netfront_resume,
   * and xl's hold keeps it so), and linkwatch skips a detached device, so its routes are never marked linkdown —
   * until the old primary is set down. So when armed by a prepare, a pass first reads the request, the answer
   * and the arrival and, when they say what the pass would switch on, sets the old primary down at once: one
   * xenstore round trip, JSON.parse and the link change, no schema and no other step before it (a schema's
   * first use after a long idle compiles, which cost 0.4 s here). The pass then reads and validates them again
   * and does the rest; when it does not switch after all, it sets the old primary up again (undoReflex).
   */
  private async reflex(): Promise<void> {
    const armed = this.armed;
    if (!armed) return;
    const started = Date.now();
    const [requestText, answerText, arrivalText] = await Promise.all([
      this.ports.channel.read(KEYS.request),
      this.ports.channel.read(KEYS.answer),
      this.ports.channel.read(KEYS.arrived),
    ]);
    const field = (text: string | undefined, key: string): unknown => {
      try {
        return text === undefined ? undefined : (JSON.parse(text) as Record<string, unknown> | null)?.[key];
      } catch {
        return undefined; // not a message at all: the pass reports it
      }
    };
    // The pass's own condition for the switch, read cheaply: this migration's request (an abort of it wins over
    // its arrival: the pass then undoes the prepare), its answer still "prepared", and its arrival.
    if (field(requestText, "id") !== armed.id || field(requestText, "kind") === "abort") return;
    if (field(answerText, "id") !== armed.id || field(answerText, "status") !== "prepared") return;
    if (field(arrivalText, "id") !== armed.id || this.armed !== armed) return;
    this.armed = undefined;
    await this.ports.netlink.setLink(armed.oldPrimary, { up: false });
    this.down = { id: armed.id, dev: armed.oldPrimary };
    const downMs = Date.now() - started;
    // The rest of the switch can wait for the new primary's frontend, and should: on one vCPU the agent's
    // work competes with the kernel's xenwatch thread, which is connecting that frontend right now.
    const carrierFrom = Date.now();
    const link = await this.awaitCarrier(armed.newPrimary);
    this.ports.log("old_primary_down", {
      migration: armed.id,
      dev: armed.oldPrimary,
      ms: downMs,
      ...(link ? { carrierMs: Date.now() - carrierFrom } : { carrier: "missing" }),
    });
  }

  /** Waits for the link's carrier for up to REFLEX_CARRIER_WAIT_MS: the link once it has one. */
  private async awaitCarrier(dev: string): Promise<LinkInfo | undefined> {
    const started = Date.now();
    const waiters = this.carrierWaiters.get(dev) ?? new Set<() => void>();
    this.carrierWaiters.set(dev, waiters);
    // Registered before each look, so an event that comes while the kernel answers is not lost.
    let woken = false;
    let wake: () => void = () => (woken = true);
    const waiter = () => wake();
    waiters.add(waiter);
    try {
      for (;;) {
        woken = false;
        const link = await this.ports.netlink.link(dev);
        if (link?.carrier) return link;
        const left = REFLEX_CARRIER_WAIT_MS - (Date.now() - started);
        if (left <= 0) return undefined;
        if (woken) continue;
        await new Promise<void>((resolve) => {
          const timer = setTimeout(done, Math.min(REFLEX_CARRIER_POLL_MS, left));
          function done() {
            clearTimeout(timer);
            resolve();
          }
          wake = done;
        });
        wake = () => (woken = true);
      }
    } finally {
      waiters.delete(waiter);
      if (waiters.size === 0) this.carrierWaiters.delete(dev);
    }
  }

  /** The daemon's link events: a link that got its carrier wakes whoever waits for it (awaitCarrier). */
  linkChanged(link: LinkInfo): void {
    if (link.carrier) for (const wake of this.carrierWaiters.get(link.name) ?? []) wake();
  }

  private async pass(reason: string): Promise<void> {
    const { channel, log } = this.ports;
    await this.reflex().catch((err: unknown) =>
      log("reflex_failed", { error: err instanceof Error ? err.message : String(err) }),
    );
    // One round trip for everything the decision needs: after a resume, this is on the critical path.
    const [requestText, statusText, answerText, arrivalText] = await Promise.all([
      channel.read(KEYS.request),
      channel.read(KEYS.status),
      channel.read(KEYS.answer),
      channel.read(KEYS.arrived),
    ]);
    if (requestText === undefined) return;
    const parsed = parseRequest(requestText);
    if (!parsed.ok) {
      const previous = await channel.read(KEYS.answer);
      const answer: PrepareAnswer = { v: 1, id: "invalid", status: "error", reason: parsed.reason };
      if (previous !== encodeMessage(answer)) {
        log("request_refused", { reason: parsed.reason });
        await this.answer(answer);
      }
      return;
    }
    const request = parsed.value;
    const statusParsed = statusText === undefined ? undefined : parseAgentStatus(statusText);
    const status = statusParsed?.ok ? statusParsed.value : undefined;
    const answer = answerText === undefined ? undefined : parseAnswer(answerText);
    const answered = answer?.ok && answer.value.id === request.id ? answer.value : undefined;

    if (request.kind === "abort") {
      if (status?.id === request.id && status.phase !== "switched" && answered?.status !== "aborted") {
        await this.abort(request.id, status);
      }
      return;
    }

    const arrival = arrivalText === undefined ? undefined : parseArrival(arrivalText);
    const arrived = arrival?.ok === true && arrival.value.id === request.id;

    if (status?.id === request.id && status.phase === "switched") {
      // A restart right after the switch: make sure the binding went out (a no-op when it did).
      if (status.primary) await this.ports.mobility?.switched(request.id, status.primary);
      return;
    }
    if (arrived && answered?.status === "prepared") {
      await this.switchOver(request, answered.ifname, status, reason);
      return;
    }
    // The reflex acted on what the schema now refuses: no switch follows, so the old primary carries on.
    await this.undoReflex(request.id, "no switch");
    if (answered === undefined) await this.prepare(request);
  }

  /** Which interface is which: the secondary is the one with the MAC Dom0 staged. */
  private async roles(request: PrepareRequest): Promise<Roles> {
    const nics = await this.nics();
    const secondary = nics.find((l) => l.mac === request.secondaryMac);
    if (!secondary) {
      throw new AgentError(
        `no interface has MAC ${request.secondaryMac} (this guest has ${nics.map((n) => `${n.name} ${n.mac}`).join(", ")})`,
      );
    }
    const others = nics.filter((l) => l !== secondary);
    const primary = others.find((l) => l.up) ?? others[0];
    if (!primary) throw new AgentError("the guest needs two interfaces; it has one");
    return { primary, secondary };
  }

  /** Step 2: bring the secondary up on the staging bridge and take the MoA by SLAAC from its RA. */
  private async prepare(request: PrepareRequest): Promise<void> {
    const { netlink, log } = this.ports;
    const started = Date.now();
    log("prepare_started", { migration: request.id, site: request.site, prefix: request.prefix });
    this.armed = undefined;
    if (this.down) await this.undoReflex(this.down.id, "new prepare");
    await this.setStatus({ v: 1, phase: "preparing", id: request.id });
    // Set once this interface is being changed: only then is there anything to undo on failure.
    let touched: string | undefined;
    let primaryName: string | undefined;
    try {
      const { primary, secondary } = await this.roles(request);
      primaryName = primary.name;
      if (secondary.up && (await this.hasDefaultRoute(secondary.name, PRIMARY_METRIC))) {
        throw new AgentError(`${secondary.name} carries traffic now; Dom0 staged the wrong vif`);
      }
      const dev = secondary.name;
      touched = dev;
      // SLAAC on this interface only; no RA-learned default route, which would compete with the primary's.
      for (const [key, value] of [
        ["disable_ipv6", 0],
        ["accept_ra", 2],
        ["autoconf", 1],
        ["accept_ra_pinfo", 1],
        ["accept_ra_defrtr", 0],
        // DAD on the isolated staging bridge proves nothing about the destination segment (and costs 1 s).
        ["accept_dad", 0],
        // At the destination the old primary is restored unplugged; the kernel must route around it at once.
        ["ignore_routes_with_linkdown", 1],
        ["router_solicitations", 3],
        ["router_solicitation_interval", 1],
      ] as const) {
        await netlink.writeSysctl(dev, key, value);
      }
      await netlink.writeSysctl(primary.name, "ignore_routes_with_linkdown", 1);
      await netlink.setLink(dev, { up: true });
      await this.replaceDefault(dev, request.gateway.linkLocal, STANDBY_METRIC);
      // Dom0 waits request.timeoutMs for the answer: give up a little earlier, so that the reason (no RA, say)
      // reaches it instead of a silence it can only guess about.
      const margin = Math.min(ANSWER_MARGIN_MS, request.timeoutMs / 4);
      // The MoA is the address the kernel makes from the staged RA, however it makes its interface identifiers
      // (addr_gen_mode: EUI-64, stable-privacy, random); a temporary address beside it is never the MoA.
      const { address: moa } = await netlink.waitAddressIn(dev, request.prefix, {
        timeoutMs: Math.max(100, request.timeoutMs - margin - (Date.now() - started)),
      });
      // The gateway's MAC stays as the staging RA taught it (the RAs carry it): after resume the first packet
      // out of the new primary is data, not a neighbour solicitation. Measured on real Xen (bench:xen --trace,
      // 2026-12-04): a solicitation queued while the frontend is still detached goes out at its attach, before
      // the backend forwards, and is lost — the kernel asks again a second later. The destination's router
      // learns the MoA from the unsolicited NA netfront sends once its backend is connected
      // (netdev_notify_peers), or from its own solicitation.
      log("moa_configured", { migration: request.id, moa, ms: Date.now() - started });
      const activation = await this.ports.mobility?.prepared(request.id, primary.name, { ifname: dev, moa });
      await this.answer({
        v: 1,
        id: request.id,
        status: "prepared",
        moa,
        ifname: dev,
        ...(activation ? { activation } : {}),
      });
      await this.setStatus({
        v: 1,
        phase: "prepared",
        id: request.id,
        primary: primary.name,
        secondary: dev,
      });
      this.armed = { id: request.id, oldPrimary: primary.name, newPrimary: dev };
      log("prepared", { migration: request.id, moa, ifname: dev, ms: Date.now() - started });
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      log("prepare_failed", { migration: request.id, reason });
      // Leave the guest as it was: the secondary down again, without the standby route.
      if (touched) await this.standDown(touched).catch(() => {});
      await this.ports.mobility?.aborted(request.id, primaryName).catch(() => {});
      await this.answer({ v: 1, id: request.id, status: "error", reason: reason.slice(0, 500) });
      await this.setStatus({
        v: 1,
        phase: "error",
        id: request.id,
        detail: reason.slice(0, 500),
        ...(primaryName ? { primary: primaryName } : {}),
        ...(touched ? { secondary: touched } : {}),
      });
    }
  }

  /** Step 4: the secondary becomes the primary; the old primary goes down and becomes the next secondary. */
  private async switchOver(
    request: PrepareRequest,
    newPrimary: string,
    status: AgentStatus | undefined,
    reason: string,
  ): Promise<void> {
    const { netlink, log } = this.ports;
    const started = Date.now();
    this.armed = undefined;
    // The prepare recorded which interface was primary; ask the kernel only when that record is missing.
    const recorded = status?.id === request.id && status.primary ? status.primary : undefined;
    const primaryName = recorded ?? (await this.roles(request)).primary.name;
    const oldPrimary = primaryName === newPrimary ? undefined : primaryName;
    // The old primary goes first: its vif sits on the parking bridge now, so every packet it takes is lost.
    // The new primary's standby route (prepared in step 2) carries traffic from this moment on. The kernel
    // refuses two default routes with one metric, so the primary metric moves only after the old one is gone.
    if (oldPrimary) {
      log("switch_started", { migration: request.id, from: oldPrimary, to: newPrimary, trigger: reason });
      if (this.down?.id !== request.id || this.down.dev !== oldPrimary)
        await netlink.setLink(oldPrimary, { up: false });
      this.down = undefined;
      // With the old primary down its routes are gone, and the standby route carries traffic: correspondents
      // learn the new locator now, before the route cleanup below.
      await this.ports.mobility?.switched(request.id, newPrimary);
      log("switch_announced", { migration: request.id, to: newPrimary, ms: Date.now() - started });
      await this.setStatus({ v: 1, phase: "switching", id: request.id });
      for (const r of await netlink.routes({ dev: oldPrimary })) {
        if (r.dst === "default")
          await netlink.deleteRoute({ dst: "default", dev: oldPrimary, metric: r.metric }).catch(() => {});
      }
      await netlink.writeSysctl(oldPrimary, "accept_ra_defrtr", 0);
    }
    await this.replaceDefault(newPrimary, request.gateway.linkLocal, PRIMARY_METRIC);
    // Without an old primary to take down (a restart mid-switch), the binding goes out here (idempotent).
    await this.ports.mobility?.switched(request.id, newPrimary);
    for (const r of await netlink.routes({ dev: newPrimary })) {
      if (r.dst === "default" && r.metric !== PRIMARY_METRIC) {
        await netlink
          .deleteRoute({ dst: "default", dev: newPrimary, metric: r.metric })
          .catch((err: unknown) =>
            log("route_delete_failed", { dev: newPrimary, metric: r.metric, error: String(err) }),
          );
      }
    }
    await this.setStatus({
      v: 1,
      phase: "switched",
      id: request.id,
      primary: newPrimary,
      ...(oldPrimary ? { secondary: oldPrimary } : {}),
    });
    log("switched", {
      migration: request.id,
      primary: newPrimary,
      secondary: oldPrimary,
      ms: Date.now() - started,
    });
  }

  private async abort(id: string, status: AgentStatus): Promise<void> {
    const { log } = this.ports;
    this.armed = undefined;
    await this.undoReflex(id, "abort");
    const dev = status.secondary;
    if (dev) await this.standDown(dev);
    await this.ports.mobility?.aborted(id, status.primary);
    await this.answer({ v: 1, id, status: "aborted" });
    await this.setStatus({ v: 1, phase: "idle", ...(status.primary ? { primary: status.primary } : {}) });
    log("aborted", { migration: id, secondary: dev });
  }

  /** The old primary up again when the reflex set it down for `id` and no switch follows. Never throws. */
  private async undoReflex(id: string, why: string): Promise<void> {
    const down = this.down;
    if (down?.id !== id) return;
    this.down = undefined;
    await this.ports.netlink
      .setLink(down.dev, { up: true })
      .then(() => this.ports.log("old_primary_restored", { migration: id, dev: down.dev, why }))
      .catch((err: unknown) =>
        this.ports.log("old_primary_restore_failed", { migration: id, dev: down.dev, error: String(err) }),
      );
  }

  /** The secondary back to how it waits between migrations: down, with no default route of ours. */
  private async standDown(dev: string): Promise<void> {
    const { netlink } = this.ports;
    const link = await netlink.link(dev);
    if (!link) return;
    await netlink.setLink(dev, { up: false });
    for (const r of await netlink.routes({ dev })) {
      if (r.dst === "default")
        await netlink.deleteRoute({ dst: "default", dev, metric: r.metric }).catch(() => {});
    }
    // A staging RA may have set the other site's MTU (its `advertise`); the kernel keeps it across down and up,
    // and the guest's own sites may never advertise one: back to the link's.
    await netlink.writeSysctl(dev, "mtu", link.mtu).catch(() => {});
  }

  private async hasDefaultRoute(dev: string, metric: number): Promise<boolean> {
    return (await this.ports.netlink.routes({ dev })).some((r) => r.dst === "default" && r.metric === metric);
  }

  /**
   * With a HoA: the interface that carries the default route now becomes the agent's primary (its route
   * replaced by one of ours that prefers the HoA as source, RA no longer installing default routes on it).
   * Returns that interface's name, or undefined when the guest has no default route yet.
   */
  async adoptPrimary(): Promise<string | undefined> {
    const { netlink, log } = this.ports;
    const nics = new Set((await this.nics()).filter((n) => n.up).map((n) => n.name));
    const defaults = (await netlink.routes())
      .filter((r) => r.dst === "default" && r.dev !== undefined && nics.has(r.dev) && r.gateway)
      .sort((a, b) => a.metric - b.metric);
    const best = defaults[0];
    if (!best?.dev || !best.gateway) return undefined;
    // After a move the method did not make (a roam), the new site's address is usable as soon as its RA
    // arrives instead of a second later: optimistic DAD (RFC 4429, meant for mobile nodes). A kernel built
    // without CONFIG_IPV6_OPTIMISTIC_DAD has no such sysctl; a roam then waits for DAD.
    for (const dev of nics) {
      for (const key of ["optimistic_dad", "use_optimistic"]) {
        await netlink
          .writeSysctl(dev, key, 1)
          .catch((err: unknown) => log("optimistic_dad_unavailable", { dev, key, error: String(err) }));
      }
    }
    await netlink.writeSysctl(best.dev, "accept_ra_defrtr", 0);
    await this.replaceDefault(best.dev, best.gateway, PRIMARY_METRIC);
    for (const r of defaults) {
      if (r.dev === best.dev && r.metric !== PRIMARY_METRIC)
        await netlink.deleteRoute({ dst: "default", dev: best.dev, metric: r.metric }).catch(() => {});
    }
    log("primary_adopted", { primary: best.dev, gateway: best.gateway });
    return best.dev;
  }

  /** Exactly one default route of ours on `dev`, via the gateway, with this metric (and the HoA as source). */
  private async replaceDefault(dev: string, gateway: string, metric: number): Promise<void> {
    const { netlink } = this.ports;
    const prefsrc = this.ports.mobility?.hoa;
    const routes = await netlink.routes({ dev });
    const want = (r: RouteInfo) =>
      r.dst === "default" && r.metric === metric && r.gateway === gateway && r.prefsrc === prefsrc;
    if (routes.some(want)) return;
    for (const r of routes) {
      if (r.dst === "default" && r.metric === metric)
        await netlink.deleteRoute({ dst: "default", dev, metric });
    }
    const route = { dst: "default", gateway, dev, metric, ...(prefsrc ? { prefsrc } : {}) };
    try {
      await netlink.addRoute(route);
    } catch (err) {
      // A default route with this metric on another interface (the kernel refuses a second one, EEXIST): the
      // metrics are the agent's own, so a leftover is ours to remove. Seen on Linux 6.1 under real Xen.
      if (!isNetlinkError(err, "EEXIST")) throw err;
      const clash = (await netlink.routes()).filter((r) => r.dst === "default" && r.metric === metric);
      this.ports.log("route_clash", {
        dev,
        metric,
        clash: clash.map((r) => `${r.dev ?? "?"} via ${r.gateway ?? "-"}`),
      });
      for (const r of clash) {
        if (r.dev)
          await netlink.deleteRoute({
            dst: "default",
            dev: r.dev,
            metric,
            ...(r.gateway ? { gateway: r.gateway } : {}),
          });
      }
      await netlink.addRoute(route);
    }
  }
}

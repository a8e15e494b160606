// The xl destination's carrier hold: the old primary's frontend kept from connecting until the guest has
// switched (xl restores every vif plugged; this is what the lab's "hold" is on real Xen). What it buys there,
// as traced in the guest's kernel (scripts/xen/domu/trace.sh): the guest's xenwatch thread connects one
// frontend at resume instead of two — the new primary's no longer waits behind the old one's, and nothing goes
// out of the old primary onto the parking bridge. What it does not buy: the guest's kernel does not route
// around the held vif by itself — netfront_resume detaches it, and linkwatch skips a detached device, so its
// routes are never marked linkdown; the agent's reflex (taking it down) moves the traffic.
//
// How (Linux 6.1, Xen 4.17; read at the source): on resume netfront drops carrier (drivers/net/xen-netfront.c
// netfront_resume → xennet_disconnect_backend → netif_carrier_off) and reconnects — netif_carrier_on in
// xennet_connect — only when it sees the backend's `state` at InitWait (2) while its own is Initialising
// (netback_changed). Netback writes InitWait once, at probe, and never watches its own `state` node
// (drivers/net/xen-netback/xenbus.c); __xenbus_switch_state compares only its cached state, not xenstore's
// (drivers/xen/xenbus/xenbus_client.c). libxl waits for backend state 2 before running the hotplug script
// and nothing after `migrate-receive` returns or after unpause looks at it (tools/libs/light/libxl_device.c);
// libxl itself writes a backend's `state` to remove a device. So: while xl's "ready" message waits in
// `xenroam receive` (the domain complete and paused, before the sender's GO and xl's own unpause), Dom0 writes
// the held vif's backend state back to Initialising (1); the frontend then waits;
// writing InitWait (2) again later makes it connect by its ordinary path. The release writes only where the
// node still reads 1, in a transaction, so it can never undo libxl's Closing (5) or revive a gone domain.
//
// Guest kernels without the fix for XSA-465 (CVE-2024-53240; Linux upstream f9244fb55f37, Debian 6.1.123-1)
// oops when a disconnected netfront is set down, which the agent does to the old primary: `--no-carrier-hold`.

import { parseAgentStatus } from "@xenroam/protocol";
import type { Tx } from "@xenroam/xenstore";

/** xenbus states (xen/include/public/io/xenbus.h). */
export const XENBUS = { initialising: "1", initWait: "2", closing: "5" } as const;

export const backendStatePath = (domid: number, devid: number): string =>
  `/local/domain/0/backend/vif/${domid}/${devid}/state`;

/** The guest's status value says it has switched, for this migration: the hold may end. */
export function holdReleased(status: string | undefined, migrationId: string): boolean {
  if (status === undefined) return false;
  const s = parseAgentStatus(status);
  return s.ok && s.value.id === migrationId && s.value.phase === "switched";
}

/** The part of a xenstore client the hold needs (XenstoreClient has it). */
export interface HoldXenstore {
  tryRead(path: string): Promise<string | undefined>;
  transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T>;
  watch(path: string): Promise<AsyncIterable<unknown> & { close(): Promise<void> }>;
}

type Log = (event: string, fields?: Record<string, unknown>) => void;

/**
 * Before unpause: each vif whose backend waits at InitWait goes back to Initialising. Returns the devids held;
 * a vif in any other state is left alone (and logged).
 */
export async function engageHold(
  xs: HoldXenstore,
  domid: number,
  devids: readonly number[],
  log: Log,
): Promise<number[]> {
  const held: number[] = [];
  for (const devid of devids) {
    const path = backendStatePath(domid, devid);
    // Never throws: a vif held before a later one failed must still be returned, or nobody would release it.
    const ok = await xs
      .transaction(async (tx) => {
        const state = await tx.tryRead(path);
        if (state !== XENBUS.initWait) return state ?? "missing";
        await tx.write(path, XENBUS.initialising);
        return true;
      })
      .catch((err: unknown) => `error: ${String(err)}`);
    if (ok === true) held.push(devid);
    else log("hold_skipped", { domid, devid, backendState: ok });
  }
  return held;
}

/** Lets the held frontends connect: InitWait again, only where the node still reads Initialising. */
export async function releaseHold(
  xs: HoldXenstore,
  domid: number,
  devids: readonly number[],
  log: Log,
): Promise<void> {
  for (const devid of devids) {
    const path = backendStatePath(domid, devid);
    const was = await xs.transaction(async (tx) => {
      const state = await tx.tryRead(path);
      if (state === XENBUS.initialising) await tx.write(path, XENBUS.initWait);
      return state ?? "missing";
    });
    if (was !== XENBUS.initialising) log("hold_release_skipped", { domid, devid, backendState: was });
  }
}

/** How often the releaser looks whether the domain still exists (its watch says nothing of that). */
export const GONE_POLL_MS = 500;

/** Waits until the guest's status says it switched for this migration, the domain is gone, or the timeout passes. */
export async function awaitSwitch(
  xs: HoldXenstore,
  statusPath: string,
  migrationId: string,
  timeoutMs: number,
  /** A node that exists as long as the domain does (its name): gone means the domain is, too. */
  alivePath?: string,
): Promise<"switched" | "timeout" | "gone"> {
  const deadline = Date.now() + timeoutMs;
  const watch = await xs.watch(statusPath);
  const it = watch[Symbol.asyncIterator]();
  // One outstanding read of the watch at a time: an event must wake the loop, not a read it gave up on.
  let next = it.next();
  try {
    for (;;) {
      if (holdReleased(await xs.tryRead(statusPath), migrationId)) return "switched";
      // A domain the receiver destroyed (the sender never said go) will never switch.
      if (alivePath !== undefined && (await xs.tryRead(alivePath)) === undefined) return "gone";
      const left = deadline - Date.now();
      if (left <= 0) return "timeout";
      let timer: NodeJS.Timeout | undefined;
      const wake = new Promise<"wake">((r) => {
        timer = setTimeout(() => r("wake"), Math.min(left, GONE_POLL_MS));
      });
      const woke = await Promise.race([next.then(() => "event" as const), wake]);
      clearTimeout(timer);
      if (woke === "event") next = it.next();
    }
  } finally {
    await watch.close();
  }
}

export const hotplugStatusPath = (domid: number, devid: number): string =>
  `/local/domain/0/backend/vif/${domid}/${devid}/hotplug-status`;

/**
 * Resolves once libxl is done with each of these vifs while the domain is still being built: its hotplug script
 * has written `hotplug-status` = connected (tools/hotplug/Linux/xen-hotplug-common.sh.in, `success`), which libxl
 * runs only after the backend reached InitWait (tools/libs/light/libxl_device.c, libxl__wait_device_connection
 * before device_hotplug) and after which it reads that backend's `state` no more. From then on the hold may be
 * engaged — while libxl still adds the domain's other devices after the stream, instead of in the window
 * before unpause (libxl adds the vifs only once the memory has arrived: the gain is that tail). Resolves false when
 * `signal` aborts first (xl said "ready" regardless, or the scripts run elsewhere): the hold is then engaged in
 * the window, as before.
 */
export async function awaitHotplugged(
  xs: HoldXenstore,
  domid: number,
  devids: readonly number[],
  signal: AbortSignal,
): Promise<boolean> {
  for (const devid of devids) {
    const path = hotplugStatusPath(domid, devid);
    const watch = await xs.watch(path);
    const it = watch[Symbol.asyncIterator]();
    let next = it.next();
    const aborted = new Promise<"aborted">((r) => {
      if (signal.aborted) r("aborted");
      else signal.addEventListener("abort", () => r("aborted"), { once: true });
    });
    try {
      for (;;) {
        if ((await xs.tryRead(path)) === "connected") break;
        if ((await Promise.race([next.then(() => "event" as const), aborted])) === "aborted") return false;
        next = it.next();
      }
    } finally {
      await watch.close();
    }
  }
  return true;
}

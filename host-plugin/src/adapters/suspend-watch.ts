// The moment an xl migration stops the VM, seen from the source Dom0. libxl suspends a PV guest that has no
// suspend event channel (Linux registers none: xs_suspend_evtchn_port reads nothing) by writing "suspend" into
// its control/shutdown node (tools/libs/light/libxl_dom_suspend.c 145-148, 206-208, Xen 4.17.5) — after the
// live rounds, right before the last one that copies what the stopped guest dirtied. The guest acknowledges by
// clearing the node and suspends. Seeing the node change is seeing the pause: the engine relays the guest's activation
// there, as it does at the lab's pause, and the stop-and-copy round carries it to the correspondents before the
// VM resumes anywhere.

import type { XenstoreClient } from "@xenroam/xenstore";

/** What the watch needs of a xenstore client (XenstoreClient has it). */
export type SuspendXenstore = Pick<XenstoreClient, "directory" | "tryRead" | "watch">;

/** The domain named `vm` on this host, from its xenstore name (libxl_domain.c 43-105). */
export async function domidByName(
  xs: SuspendXenstore,
  names: readonly string[],
): Promise<number | undefined> {
  const byName = new Map<string, number>();
  for (const d of await xs.directory("/local/domain")) {
    const domid = Number(d);
    if (!Number.isInteger(domid) || domid <= 0) continue;
    const name = await xs.tryRead(`/local/domain/${d}/name`);
    if (name !== undefined) byName.set(name, domid);
  }
  for (const n of names) if (byName.has(n)) return byName.get(n);
  return undefined;
}

/**
 * Watches the VM's control/shutdown for libxl's "suspend"; calls onSuspend once. Resolves when the watch is in
 * place (so the migration may start) with the function that removes it.
 */
export async function watchSuspend(
  xs: SuspendXenstore,
  vm: string,
  onSuspend: () => void,
): Promise<() => Promise<void>> {
  const domid = await domidByName(xs, [vm]);
  if (domid === undefined) throw new Error(`no domain named ${vm} in xenstore`);
  const path = `/local/domain/${domid}/control/shutdown`;
  const watch = await xs.watch(path);
  let events = 0;
  const done = (async () => {
    for await (const _ of watch) {
      // The first event is the watch's registration. Any change after it is libxl's "suspend" — read it and it
      // may already be gone: a guest kernel acknowledges (clears the node) faster than Dom0's Node.js wakes
      // (on the real-Xen rig the value read back was already ""). Only libxl writes the node while an xl
      // migration runs, unless an admin shuts the guest down at that very moment: the relay is then early,
      // and the failed migration rolls it back.
      events++;
      if (events < 2) continue;
      // A removed node (the domain destroyed: xenstored fires watches on a removed subtree) is no suspend.
      if ((await xs.tryRead(path).catch(() => undefined)) === undefined) continue;
      onSuspend();
      break;
    }
  })().catch(() => {});
  return async () => {
    await watch.close();
    await done;
  };
}

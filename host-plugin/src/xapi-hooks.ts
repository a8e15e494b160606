// XAPI's migration hooks (executables in /etc/xapi.d/vm-pre-migrate/ and vm-post-migrate/, run with
// `-vmuuid U -reason R [-vmdomid D]`), over ports. The source's `xenroam migrate` leaves in the VM's
// other_config what the hooks need (adapters/xapi.ts, OTHER_CONFIG). Exit codes are XAPI's contract:
// - pre-migrate on the source, before the memory copy: 0 go on; any code but 0 and 1 aborts the migration
//   (we use 2 when the guest has not prepared the migration xenroam set up); 1 is logged and ignored.
// - post-migrate on the destination, after unpause: anything but 0 or 1 makes XAPI destroy the VM, so this
//   hook returns 1 on any failure and its runner (xapi-hook-main.ts) makes sure nothing else ever escapes.

import { KEYS, parseAnswer } from "@xenroam/protocol";

export const HOOK_OTHER_CONFIG = {
  migration: "xenroam-migration",
  arrival: "xenroam-arrival",
} as const;

export interface HookArgs {
  readonly vmuuid: string;
  readonly reason: string;
  readonly vmdomid?: number;
}

export class HookArgsError extends Error {}

/** XAPI's hook arguments: `-vmuuid U -reason R [-vmdomid D]`. */
export function parseHookArgs(argv: readonly string[]): HookArgs {
  const get = (flag: string) => {
    const i = argv.indexOf(flag);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const vmuuid = get("-vmuuid");
  if (!vmuuid || !/^[0-9a-f-]{36}$/i.test(vmuuid)) throw new HookArgsError("expected -vmuuid UUID");
  const domid = get("-vmdomid");
  return {
    vmuuid,
    reason: get("-reason") ?? "",
    ...(domid !== undefined && /^\d+$/.test(domid) ? { vmdomid: Number(domid) } : {}),
  };
}

export interface HookPorts {
  otherConfig(vmuuid: string, key: string): Promise<string | undefined>;
  removeOtherConfig(vmuuid: string, key: string): Promise<void>;
  domid(vmuuid: string): Promise<number>;
  /** Keys of the guest's vm-data/xenroam directory. */
  readGuest(domid: number, key: string): Promise<string | undefined>;
  writeGuest(domid: number, key: string, value: string): Promise<void>;
  log(event: string, fields?: Record<string, unknown>): void;
}

/** Source, before the memory copy. 0: go on (not a xenroam migration, or prepared); 2: abort. */
export async function preMigrate(args: HookArgs, ports: HookPorts): Promise<0 | 2> {
  const migration = await ports.otherConfig(args.vmuuid, HOOK_OTHER_CONFIG.migration);
  if (migration === undefined) return 0;
  const domid = args.vmdomid ?? (await ports.domid(args.vmuuid));
  const text = await ports.readGuest(domid, KEYS.answer);
  const answer = text === undefined ? undefined : parseAnswer(text);
  if (answer?.ok && answer.value.id === migration && answer.value.status === "prepared") {
    ports.log("pre_migrate_ok", { vm: args.vmuuid, migration, moa: answer.value.moa });
    return 0;
  }
  const why =
    text === undefined
      ? "the guest has not answered"
      : answer?.ok
        ? `the guest's answer is ${answer.value.status} for ${answer.value.id}`
        : "the guest's answer is malformed";
  ports.log("pre_migrate_abort", { vm: args.vmuuid, migration, reason: why });
  // Nothing is left half-done: the source still runs the VM; the admin re-runs xenroam migrate.
  for (const k of Object.values(HOOK_OTHER_CONFIG))
    await ports.removeOtherConfig(args.vmuuid, k).catch(() => {});
  return 2;
}

/**
 * Destination, after unpause (xenopsd runs it after VM_unpause: ocaml/xenopsd/lib/xenops_server.ml 2820-2830):
 * tell the guest it arrived. The VIFs are swapped already, by the vif_map (the method goes only between pools).
 * Never more than 1.
 */
export async function postMigrate(args: HookArgs, ports: HookPorts): Promise<0 | 1> {
  try {
    const arrival = await ports.otherConfig(args.vmuuid, HOOK_OTHER_CONFIG.arrival);
    if (arrival === undefined) return 0;
    const domid = args.vmdomid ?? (await ports.domid(args.vmuuid));
    const writes = JSON.parse(arrival) as Record<string, string>;
    for (const [k, v] of Object.entries(writes)) {
      if (typeof v === "string") await ports.writeGuest(domid, k, v);
    }
    ports.log("guest_notified", { vm: args.vmuuid, domid, keys: Object.keys(writes) });
    for (const k of Object.values(HOOK_OTHER_CONFIG))
      await ports.removeOtherConfig(args.vmuuid, k).catch(() => {});
    return 0;
  } catch (err) {
    ports.log("post_migrate_failed", {
      vm: args.vmuuid,
      error: err instanceof Error ? err.message : String(err),
    });
    return 1;
  }
}

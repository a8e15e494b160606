// XAPI's hooks, over ports. The source's `xenroam migrate` leaves in the VM's other_config what they need
// (adapters/xapi.ts, OTHER_CONFIG); across pools that other_config travels with the VM record, imported into
// the destination pool under the same uuid before the destination makes the domain (xen-api e2ee48d6:
// ocaml/xapi/xapi_vm_migrate.ml 717-725, 1675-1763; import.ml 663-671, export.ml 218-288).
// - vif-hotplug (/etc/xapi.d/vif-hotplug, `-action online -vifuuid V -vmuuid T`): run by xenopsd's vif-real
//   on the destination as it plugs the incoming domain's VIFs, before the memory copy (ocaml/xenopsd/scripts/
//   vif-real 179-210, 248-270; xenops_server.ml 2693-2707): the guest's arrival is written into the new
//   domain then, so the guest finds it the instant it resumes. xenopsd does not wait for it (XCP-ng runs the
//   script from udev: run_hotplug_scripts=false), so post-migrate writes it again, late but sure.
// - vm-pre-migrate / vm-post-migrate (executables in /etc/xapi.d/vm-pre-migrate/ and vm-post-migrate/, run
//   with `-vmuuid U -reason R [-vmdomid D]`). Exit codes are XAPI's contract:
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

/** The value after `flag` in a hook's argv (XAPI's hooks take `-name value` pairs). */
function flagValue(argv: readonly string[], flag: string): string | undefined {
  const i = argv.indexOf(flag);
  return i >= 0 ? argv[i + 1] : undefined;
}

function vmuuidOf(argv: readonly string[]): string {
  const vmuuid = flagValue(argv, "-vmuuid");
  if (!vmuuid || !/^[0-9a-f-]{36}$/i.test(vmuuid)) throw new HookArgsError("expected -vmuuid UUID");
  return vmuuid;
}

/** XAPI's hook arguments: `-vmuuid U -reason R [-vmdomid D]`. */
export function parseHookArgs(argv: readonly string[]): HookArgs {
  const get = (flag: string) => flagValue(argv, flag);
  const vmuuid = vmuuidOf(argv);
  const domid = get("-vmdomid");
  return {
    vmuuid,
    reason: get("-reason") ?? "",
    ...(domid !== undefined && /^\d+$/.test(domid) ? { vmdomid: Number(domid) } : {}),
  };
}

export interface HookPorts {
  otherConfig(vmuuid: string, key: string): Promise<string | undefined>;
  /** A xenstore node of Dom0's view (absolute path), or undefined. */
  xenstoreRead?(path: string): Promise<string | undefined>;
  /** A xenstore directory's children (absolute path); empty when it is missing. */
  xenstoreList?(path: string): Promise<string[]>;
  /**
   * In one xenstore transaction: while `guard` exists, write these keys of the guest's vm-data/xenroam; true
   * when written, false when the guard was gone.
   */
  writeGuestWhile?(guard: string, domid: number, writes: Readonly<Record<string, string>>): Promise<boolean>;
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
    const writes = strings(JSON.parse(arrival));
    const arrived = writes[KEYS.arrived];
    if (arrived !== undefined && (await ports.readGuest(domid, KEYS.arrived)) === arrived) {
      // vif-hotplug told the guest before it resumed; it runs now, and its status may have moved on since:
      // writing the carried keys again would take it back.
      ports.log("guest_notified_before_resume_confirmed", { vm: args.vmuuid, domid });
    } else {
      for (const [k, v] of Object.entries(writes)) await ports.writeGuest(domid, k, v);
      ports.log("guest_notified", { vm: args.vmuuid, domid, keys: Object.keys(writes) });
    }
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

/** The arrival's keys: a JSON object of strings (anything else in it is ignored). */
function strings(value: unknown): Record<string, string> {
  if (typeof value !== "object" || value === null || Array.isArray(value))
    throw new Error("the arrival is not an object");
  return Object.fromEntries(
    Object.entries(value).filter((e): e is [string, string] => typeof e[1] === "string"),
  );
}

export interface VifHotplugArgs {
  readonly action: string;
  readonly vifuuid: string;
  readonly vmuuid: string;
}

/** vif-real's call: `-action A -vifuuid V -vmuuid T` (ocaml/xenopsd/scripts/vif-real 179-210). */
export function parseVifHotplugArgs(argv: readonly string[]): VifHotplugArgs {
  const get = (flag: string) => flagValue(argv, flag);
  const vmuuid = vmuuidOf(argv);
  return { action: get("-action") ?? "", vifuuid: get("-vifuuid") ?? "", vmuuid };
}

/**
 * Destination, as a VIF of the incoming domain is plugged (before the memory copy): when the VM comes with a
 * xenroam arrival, write it into the new domain's vm-data/xenroam. The domain is a migration's incoming one
 * only while /vm/<temporary uuid>/final-uuid exists (ocaml/xenopsd/xc/domain.ml 563-573: written at creation
 * with /vm/<T>/domains/<domid>; removed by the Post_migration rename, xenops_server_xen.ml 2030-2052); the
 * VM's record in this pool has the final uuid. Nothing there removes vm-data keys before unpause (domain.ml
 * 1371-1399, 2351-2415), and a key written under the guest-owned vm-data is the guest's to read (xenstored
 * gives a new node its parent's permissions). Its exit code is ignored by vif-real; 0 or 1 all the same.
 */
export async function vifHotplug(args: VifHotplugArgs, ports: HookPorts): Promise<0 | 1> {
  if (args.action !== "online") return 0;
  try {
    if (!ports.xenstoreRead || !ports.xenstoreList) throw new Error("no xenstore");
    const finalUuid = await ports.xenstoreRead(`/vm/${args.vmuuid}/final-uuid`);
    if (finalUuid === undefined) return 0; // a start, a reboot, a hot-plug: not an arrival
    const arrival = await ports.otherConfig(finalUuid, HOOK_OTHER_CONFIG.arrival);
    if (arrival === undefined) return 0; // a migration xenroam did not set up
    const [domid] = (await ports.xenstoreList(`/vm/${args.vmuuid}/domains`))
      .filter((d) => /^\d+$/.test(d))
      .map(Number);
    if (domid === undefined) throw new Error(`no domain under /vm/${args.vmuuid}/domains`);
    const writes = strings(JSON.parse(arrival));
    // Only while the domain is still the incoming one: the rename just before unpause removes final-uuid, and
    // a guest that runs may have moved on (its status "switched") — post-migrate then writes what is missing.
    const guard = `/vm/${args.vmuuid}/final-uuid`;
    const written = ports.writeGuestWhile
      ? await ports.writeGuestWhile(guard, domid, writes)
      : (await Promise.all(Object.entries(writes).map(([k, v]) => ports.writeGuest(domid, k, v))), true);
    if (!written) {
      ports.log("arrival_too_late", { vm: finalUuid, domid, vif: args.vifuuid });
      return 0;
    }
    ports.log("guest_notified_before_resume", {
      vm: finalUuid,
      domid,
      vif: args.vifuuid,
      keys: Object.keys(writes),
    });
    return 0;
  } catch (err) {
    ports.log("vif_hotplug_failed", {
      vm: args.vmuuid,
      error: err instanceof Error ? err.message : String(err),
    });
    return 1;
  }
}

#!/usr/bin/env node
// xenroam-xapi-hook: what /etc/xapi.d/vm-pre-migrate/10-xenroam, vm-post-migrate/10-xenroam and vif-hotplug
// run. Exit codes are XAPI's contract (xapi-hooks.ts): whatever happens in here — an exception, a hang, a
// missing xe — post-migrate and vif-hotplug exit 0 or 1, never anything else.
// Logs: JSON lines on stderr (XAPI keeps hook output in its log).

import { CHANNEL_DIR } from "@xenroam/protocol";
import { XenstoreClient } from "@xenroam/xenstore";
import { Xe } from "./adapters/xe.js";
import {
  type HookPorts,
  parseHookArgs,
  parseVifHotplugArgs,
  postMigrate,
  preMigrate,
  vifHotplug,
} from "./xapi-hooks.js";

const [kind, ...rest] = process.argv.slice(2);
const log = (event: string, fields: Record<string, unknown> = {}) => {
  try {
    process.stderr.write(
      `${JSON.stringify({ ts: new Date().toISOString(), component: `xapi-hook-${kind ?? "?"}`, event, ...fields })}\n`,
    );
  } catch {
    /* a closed stderr must not change the exit code */
  }
};
const finish = (code: number) => process.exit(code);

// The one guarantee that matters: no other exit code, whatever goes wrong.
process.on("uncaughtException", (err) => {
  log("crashed", { error: err.message });
  finish(1);
});
process.on("unhandledRejection", (err) => {
  log("crashed", { error: String(err) });
  finish(1);
});
setTimeout(() => {
  log("timed_out", { afterMs: 60_000 });
  finish(1);
}, 60_000).unref();

const guestPath = (domid: number, key: string) => `/local/domain/${domid}/${CHANNEL_DIR.xapi}/${key}`;

async function withXenstore<T>(fn: (xs: XenstoreClient) => Promise<T>): Promise<T> {
  const xs = await XenstoreClient.connect(process.env.XENROAM_XENSTORE);
  try {
    return await fn(xs);
  } finally {
    xs.close();
  }
}

const ports: HookPorts = {
  otherConfig: (vm, key) => Xe.vmMapKey(vm, "other-config", key),
  removeOtherConfig: (vm, key) => Xe.vmMapRemove(vm, "other-config", key),
  domid: (vm) => Xe.vmDomid(vm),
  xenstoreRead: (path) => withXenstore((xs) => xs.tryRead(path)),
  xenstoreList: (path) => withXenstore((xs) => xs.directory(path).catch(() => [])),
  writeGuestWhile: (guard, domid, writes) =>
    withXenstore((xs) =>
      xs.transaction(async (tx) => {
        if ((await tx.tryRead(guard)) === undefined) return false;
        for (const [k, v] of Object.entries(writes)) await tx.write(guestPath(domid, k), v);
        return true;
      }),
    ),
  readGuest: (domid, key) => withXenstore((xs) => xs.tryRead(guestPath(domid, key))),
  writeGuest: (domid, key, value) => withXenstore((xs) => xs.write(guestPath(domid, key), value)),
  log,
};

async function main(): Promise<number> {
  if (kind === "vif-hotplug") {
    try {
      return await vifHotplug(parseVifHotplugArgs(rest), ports);
    } catch (err) {
      log("bad_arguments", { error: (err as Error).message, argv: rest });
      return 1;
    }
  }
  if (kind !== "pre-migrate" && kind !== "post-migrate") {
    log("usage", {
      error:
        "expected pre-migrate|post-migrate -vmuuid UUID -reason R [-vmdomid D], or vif-hotplug -action A -vifuuid V -vmuuid T",
    });
    return 1;
  }
  let args;
  try {
    args = parseHookArgs(rest);
  } catch (err) {
    log("bad_arguments", { error: (err as Error).message, argv: rest });
    return 1;
  }
  if (kind === "post-migrate") return postMigrate(args, ports);
  try {
    return await preMigrate(args, ports);
  } catch (err) {
    // Our own failure is not a reason to stop an admin's migration: it goes on as a plain one.
    log("pre_migrate_failed", { error: (err as Error).message });
    return 1;
  }
}

main().then(finish, (err: unknown) => {
  log("crashed", { error: String(err) });
  finish(1);
});

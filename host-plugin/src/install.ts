// What `xenroam install-xapi` puts on an XAPI host: the two migration hooks, the VIF hotplug hook and the host
// plugin, each a tiny sh wrapper around this installation's runtime and scripts. The post-migrate wrapper turns
// every exit code but 0 into 1 — even "runtime not found" — because any other code makes XAPI destroy the
// migrated VM. /etc/xapi.d/vif-hotplug is a single file XAPI calls for every VIF (ocaml/xenopsd/scripts/
// vif-real 179-210): one that is not xenroam's is never overwritten.

import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** An entry point beside this file: in a checkout (dist/src) or in the Dom0 bundle (lib/<entry>/). */
export function sibling(...candidates: string[]): string {
  const paths = candidates.map((c) => fileURLToPath(new URL(c, import.meta.url)));
  return paths.find((p) => existsSync(p)) ?? (paths[0] as string);
}

const HOOK_MAIN = sibling("./xapi-hook-main.js", "../xapi-hook/xapi-hook.mjs");
const PLUGIN_MAIN = sibling("./xapi-plugin-main.js", "../xapi-plugin/xapi-plugin.mjs");

const HEADER = "#!/bin/sh\n# Installed by `xenroam install-xapi`; see xenroam's README.\n";

const quote = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;

export function xapiFiles(node = process.execPath): Record<string, string> {
  const header = HEADER;
  return {
    "etc/xapi.d/vm-pre-migrate/10-xenroam": `${header}# Exit 2 aborts the migration before the memory copy (the guest has not prepared it).\nexec ${quote(node)} ${quote(HOOK_MAIN)} pre-migrate "$@"\n`,
    "etc/xapi.d/vm-post-migrate/10-xenroam": `${header}# Never exit with anything but 0 or 1: XAPI destroys the VM otherwise.\n${quote(node)} ${quote(HOOK_MAIN)} post-migrate "$@"\n[ $? -eq 0 ] || exit 1\nexit 0\n`,
    // vif-real waits for it, xenopsd does not (or, with run_hotplug_scripts=true, only before the memory copy).
    "etc/xapi.d/vif-hotplug": `${header}${VIF_HOTPLUG_MARK}\n${quote(node)} ${quote(HOOK_MAIN)} vif-hotplug "$@"\nexit 0\n`,
    "etc/xapi.d/plugins/xenroam": `${header}exec ${quote(node)} ${quote(PLUGIN_MAIN)} "$@"\n`,
  };
}

/** The line that tells xenroam's vif-hotplug from an admin's own. */
export const VIF_HOTPLUG_MARK =
  "# xenroam: writes a migrating guest's arrival into its new domain before it resumes.";

export class InstallError extends Error {
  override readonly name = "InstallError";
}

/** Writes the files under `root` (/ on a host; a staging directory for packages and tests). */
export function installXapi(root: string, node = process.execPath): string[] {
  const written: string[] = [];
  const files = xapiFiles(node);
  const hotplug = join(root, "etc/xapi.d/vif-hotplug");
  const current = existsSync(hotplug) ? readFileSync(hotplug, "utf8") : undefined;
  if (current !== undefined && !current.startsWith(HEADER)) {
    // An admin's own: kept when it calls xenroam's hook (the two lines below), refused otherwise.
    const lines = (files["etc/xapi.d/vif-hotplug"] ?? "").split("\n").slice(2, 4);
    const ours = lines.join("\n  ");
    if (!current.includes(VIF_HOTPLUG_MARK)) {
      throw new InstallError(
        `${hotplug} exists and is not xenroam's, and XAPI runs only that one file. Add these two lines to it (the command never stops a script: it exits 0 or 1), then run install-xapi again:\n  ${ours}`,
      );
    }
    // Kept — if it calls this installation's hook (a runtime or path changed since it was merged, otherwise).
    if (!current.includes(lines[1] ?? "")) {
      throw new InstallError(
        `${hotplug} has xenroam's mark but not this installation's command; replace the line after the mark with:\n  ${lines[1] ?? ""}`,
      );
    }
    delete files["etc/xapi.d/vif-hotplug"];
  }
  for (const [rel, text] of Object.entries(files)) {
    const path = join(root, rel);
    mkdirSync(dirname(path), { recursive: true });
    // Written aside and renamed: XAPI may run a hook at any moment, and a half-written one could exit 2.
    writeFileSync(`${path}.xenroam-new`, text, { mode: 0o755 });
    chmodSync(`${path}.xenroam-new`, 0o755);
    renameSync(`${path}.xenroam-new`, path);
    written.push(path);
  }
  return written;
}

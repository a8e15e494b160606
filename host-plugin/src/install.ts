// What `xenroam install-xapi` puts on an XAPI host: the two migration hooks and the host plugin, each a tiny
// sh wrapper around this installation's node and scripts. The post-migrate wrapper turns every exit code but
// 0 into 1 — even "node not found" — because any other code makes XAPI destroy the migrated VM.

import { chmodSync, existsSync, mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** An entry point beside this file: in a checkout (dist/src) or in the Dom0 bundle (lib/<entry>/). */
export function sibling(...candidates: string[]): string {
  const paths = candidates.map((c) => fileURLToPath(new URL(c, import.meta.url)));
  return paths.find((p) => existsSync(p)) ?? (paths[0] as string);
}

const HOOK_MAIN = sibling("./xapi-hook-main.js", "../xapi-hook/xapi-hook.mjs");
const PLUGIN_MAIN = sibling("./xapi-plugin-main.js", "../xapi-plugin/xapi-plugin.mjs");

const quote = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;

export function xapiFiles(node = process.execPath): Record<string, string> {
  const header = "#!/bin/sh\n# Installed by `xenroam install-xapi`; see xenroam's README.\n";
  return {
    "etc/xapi.d/vm-pre-migrate/10-xenroam": `${header}# Exit 2 aborts the migration before the memory copy (the guest has not prepared it).\nexec ${quote(node)} ${quote(HOOK_MAIN)} pre-migrate "$@"\n`,
    "etc/xapi.d/vm-post-migrate/10-xenroam": `${header}# Never exit with anything but 0 or 1: XAPI destroys the VM otherwise.\n${quote(node)} ${quote(HOOK_MAIN)} post-migrate "$@"\n[ $? -eq 0 ] || exit 1\nexit 0\n`,
    "etc/xapi.d/plugins/xenroam": `${header}exec ${quote(node)} ${quote(PLUGIN_MAIN)} "$@"\n`,
  };
}

/** Writes the files under `root` (/ on a host; a staging directory for packages and tests). */
export function installXapi(root: string, node = process.execPath): string[] {
  const written: string[] = [];
  for (const [rel, text] of Object.entries(xapiFiles(node))) {
    const path = join(root, rel);
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, text);
    chmodSync(path, 0o755);
    written.push(path);
  }
  return written;
}

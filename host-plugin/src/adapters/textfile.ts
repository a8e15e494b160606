// MigrationMetrics into node_exporter's textfile collector directory (Debian: /var/lib/prometheus/node-exporter):
// one xenroam-<vm>.prom a VM, replaced atomically (written beside it as .prom.<pid>, then renamed), so the
// collector never reads half a file and migrations of different VMs never write the same one.

import { createHash } from "node:crypto";
import { readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { counted, readCounters, renderMigrationTextfile } from "../migration-metrics.js";
import type { MigrationMetrics } from "../ports.js";

/** The file of a VM: its name as it is when that is safe in a file name, else escaped (and hashed if long). */
export function textfileName(vm: string): string {
  let safe = /^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}$/.test(vm)
    ? vm
    : [...Buffer.from(vm, "utf8")]
        .map((b) => {
          const c = String.fromCharCode(b);
          return /[A-Za-z0-9_-]/.test(c) ? c : `%${b.toString(16).toUpperCase().padStart(2, "0")}`;
        })
        .join("");
  if (safe.length > 150) {
    safe = `${safe.slice(0, 120)}-${createHash("sha256").update(vm).digest("hex").slice(0, 16)}`;
  }
  return `xenroam-${safe}.prom`;
}

/**
 * Each migration replaces its VM's file. The engine holds the VM's lock meanwhile, so the counters read from
 * the file before are not raced by another xenroam process.
 */
export function createTextfileMetrics(dir: string, pid: number = process.pid): MigrationMetrics {
  return {
    async record(r) {
      const file = join(dir, textfileName(r.vm));
      const before = await readFile(file, "utf8").catch(() => undefined);
      const text = renderMigrationTextfile(r, counted(readCounters(before, r.vm), r));
      const tmp = `${file}.${pid}`;
      try {
        await writeFile(tmp, text, { mode: 0o644 });
        await rename(tmp, file);
      } catch (err) {
        await rm(tmp, { force: true }).catch(() => {});
        throw new Error(`cannot write ${file}: ${(err as Error).message}`);
      }
    },
  };
}

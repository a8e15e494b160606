// The xe adapter: what the XAPI hooks need from the local pool, through the `xe` command every XAPI host has
// (hooks run as root in Dom0, where xe needs no credentials). The only code in xenroam that runs xe.

import { execFile } from "node:child_process";
import { binaryPath } from "@xenroam/process";

export class XeError extends Error {
  override readonly name = "XeError";
}

/** The xe binary: `XENROAM_XE`, or the system's (@xenroam/process's resolver, which doctor reports), never PATH. */
export const xeBinary = (): string => binaryPath("xe");

function xe(args: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    let file: string;
    try {
      file = xeBinary();
    } catch (err) {
      resolve({ code: 127, stdout: "", stderr: `cannot run xe: ${(err as Error).message}` });
      return;
    }
    execFile(file, args, { timeout: 15_000 }, (err, stdout, stderr) => {
      const e = err as (Error & { code?: number | string }) | null;
      if (e && typeof e.code === "string") {
        resolve({ code: 127, stdout: "", stderr: `cannot run ${file}: ${e.message}` });
      } else resolve({ code: e ? Number(e.code ?? 1) : 0, stdout, stderr });
    });
  });
}

async function xeOk(args: readonly string[]): Promise<string> {
  const r = await xe(args);
  if (r.code !== 0) throw new XeError(`xe ${args[0] ?? ""} failed: ${r.stderr.trim() || `exit ${r.code}`}`);
  return r.stdout.trim();
}

export const Xe = {
  /** One key of a map parameter (other-config), or undefined when it is not set. */
  async vmMapKey(vmUuid: string, param: string, key: string): Promise<string | undefined> {
    const r = await xe(["vm-param-get", `uuid=${vmUuid}`, `param-name=${param}`, `param-key=${key}`]);
    if (r.code !== 0) {
      if (/not found|does not exist|Key .* not/i.test(r.stderr)) return undefined;
      throw new XeError(`xe vm-param-get failed: ${r.stderr.trim() || `exit ${r.code}`}`);
    }
    return r.stdout.replace(/\n$/, "");
  },
  async vmMapRemove(vmUuid: string, param: string, key: string): Promise<void> {
    await xeOk(["vm-param-remove", `uuid=${vmUuid}`, `param-name=${param}`, `param-key=${key}`]);
  },
  async vmDomid(vmUuid: string): Promise<number> {
    const d = Number(await xeOk(["vm-param-get", `uuid=${vmUuid}`, "param-name=dom-id"]));
    if (!Number.isInteger(d) || d <= 0) throw new XeError(`VM ${vmUuid} has no running domain`);
    return d;
  },
};

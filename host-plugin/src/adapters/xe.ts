// The xe adapter: what the XAPI hooks need from the local pool, through the `xe` command every XAPI host has
// (hooks run as root in Dom0, where xe needs no credentials). The only code in xenroam that runs xe.

import { execFile } from "node:child_process";

export class XeError extends Error {
  override readonly name = "XeError";
}

export const xeBinary = (): string => process.env.XENROAM_XE ?? "xe";

function xe(args: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(xeBinary(), args, { timeout: 15_000 }, (err, stdout, stderr) => {
      const e = err as (Error & { code?: number | string }) | null;
      if (e && typeof e.code === "string") {
        resolve({ code: 127, stdout: "", stderr: `cannot run ${xeBinary()}: ${e.message}` });
      } else resolve({ code: e ? Number(e.code ?? 1) : 0, stdout, stderr });
    });
  });
}

async function xeOk(args: readonly string[]): Promise<string> {
  const r = await xe(args);
  if (r.code !== 0) throw new XeError(`xe ${args[0] ?? ""} failed: ${r.stderr.trim() || `exit ${r.code}`}`);
  return r.stdout.trim();
}

/** `xe … list` output without --minimal: records of "key ( RO): value" lines, separated by blank lines. */
export function parseXeRecords(text: string): Array<Record<string, string>> {
  return text
    .split(/\n\s*\n/)
    .map((block) => {
      const rec: Record<string, string> = {};
      for (const line of block.split("\n")) {
        const m = /^\s*([\w-]+)\s*\([^)]*\)\s*:\s?(.*)$/.exec(line);
        if (m?.[1]) rec[m[1]] = (m[2] ?? "").trim();
      }
      return rec;
    })
    .filter((r) => Object.keys(r).length > 0);
}

export interface XeVif {
  readonly uuid: string;
  readonly device: number;
  readonly networkUuid: string;
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
  async vifs(vmUuid: string): Promise<XeVif[]> {
    const out = await xeOk(["vif-list", `vm-uuid=${vmUuid}`, "params=uuid,device,network-uuid"]);
    return parseXeRecords(out).map((r) => ({
      uuid: r.uuid ?? "",
      device: Number(r.device),
      networkUuid: r["network-uuid"] ?? "",
    }));
  },
  async networkOfBridge(bridge: string): Promise<string | undefined> {
    const out = await xeOk(["network-list", `bridge=${bridge}`, "params=uuid", "--minimal"]);
    return out.split(",").filter(Boolean)[0];
  },
  async vifMove(vifUuid: string, networkUuid: string): Promise<void> {
    await xeOk(["vif-move", `uuid=${vifUuid}`, `network-uuid=${networkUuid}`]);
  },
};

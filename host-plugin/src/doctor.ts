// `xenroam doctor`: what a Dom0 needs for xenroam, each check with how to fix it. The checks are pure over
// a snapshot of facts (HostFacts); gatherFacts() takes the snapshot with systeminformation and the file
// system.

import { accessSync, constants, existsSync } from "node:fs";
import { delimiter, join } from "node:path";
import si from "systeminformation";

export interface HostFacts {
  readonly nodeVersion: string;
  readonly uid: number | undefined;
  readonly os: { readonly distro: string; readonly release: string; readonly kernel: string };
  readonly interfaces: readonly string[];
  /** Absolute path of each command found, by name. */
  readonly commands: Readonly<Record<string, string | undefined>>;
  /** Paths that exist. */
  readonly paths: Readonly<Record<string, boolean>>;
}

export interface Check {
  readonly name: string;
  readonly ok: boolean;
  /** Needed for xenroam to work at all (a failed essential check makes doctor exit 1). */
  readonly essential: boolean;
  readonly detail: string;
  readonly fix?: string;
}

export interface DoctorOptions {
  readonly toolstack: "xl" | "xapi";
  readonly bridge: string;
  readonly parkingBridge: string;
  readonly sitesFile?: string;
}

const XENSTORE_PATHS = ["/run/xenstored/socket", "/var/run/xenstored/socket", "/dev/xen/xenbus"];

/** Where veth shows it is there: loaded, or a module file of the running kernel (any compression). */
export function vethPaths(kernel: string): string[] {
  const ko = `/lib/modules/${kernel}/kernel/drivers/net/veth.ko`;
  return ["/sys/module/veth", ko, `${ko}.xz`, `${ko}.zst`, `${ko}.gz`];
}

export function checks(f: HostFacts, o: DoctorOptions): Check[] {
  const [major = 0, minor = 0] = f.nodeVersion.replace(/^v/, "").split(".").map(Number);
  const nodeOk = major > 20 || (major === 20 && minor >= 10);
  const out: Check[] = [
    {
      name: "node",
      ok: nodeOk,
      essential: true,
      detail: `Node.js ${f.nodeVersion}`,
      ...(nodeOk
        ? {}
        : { fix: "install Node.js 20.10 or newer (nodesource or the distribution's backports)" }),
    },
    {
      name: "root",
      ok: f.uid === 0,
      essential: true,
      detail: f.uid === 0 ? "running as root" : `running as uid ${f.uid ?? "?"}`,
      ...(f.uid === 0 ? {} : { fix: "run xenroam as root in Dom0 (it configures bridges and radvd)" }),
    },
  ];
  const xenstore = XENSTORE_PATHS.find((p) => f.paths[p]);
  out.push({
    name: "xenstore",
    ok: xenstore !== undefined,
    essential: true,
    detail: xenstore ? `reachable at ${xenstore}` : `none of ${XENSTORE_PATHS.join(", ")}`,
    ...(xenstore ? {} : { fix: "run in Dom0 with xenstored running (systemctl status xenstored)" }),
  });
  const tool = o.toolstack === "xl" ? "xl" : "xe";
  out.push({
    name: `toolstack (${o.toolstack})`,
    ok: f.commands[tool] !== undefined,
    essential: true,
    detail: f.commands[tool] ? `${tool} at ${f.commands[tool]}` : `${tool} not found in PATH`,
    ...(f.commands[tool]
      ? {}
      : {
          fix:
            o.toolstack === "xl"
              ? "install the Xen tools (apt-get install xen-utils) or pass --toolstack xapi"
              : "xe comes with XAPI (XCP-ng, XenServer); on an xl host pass --toolstack xl",
        }),
  });
  for (const [cmd, pkg, essential] of [
    ["radvd", "radvd", true],
    ["nft", "nftables", false],
    ["ip", "iproute2", false],
  ] as const) {
    const at = f.commands[cmd];
    out.push({
      name: cmd,
      ok: at !== undefined,
      essential,
      detail: at ? `${cmd} at ${at}` : `${cmd} not found`,
      ...(at ? {} : { fix: `apt-get install ${pkg}` }),
    });
  }
  for (const [what, name] of [
    ["bridge", o.bridge],
    ["parking bridge", o.parkingBridge],
  ] as const) {
    const has = f.interfaces.includes(name);
    out.push({
      name: what,
      ok: has,
      essential: what === "bridge",
      detail: has ? `${name} exists` : `${name} does not exist`,
      ...(has
        ? {}
        : {
            fix:
              what === "bridge"
                ? `create ${name} (the bridge your VMs' primary vifs use) or pass --bridge NAME`
                : `ip link add ${name} type bridge && ip link set ${name} up (xenroam receive creates it on demand on xl hosts)`,
          }),
    });
  }
  if (o.toolstack === "xl") {
    const veth = vethPaths(f.os.kernel).find((p) => f.paths[p]);
    out.push({
      name: "veth (announce)",
      ok: veth !== undefined,
      essential: false,
      detail: veth
        ? `veth at ${veth}`
        : "no veth module: the destination cannot announce the guest's address to the router before it resumes (it then learns it after, 0.2-1 s later)",
      ...(veth ? {} : { fix: "install the kernel's modules (veth.ko), or pass --no-announce" }),
    });
  }
  if (o.sitesFile !== undefined) {
    const has = f.paths[o.sitesFile] === true;
    out.push({
      name: "sites",
      ok: has,
      essential: true,
      detail: has ? `${o.sitesFile} exists` : `${o.sitesFile} does not exist`,
      ...(has ? {} : { fix: "write the sites file (README: Configuration) or use --control URL" }),
    });
  }
  return out;
}

function which(cmd: string): string | undefined {
  const dirs = [...(process.env.PATH ?? "").split(delimiter), "/usr/sbin", "/sbin", "/usr/local/sbin"];
  for (const d of dirs) {
    const p = join(d, cmd);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      /* next */
    }
  }
  return undefined;
}

export async function gatherFacts(sitesFile?: string): Promise<HostFacts> {
  const [os, ifaces] = await Promise.all([si.osInfo(), si.networkInterfaces()]);
  const list = Array.isArray(ifaces) ? ifaces : [ifaces];
  const paths = [...XENSTORE_PATHS, ...vethPaths(os.kernel), ...(sitesFile ? [sitesFile] : [])];
  return {
    nodeVersion: process.version,
    uid: process.getuid?.(),
    os: { distro: os.distro, release: os.release, kernel: os.kernel },
    interfaces: list.map((i) => i.iface),
    commands: Object.fromEntries(["xl", "xe", "radvd", "nft", "ip"].map((c) => [c, which(c)])),
    paths: Object.fromEntries(paths.map((p) => [p, existsSync(p)])),
  };
}

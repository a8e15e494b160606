// `xenroam doctor`: what a Dom0 needs for xenroam, each check with how to fix it. The checks are pure over
// a snapshot of facts (HostFacts); gatherFacts() takes the snapshot with systeminformation, the file system
// and @xenroam/process's resolver — the very one the adapters run programs through, so the nft, radvd, ip,
// xl or xe doctor reports (path and version) is the one xenroam runs.

import { existsSync } from "node:fs";
import { binaryVersion, cannotRun, type Resolution, resolveBinary, SYSTEM_DIRS } from "@xenroam/process";
import { XAPI_SOCKET } from "./adapters/xapi-wire.js";

/** A program xenroam runs, as the resolver found it, with the first line of its version when it has one. */
export interface CommandFact {
  /** The path xenroam runs (undefined: none fits). */
  readonly path?: string;
  /** "env": named by the admin in `envVar`. */
  readonly via?: "env" | "system";
  readonly envVar?: string;
  /** Why the path named in `envVar` cannot run (does not exist, not executable). */
  readonly problem?: string;
  readonly version?: string;
  /** Candidates passed over (an npm package's `nft`, say), with why. */
  readonly skipped?: ReadonlyArray<{ readonly path: string; readonly why: string }>;
}

export interface HostFacts {
  readonly nodeVersion: string;
  readonly uid: number | undefined;
  readonly os: { readonly distro: string; readonly release: string; readonly kernel: string };
  readonly interfaces: readonly string[];
  /** Each program xenroam runs, by name. */
  readonly commands: Readonly<Record<string, CommandFact | undefined>>;
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
  /** XAPI: the --xapi-url given (the socket is checked only when it is the default). */
  readonly xapiUrl?: string;
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
  const toolOk = usable(f.commands[tool]);
  out.push({
    name: `toolstack (${o.toolstack})`,
    ok: toolOk,
    essential: true,
    detail: f.commands[tool]?.path ? describe(tool, f.commands[tool]) : notFound(tool, f.commands[tool]),
    ...(toolOk
      ? {}
      : {
          fix:
            o.toolstack === "xl"
              ? `install the Xen tools (apt-get install xen-utils), give xl's path in XENROAM_XL, or pass --toolstack xapi`
              : "xe comes with XAPI (XCP-ng, XenServer); on an xl host pass --toolstack xl",
        }),
  });
  const programs: Array<readonly [string, string, boolean]> = [
    ["radvd", "radvd", true],
    ["nft", "nftables", false],
    ["ip", "iproute2", false],
  ];
  // On a XAPI host xenroam sets the staging bridge's MAC through Open vSwitch (adapters/dom0-net.ts).
  if (o.toolstack === "xapi") programs.push(["ovs-vsctl", "openvswitch", false]);
  for (const [cmd, pkg, essential] of programs) {
    const c = f.commands[cmd];
    out.push({
      name: cmd,
      ok: usable(c),
      essential,
      detail: c?.path ? describe(cmd, c) : notFound(cmd, c),
      ...(usable(c)
        ? {}
        : {
            fix: `${o.toolstack === "xapi" ? `yum install ${pkg}` : `apt-get install ${pkg}`}, or give its path in ${c?.envVar ?? "XENROAM_<NAME>"}`,
          }),
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
  if (o.toolstack === "xapi" && (o.xapiUrl === undefined || o.xapiUrl.startsWith("unix:"))) {
    const socket = o.xapiUrl?.slice("unix:".length) ?? XAPI_SOCKET;
    const has = f.paths[socket] === true;
    out.push({
      name: "xapi socket",
      ok: has,
      essential: false,
      detail: has
        ? `${socket} exists: xenroam reaches this pool's XAPI there, as root without a password`
        : `${socket} does not exist`,
      ...(has
        ? {}
        : {
            fix: "run xenroam in the Dom0 of a XAPI host (xapi running), or give --xapi-url https://MASTER with --xapi-ca FILE or --xapi-fingerprint SHA256",
          }),
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

/** A program xenroam can run: found, and (when the admin named it) there and executable. */
const usable = (c: CommandFact | undefined): boolean => c?.path !== undefined && c.problem === undefined;

/** "nft at /usr/sbin/nft (nftables v1.0.6 …)", with the candidates passed over. */
function describe(cmd: string, c: CommandFact | undefined): string {
  const how = c?.via === "env" ? ` (from ${c.envVar}${c.problem ? `: ${c.problem}` : ""})` : "";
  const version = c?.version ? ` (${c.version})` : "";
  return `${cmd} at ${c?.path ?? "?"}${how}${version}${skippedText(c)}`;
}

function notFound(cmd: string, c: CommandFact | undefined): string {
  return `${cmd} not found in ${SYSTEM_DIRS.join(", ")}${skippedText(c)}`;
}

function skippedText(c: CommandFact | undefined): string {
  const s = c?.skipped ?? [];
  return s.length === 0 ? "" : `; skipped ${s.map((k) => `${k.path} (${k.why})`).join(", ")}`;
}

/** How each program states its version: the first line of this answer. */
const VERSION_ARGS: Readonly<Record<string, readonly string[]>> = {
  nft: ["--version"],
  radvd: ["--version"],
  ip: ["-V"],
  "ovs-vsctl": ["--version"],
};

/** The programs xenroam runs, resolved as the adapters resolve them, with their versions. */
export async function commandFacts(
  names: readonly string[] = ["xl", "xe", "radvd", "nft", "ip", "ovs-vsctl"],
  resolve: (name: string) => Resolution = (name) => resolveBinary(name),
): Promise<Record<string, CommandFact>> {
  const entries = await Promise.all(
    names.map(async (name): Promise<[string, CommandFact]> => {
      const r = resolve(name);
      const problem = r.via === "env" && r.path ? cannotRun(r.path) : undefined;
      const args = VERSION_ARGS[name];
      const version = r.path && args && !problem ? await binaryVersion(r.path, args) : undefined;
      return [
        name,
        {
          ...(r.path ? { path: r.path } : {}),
          ...(r.via ? { via: r.via } : {}),
          envVar: r.envVar,
          ...(problem ? { problem } : {}),
          ...(version ? { version } : {}),
          ...(r.skipped.length > 0 ? { skipped: r.skipped } : {}),
        },
      ];
    }),
  );
  return Object.fromEntries(entries);
}

export async function gatherFacts(sitesFile?: string, xapiSocket = XAPI_SOCKET): Promise<HostFacts> {
  // systeminformation is loaded by `xenroam doctor` only, not by every command.
  const { default: si } = await import("systeminformation");
  const [os, ifaces, commands] = await Promise.all([si.osInfo(), si.networkInterfaces(), commandFacts()]);
  const list = Array.isArray(ifaces) ? ifaces : [ifaces];
  const paths = [...XENSTORE_PATHS, ...vethPaths(os.kernel), xapiSocket, ...(sitesFile ? [sitesFile] : [])];
  return {
    nodeVersion: process.version,
    uid: process.getuid?.(),
    os: { distro: os.distro, release: os.release, kernel: os.kernel },
    interfaces: list.map((i) => i.iface),
    commands,
    paths: Object.fromEntries(paths.map((p) => [p, existsSync(p)])),
  };
}

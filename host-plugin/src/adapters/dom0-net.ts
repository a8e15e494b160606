// Dom0's own network commands on a XAPI host, without rtnetlink: the npm `netlink` addon needs GLIBCXX_3.4.21
// (CentOS 7's libstdc++ stops at 3.4.19) and cannot run under Bun at all (it drives libuv directly), so the
// XAPI build reads /proc and /sys and runs the iproute2 and Open vSwitch commands every XCP-ng and XenServer
// Dom0 has. Text output is never parsed: CentOS 7's iproute2 predates `ip -json`, and /proc/net/if_inet6 has
// kept one format since Linux 2.2.

import { execFile } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { formatIpv6, parseIpv6 } from "@xenroam/core";
import { binaryPath } from "@xenroam/process";
import type { Dom0Net, NetworkBackend } from "./xapi-staging.js";

export class Dom0NetError extends Error {
  override readonly name = "Dom0NetError";
}

/** Where xcp-networkd reads its backend (scripts/xcp-networkd.conf: network-conf=/etc/xensource/network.conf). */
export const NETWORK_CONF = "/etc/xensource/network.conf";

/**
 * The backend xcp-networkd uses, from the text of network.conf: "openvswitch" or "vswitch" → Open vSwitch,
 * "bridge" → Linux bridge; anything else, or no file, → Open vSwitch, as networkd falls back
 * (ocaml/networkd/bin/network_server.ml, determine_backend).
 */
export function parseNetworkBackend(text: string | undefined): NetworkBackend {
  return text?.trim().split(/\s+/)[0] === "bridge" ? "bridge" : "openvswitch";
}

/**
 * /proc/net/if_inet6: one address per line — 32 hex digits, ifindex, prefix length, scope, flags, name
 * (net/ipv6/addrconf.c, if6_seq_show). The addresses of `ifname`, canonical.
 */
export function parseIfInet6(text: string, ifname: string): string[] {
  const out: string[] = [];
  for (const line of text.split("\n")) {
    const f = line.trim().split(/\s+/);
    if (f.length < 6 || f[5] !== ifname || !/^[0-9a-f]{32}$/i.test(f[0] ?? "")) continue;
    const hex = f[0] as string;
    out.push(formatIpv6(parseIpv6(hex.match(/.{4}/g)?.join(":") ?? "")));
  }
  return out;
}

const IFNAME = /^[A-Za-z0-9_.@-]{1,15}$/;
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;

function checkIfname(ifname: string): string {
  if (!IFNAME.test(ifname)) throw new Dom0NetError(`"${ifname}" is not an interface name`);
  return ifname;
}

export type Run = (file: string, args: readonly string[]) => Promise<string>;

/**
 * Runs a command by name (`ip`, `ovs-vsctl`: the system's, through @xenroam/process's resolver, as doctor
 * reports it); a failure says which one and what it printed.
 */
export const runCommand: Run = (name, args) =>
  new Promise((resolve, reject) => {
    let file: string;
    try {
      file = binaryPath(name);
    } catch (err) {
      reject(new Dom0NetError(`cannot run ${name}: ${(err as Error).message}`));
      return;
    }
    execFile(file, args, { timeout: 35_000 }, (err, stdout, stderr) => {
      if (!err) return resolve(stdout);
      const e = err as Error & { code?: number | string };
      const what =
        typeof e.code === "string" ? `cannot run ${file}: ${e.message}` : stderr.trim() || e.message;
      reject(new Dom0NetError(`${file} ${args.join(" ")}: ${what}`));
    });
  });

export interface Dom0NetOptions {
  readonly run?: Run;
  /** Root of /proc and /etc, for tests. */
  readonly root?: string;
  /** network.conf elsewhere (the lab's XAPI hosts): XENROAM_NETWORK_CONF by default. */
  readonly networkConf?: string;
}

export function createDom0Net(o: Dom0NetOptions = {}): Dom0Net {
  const run = o.run ?? runCommand;
  const root = o.root ?? "";
  const readText = (path: string) => readFile(`${root}${path}`, "utf8").catch(() => undefined);
  return {
    backend: async () => {
      const other = o.networkConf ?? process.env.XENROAM_NETWORK_CONF;
      const text = other
        ? await readFile(other, "utf8").catch(() => undefined)
        : await readText(NETWORK_CONF);
      return parseNetworkBackend(text);
    },
    async setBridgeMac(bridge, mac, backend) {
      checkIfname(bridge);
      if (!MAC.test(mac)) throw new Dom0NetError(`"${mac}" is not a MAC address`);
      if (backend === "openvswitch") {
        // ovs-vsctl waits for ovs-vswitchd to apply it (no --no-wait); the timeout is networkd's own.
        await run("ovs-vsctl", ["--timeout=30", "set", "bridge", bridge, `other-config:hwaddr="${mac}"`]);
      } else {
        await run("ip", ["link", "set", "dev", bridge, "address", mac]);
      }
    },
    async writeSysctl(ifname, key, value) {
      checkIfname(ifname);
      if (!/^[a-z0-9_]+$/.test(key)) throw new Dom0NetError(`"${key}" is not a sysctl key`);
      try {
        await writeFile(`${root}/proc/sys/net/ipv6/conf/${ifname}/${key}`, String(value));
      } catch (err) {
        throw new Dom0NetError(`write net.ipv6.conf.${ifname}.${key}=${value}: ${(err as Error).message}`);
      }
    },
    async up(ifname) {
      await run("ip", ["link", "set", "dev", checkIfname(ifname), "up"]);
    },
    addresses: async (ifname) => parseIfInet6((await readText("/proc/net/if_inet6")) ?? "", ifname),
    async addAddress(ifname, cidr) {
      await run("ip", ["-6", "addr", "add", cidr, "dev", checkIfname(ifname), "nodad"]);
    },
    async deleteAddress(ifname, cidr) {
      await run("ip", ["-6", "addr", "del", cidr, "dev", checkIfname(ifname)]);
    },
  };
}

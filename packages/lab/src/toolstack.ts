// The lab's Toolstack: live migration the way Xen does it, in namespaces. Pause the VM (every process in its
// namespace stopped), move its vifs' Dom0 ends to the destination host under the new domid's names, attach
// them to the bridges the request names (swapped, for the method), move the VM's xenstore tree to the
// destination's xenstored, write the destination's notes into it, resume — and, as netfront does on real Xen,
// give the guest carrier on its vifs only once the frontends have reconnected (the topology's `toolstack`).

import {
  closeSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { createNetlink, type Netlink } from "@xenroam/netlink";
import {
  CHANNEL_DIR,
  type DomainInfo,
  type MigrateRequest,
  type Toolstack,
  type VifInfo,
} from "@xenroam/protocol";
import { type Perm, XenstoreClient } from "@xenroam/xenstore";
import { NsWorker } from "./netns.js";
import { dom0SocketFile, guestSocketFile, netnsName, vifName } from "./plan.js";
import { netnsPids } from "./system.js";
import { labVms, type Topology, vmOf } from "./topology.js";

/** Where the lab's VM runs now; rewritten by every migration. */
export interface VmLocation {
  readonly vm: string;
  readonly host: string;
  readonly domid: number;
  /** Next domid to hand out (Xen never reuses one soon). */
  readonly nextDomid: number;
}

export const VM_FILE = "vm.json";

/**
 * Fault injection (xenroam-lab soak): while this file is in the lab's state directory, the next migration
 * fails just after the pause — the guest paused, the activation relayed, nothing moved yet — as a restore
 * that fails on the destination does; the VM resumes on the source, as xl's sender resumes it then. The
 * migration that fails removes the file.
 */
export const FAIL_AFTER_PAUSE_FILE = "fault-fail-after-pause";

/** True (and the file gone) when a fault was armed. */
function takeFault(stateDir: string, file: string): boolean {
  try {
    rmSync(join(stateDir, file));
    return true;
  } catch {
    return false;
  }
}

/** Where a VM's location is kept: vm.json for the topology's first VM, vm-NAME.json for every other. */
const locationFile = (stateDir: string, vm?: string) =>
  vm === undefined ? join(stateDir, VM_FILE) : join(stateDir, `vm-${vm}.json`);

/**
 * Where a VM runs now: the first VM's without a name, the named one's otherwise (vm-NAME.json, or vm.json when
 * that is the named VM's: the first VM has only that one).
 */
export function readVmLocation(stateDir: string, vm?: string): VmLocation {
  if (vm !== undefined) {
    try {
      return JSON.parse(readFileSync(locationFile(stateDir, vm), "utf8")) as VmLocation;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
  }
  const first = JSON.parse(readFileSync(locationFile(stateDir), "utf8")) as VmLocation;
  if (vm !== undefined && first.vm !== vm)
    throw new Error(`no location recorded for VM "${vm}" in ${stateDir}`);
  return first;
}

/** Records where a VM runs; `first`: the topology's first VM (vm.json). */
export function writeVmLocation(stateDir: string, loc: VmLocation, first = true): void {
  const file = first ? locationFile(stateDir) : locationFile(stateDir, loc.vm);
  writeFileSync(`${file}.tmp`, JSON.stringify(loc, null, 2));
  renameSync(`${file}.tmp`, file);
}

/**
 * Takes the first domid from `from` on that no VM of the lab has had (Xen does not reuse one soon): a file per
 * domid made with O_EXCL, so two migrations at once — two processes — never get the same one.
 */
export function claimDomid(stateDir: string, from: number): number {
  const dir = join(stateDir, "domids");
  mkdirSync(dir, { recursive: true });
  for (let domid = from; domid < 32_000; domid++) {
    try {
      closeSync(openSync(join(dir, String(domid)), "wx"));
      return domid;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
  }
  throw new Error(`no domid left under 32000 in ${dir}`);
}

/** True when this process already lives in the named namespace. */
export function inNetns(name: string): boolean {
  try {
    return statSync("/proc/self/ns/net").ino === statSync(`/run/netns/${name}`).ino;
  } catch {
    return false;
  }
}

interface TreeNode {
  value: string;
  perms: Perm[];
  children: Record<string, TreeNode>;
}

async function exportTree(xs: XenstoreClient, path: string): Promise<TreeNode> {
  const [value, perms, names] = await Promise.all([xs.read(path), xs.getPerms(path), xs.directory(path)]);
  const children: Record<string, TreeNode> = {};
  await Promise.all(
    names.map(async (n) => {
      children[n] = await exportTree(xs, `${path}/${n}`);
    }),
  );
  return { value, perms, children };
}

/** Writes an exported tree under `path`; with `keep`, nodes the destination has already are left as they are. */
async function importTree(
  xs: XenstoreClient,
  path: string,
  node: TreeNode,
  remap: (p: Perm) => Perm,
  keep = false,
): Promise<void> {
  if (!keep || (await xs.tryRead(path)) === undefined) {
    await xs.write(path, node.value);
    await xs.setPerms(path, node.perms.map(remap));
  }
  await Promise.all(
    Object.entries(node.children).map(([n, c]) => importTree(xs, `${path}/${n}`, c, remap, keep)),
  );
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const execFileP = promisify(execFile);

type NetlinkLike = Pick<Netlink, "links" | "link" | "setLink" | "writeSysctl" | "readSysctl">;

/**
 * What netfront does once reconnected after a migration: netdev_notify_peers() (drivers/net/xen-netfront.c,
 * netback_changed, XenbusStateConnected), on which IPv6 sends an unsolicited NA for each of the interface's
 * addresses (net/ipv6/ndisc.c, ndisc_netdev_event, NETDEV_NOTIFY_PEERS → ndisc_send_unsol_na). Without it a
 * router that began resolving the guest's address while it had no carrier waits a second for its next
 * solicitation. A veth has no such event; the same kernel function runs on NETDEV_CHANGEADDR when
 * `ndisc_notify` is set, so the lab sets the interface's MAC to itself with `ndisc_notify` on for a moment.
 *
 * Done from outside the VM's namespace: iproute2 and a shell in it, for the moment of the change. A
 * netlink worker of ours started in the VM's namespace for this (it cannot be started before the pause: it
 * would be paused with the VM) is a Node.js process, ~0.1 s of CPU at the moment the guest resumes: with
 * several VMs resuming at once (an evacuation) that was CPU the lab took from the guests, which netfront's NA
 * does not. `mac` is the interface's own (a validated topology value).
 */
async function notifyPeersIn(netns: string, ifname: string, mac: string): Promise<void> {
  const key = `/proc/sys/net/ipv6/conf/${ifname}/ndisc_notify`;
  await execFileP("ip", [
    "netns",
    "exec",
    netns,
    "sh",
    "-c",
    `b=$(cat ${key}) && echo 1 > ${key} && ip link set dev ${ifname} address ${mac}; echo "$b" > ${key}`,
  ]);
}

/**
 * What the lab's XAPI (xapi.ts) adds to a migration, at xenopsd's points on the destination: before the pause
 * (the incoming domain made, its VIFs plugged, the memory copied: VM_receive_memory, xenops_server.ml
 * 2608-2782) and between the pause and the unpause (the Post_migration rename, 2811-2823).
 */
export interface LabMigrationSteps {
  beforePause?(newDomid: number): Promise<void>;
  beforeResume?(newDomid: number): Promise<void>;
}

export class LabToolstack implements Toolstack {
  constructor(
    private readonly stateDir: string,
    private readonly topology: Topology,
  ) {}

  /** One worker per other host's namespace for the life of this toolstack (an evacuation's many migrations). */
  private readonly workers = new Map<string, Promise<NsWorker>>();
  private local: Netlink | undefined;

  private async netlinkIn(netns: string): Promise<{ nl: NetlinkLike; close: () => Promise<void> }> {
    if (inNetns(netns)) {
      // One socket for this namespace too: a hundred prepares at once each made their own, and each its own
      // dump of every link (hundreds of vifs): the peak of xenroam's memory.
      this.local ??= createNetlink();
      return { nl: this.local, close: async () => {} };
    }
    let worker = this.workers.get(netns);
    if (!worker) {
      worker = NsWorker.start(netns);
      this.workers.set(netns, worker);
      worker.catch(() => this.workers.delete(netns));
    }
    return { nl: (await worker).netlink, close: async () => {} };
  }

  /** Stops the workers this toolstack started in other hosts' namespaces, and closes its own socket. */
  async close(): Promise<void> {
    this.local?.close();
    this.local = undefined;
    const workers = [...this.workers.values()];
    this.workers.clear();
    await Promise.all(workers.map(async (w) => (await w.catch(() => undefined))?.close()));
  }

  private vifs(loc: VmLocation, links: Map<string, string | undefined>): VifInfo[] {
    const vm = vmOf(this.topology, loc.vm);
    return [vm.primaryMac, vm.secondaryMac].map((mac, devid) => {
      const ifname = vifName(loc.domid, devid);
      return { devid, mac, ifname, bridge: links.get(ifname) ?? "" };
    });
  }

  /** The lab's VMs whose recorded location is `host`. */
  async residents(host: string): Promise<string[]> {
    if (!this.topology.hosts.some((h) => h.name === host))
      throw new Error(`no host named "${host}" in lab "${this.topology.name}"`);
    return labVms(this.topology)
      .map((v) => v.name)
      .filter((name) => readVmLocation(this.stateDir, name).host === host);
  }

  async domain(vm: string): Promise<DomainInfo> {
    vmOf(this.topology, vm);
    const loc = readVmLocation(this.stateDir, vm);
    const { nl, close } = await this.netlinkIn(netnsName(this.topology, loc.host));
    try {
      const masters = new Map<string, string | undefined>();
      const all = await nl.links();
      const byIndex = new Map(all.map((l) => [l.index, l.name]));
      for (const l of all) masters.set(l.name, l.master === undefined ? undefined : byIndex.get(l.master));
      return { vm, domid: loc.domid, host: loc.host, vifs: this.vifs(loc, masters) };
    } finally {
      await close();
    }
  }

  async migrate(
    vm: string,
    destination: string,
    req: MigrateRequest,
    steps: LabMigrationSteps = {},
  ): Promise<DomainInfo> {
    const mark = req.mark ?? (() => {});
    const t = this.topology;
    if (!t.hosts.some((h) => h.name === destination))
      throw new Error(`no host named "${destination}" in the lab`);
    const spec = vmOf(t, vm);
    const first = spec.name === t.vm.name;
    const loc = readVmLocation(this.stateDir, vm);
    if (loc.host === destination) throw new Error(`${vm} already runs on ${destination}`);
    const [srcNs, dstNs, vmNs] = [netnsName(t, loc.host), netnsName(t, destination), netnsName(t, vm)];
    const domid = claimDomid(this.stateDir, loc.nextDomid);
    const devids = [0, 1];
    for (const d of devids) {
      if (!req.bridges[d]) throw new Error(`no destination bridge given for vif devid ${d}`);
    }

    // The toolstack's own steps before the pause (XAPI: the incoming domain and its VIFs, the memory copy).
    await steps.beforePause?.(domid);
    // Before the pause, as Xen does during pre-copy: connect to both Dom0s and open the destination.
    const [src, dst] = await Promise.all([this.netlinkIn(srcNs), this.netlinkIn(dstNs)]);
    const [xsSrc, xsDst] = await Promise.all([
      XenstoreClient.connect(join(this.stateDir, dom0SocketFile(loc.host))),
      XenstoreClient.connect(join(this.stateDir, dom0SocketFile(destination))),
    ]);
    const pids = await netnsPids(vmNs);
    mark("pre-copy-done");
    try {
      for (const pid of pids) {
        try {
          process.kill(pid, "SIGSTOP");
        } catch (err) {
          // A short-lived process in the VM (a probe's `ip`, say) may have exited since it was listed.
          if ((err as NodeJS.ErrnoException).code !== "ESRCH") throw err;
        }
      }
      const pausedAt = Date.now();
      mark("paused");
      req.onPaused?.();
      if (takeFault(this.stateDir, FAIL_AFTER_PAUSE_FILE))
        throw new Error(
          `the restore on ${destination} failed after the pause (fault injected by ${FAIL_AFTER_PAUSE_FILE}); ${vm} resumes on ${loc.host}`,
        );
      const tree = await exportTree(xsSrc, `/local/domain/${loc.domid}`);
      await xsSrc.control("release", String(loc.domid));
      for (const d of devids) {
        await src.nl.setLink(vifName(loc.domid, d), { netns: { name: dstNs }, name: vifName(domid, d) });
      }
      mark("vifs-moved");
      // xl and XAPI restore every vif plugged: no hold (host-plugin's xl adapter keeps the old primary's frontend
      // from connecting instead). With a reconnect delay, no vif has carrier until the frontends reconnect.
      const { restore, reconnectMs } = t.toolstack;
      const hold = restore === "lab" ? req.hold : undefined;
      const held = new Set(hold?.devids ?? []);
      for (const d of devids) {
        const ifname = vifName(domid, d);
        await dst.nl.writeSysctl(ifname, "disable_ipv6", 1);
        // A held vif is attached but not plugged: no carrier in the guest until the hold is released.
        await dst.nl.setLink(ifname, {
          master: req.bridges[d] ?? null,
          up: reconnectMs === 0 && !held.has(d),
        });
      }
      mark("vifs-attached");
      const remap = (p: Perm): Perm => (p.domid === loc.domid ? { ...p, domid } : p);
      // XAPI's destination made the domain's tree before the memory copy, and its hooks wrote into it: the
      // carried tree fills in only what is not there (xenopsd itself carries none of it).
      await importTree(xsDst, `/local/domain/${domid}`, tree, remap, restore === "xapi");
      await xsDst.write(`/local/domain/${domid}/domid`, String(domid));
      await xsDst.control("introduce", String(domid), join(this.stateDir, guestSocketFile(vm)));
      for (const [key, value] of Object.entries(req.guestWrites ?? {})) {
        await xsDst.write(`/local/domain/${domid}/${CHANNEL_DIR.xl}/${key}`, value);
      }
      mark("guest-notified");
      writeVmLocation(this.stateDir, { vm, host: destination, domid, nextDomid: domid + 1 }, first);
      await steps.beforeResume?.(domid);
      // Watch for the hold's release before the guest can answer it.
      const releasePath = hold ? `/local/domain/${domid}/${CHANNEL_DIR.xl}/${hold.key}` : undefined;
      const releaseWatch = releasePath ? await xsDst.watch(releasePath) : undefined;
      for (const pid of pids) {
        try {
          process.kill(pid, "SIGCONT");
        } catch (err) {
          // One that was already exiting when it was stopped (a probe's `ip`) has finished exiting since.
          if ((err as NodeJS.ErrnoException).code !== "ESRCH") throw err;
        }
      }
      mark("resumed");
      const pausedMs = Date.now() - pausedAt;
      // The frontends reconnect after resume, in the background of the hold below, each announcing the guest's
      // addresses as netfront does. (The VM's netlink worker starts now: one started before the pause would
      // have been stopped with the VM's processes.)
      const plug = async (d: number) => {
        await dst.nl.setLink(vifName(domid, d), { up: true });
        await notifyPeersIn(vmNs, `eth${d}`, d === 0 ? spec.primaryMac : spec.secondaryMac);
      };
      const reconnected =
        reconnectMs === 0
          ? Promise.resolve()
          : sleep(reconnectMs).then(async () => {
              for (const d of devids) if (!held.has(d)) await plug(d);
              mark("frontends-reconnected");
            });
      reconnected.catch(() => {}); // awaited below; this only keeps an early throw from leaving it unobserved
      if (hold && releaseWatch && releasePath) {
        const deadline = Date.now() + hold.timeoutMs;
        const it = releaseWatch[Symbol.asyncIterator]();
        for (;;) {
          const value = await xsDst.tryRead(releasePath);
          if (value !== undefined && hold.released(value)) break;
          const left = deadline - Date.now();
          if (left <= 0) break;
          let timer: NodeJS.Timeout | undefined;
          const timeout = new Promise<"timeout">((r) => {
            timer = setTimeout(() => r("timeout"), left);
          });
          const next = await Promise.race([it.next(), timeout]);
          clearTimeout(timer);
          if (next === "timeout") break;
        }
        await releaseWatch.close();
        await reconnected;
        for (const d of hold.devids) await plug(d);
        mark("held-vifs-plugged");
      }
      await reconnected;
      const vifs: VifInfo[] = devids.map((d) => ({
        devid: d,
        mac: d === 0 ? spec.primaryMac : spec.secondaryMac,
        ifname: vifName(domid, d),
        bridge: req.bridges[d] ?? "",
      }));
      return { vm, domid, host: destination, vifs, pausedMs };
    } catch (err) {
      // Never leave the VM frozen.
      for (const pid of pids) {
        try {
          process.kill(pid, "SIGCONT");
        } catch {
          /* gone */
        }
      }
      throw err;
    } finally {
      xsSrc.close();
      xsDst.close();
      await Promise.all([src.close(), dst.close()]);
    }
  }
}

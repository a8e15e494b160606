// `xenroam-agent network-setup`: has the DomU's network manager leave the VM's xenroam vif to the agent and
// keep the agent's routes, through the manager's own drop-in files (netmanagers.ts decides what they say).
// Run by install.sh and the Debian package's postinst; --remove by their uninstall and purge.

import { execFileSync } from "node:child_process";
import {
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmdirSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { dirname, isAbsolute, join } from "node:path";
import { Command, InvalidArgumentError } from "commander";
import {
  DROP_IN_MARK,
  DROP_IN_PATHS,
  detectManagers,
  dropInsFor,
  ifupdownProblem,
  type Manager,
  type RootView,
  type Vif,
} from "./netmanagers.js";

/**
 * A RootView over a directory ("/" for the live system). Inside an image (`root` other than /) a symbolic link
 * means what it would mean in that image: an absolute target is looked up under `root`, never on the build
 * host (`systemctl enable` makes absolute links), and a link counts as there whether or not its target is.
 */
export function rootView(root: string): RootView {
  const at = (p: string) => {
    let path = join(root, p);
    for (let hops = 0; hops < 8; hops++) {
      let target: string;
      try {
        if (!lstatSync(path).isSymbolicLink()) return path;
        target = readlinkSync(path);
      } catch {
        return path;
      }
      path = isAbsolute(target) ? join(root, target) : join(dirname(path), target);
    }
    return path;
  };
  return {
    exists: (p) => {
      try {
        lstatSync(join(root, p));
        return true;
      } catch {
        return false;
      }
    },
    read: (p) => {
      try {
        return readFileSync(at(p), "utf8");
      } catch {
        return undefined;
      }
    },
    list: (d) => {
      try {
        return readdirSync(at(d));
      } catch {
        return [];
      }
    },
  };
}

/** The live guest's network interfaces that have a MAC, with the Xen vif device id where they are vifs. */
export function liveInterfaces(sysfs = "/sys/class/net"): (Vif & { devid?: number })[] {
  const out: (Vif & { devid?: number })[] = [];
  let names: string[];
  try {
    names = readdirSync(sysfs);
  } catch {
    return out; // no sysfs (a chroot): no interfaces to look at
  }
  for (const name of names) {
    if (name === "lo") continue;
    try {
      const mac = readFileSync(join(sysfs, name, "address"), "utf8")
        .trim()
        .toLowerCase();
      const ifindex = Number(readFileSync(join(sysfs, name, "ifindex"), "utf8").trim());
      if (!/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/.test(mac) || mac === "00:00:00:00:00:00") continue;
      let devid: number | undefined;
      try {
        // A netfront device is xenbus's "vif-N", N its device id (the position in the domain's vif list).
        const m = /(?:^|\/)vif-(\d+)$/.exec(readlinkSync(join(sysfs, name, "device")));
        if (m) devid = Number(m[1]);
      } catch {
        // virtual interfaces have no device
      }
      out.push({ name, ifindex, mac, ...(devid !== undefined ? { devid } : {}) });
    } catch {
      // an interface that went away meanwhile
    }
  }
  return out;
}

interface Options {
  root: string;
  mac?: string;
  ifname?: string;
  remove?: boolean;
  dryRun?: boolean;
  apply: boolean;
}

function macArg(v: string): string {
  const mac = v.toLowerCase();
  if (!/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/.test(mac))
    throw new InvalidArgumentError(`expected a MAC such as 00:16:3e:00:01:10; got "${v}"`);
  return mac;
}

export class SetupError extends Error {
  override readonly name = "SetupError";
}

/** Which vif is xenroam's: the one --mac names, or else the second of exactly two Xen vifs. */
export function xenroamVif(
  live: readonly (Vif & { devid?: number })[],
  mac: string | undefined,
): Vif | undefined {
  if (mac) return live.find((l) => l.mac === mac);
  const vifs = live.filter((l) => l.devid !== undefined).sort((a, b) => (a.devid ?? 0) - (b.devid ?? 0));
  if (vifs.length !== 2) {
    throw new SetupError(
      vifs.length === 0
        ? "no Xen vif here (not a DomU?): say which interface is the VM's xenroam vif with --mac MAC"
        : `this VM has ${vifs.length} Xen vif(s) (${vifs.map((v) => `${v.name} ${v.mac}`).join(", ")}); xenroam needs two, the second added for it (vif = [ '…,bridge=xenbr0', 'mac=…,bridge=xrpark0' ]): with two, say which is xenroam's with --mac MAC`,
    );
  }
  return vifs[1];
}

const apply: Record<Manager, (vif: Vif | undefined) => string[][]> = {
  // reload re-reads the .network files and reconfigures the links whose file changed: the vif goes unmanaged.
  // ManageForeignRoutes= is read at start only; it matters when networkd (re)starts, which is when it would
  // sweep routes.
  "systemd-networkd": () => [["networkctl", "reload"]],
  NetworkManager: (vif) => [
    ["nmcli", "general", "reload", "conf"],
    ...(vif ? [["nmcli", "device", "set", vif.name, "managed", "no"]] : []),
  ],
  ifupdown: () => [],
};

export function networkSetupProgram(out: (line: string) => void = (l) => process.stdout.write(`${l}\n`)) {
  return new Command("xenroam-agent network-setup")
    .description(
      "Has the DomU's network manager (systemd-networkd, NetworkManager, ifupdown; netplan through the one it renders for) leave the VM's xenroam vif to xenroam-agent and keep the agent's routes, with the manager's own drop-in files. Idempotent. install.sh and the Debian package run it; --remove undoes it.",
    )
    .option("--root <dir>", "an image being built instead of this system (needs --mac)", "/")
    .option("--mac <mac>", "the xenroam vif's MAC (default: the second of the DomU's two Xen vifs)", macArg)
    .option("--ifname <name>", "its interface name, for managers that match by name (default: found by MAC)")
    .option("--remove", "remove the drop-in files network-setup wrote")
    .option("--dry-run", "print what would be written or removed, change nothing")
    .option("--no-apply", "do not ask running managers to reload their configuration")
    .addHelpText(
      "after",
      `
What it writes (only for the managers this system has):
  systemd-networkd  ${DROP_IN_PATHS.networkd} (Unmanaged=yes for the vif's MAC)
                    ${DROP_IN_PATHS.networkdConf} (ManageForeignRoutes=no)
  NetworkManager    ${DROP_IN_PATHS.networkManager} (the vif unmanaged)
  ifupdown          nothing: it fails if a stanza in /etc/network/interfaces(.d) names the vif
The VM's other vif stays the manager's: its addresses, DHCP and DNS are untouched.

Examples (as root):
  In a running DomU:            xenroam-agent network-setup
  Into an image being built:    xenroam-agent network-setup --root /mnt/image --mac 00:16:3e:00:01:10
  Undo:                         xenroam-agent network-setup --remove
`,
    )
    .action((opts: Options) => {
      const root = opts.root;
      if (!existsSync(root)) throw new SetupError(`--root ${root} does not exist`);
      const view = rootView(root);
      const at = (p: string) => join(root, p);
      const live = root === "/";
      if (opts.remove) {
        let removed = 0;
        for (const p of Object.values(DROP_IN_PATHS)) {
          const text = view.read(p);
          if (text === undefined) continue;
          if (!text.startsWith(DROP_IN_MARK)) {
            out(`kept ${p}: not written by network-setup`);
            continue;
          }
          if (!opts.dryRun) rmSync(at(p), { force: true });
          removed++;
          out(`${opts.dryRun ? "would remove" : "removed"} ${p}`);
        }
        // networkd.conf.d is no package's directory (Debian's systemd ships none): it goes when empty.
        if (!opts.dryRun && view.list(dirname(DROP_IN_PATHS.networkdConf)).length === 0) {
          try {
            rmdirSync(at(dirname(DROP_IN_PATHS.networkdConf)));
          } catch {
            // not there
          }
        }
        if (removed === 0) out("nothing to remove");
        return;
      }
      if (!live && !opts.mac)
        throw new SetupError("--root needs --mac: the image has no interfaces to look at");
      const interfaces = live ? liveInterfaces() : [];
      const vif = live ? xenroamVif(interfaces, opts.mac) : undefined;
      if (live && !vif)
        throw new SetupError(
          `no interface has MAC ${opts.mac} (this system has ${interfaces.map((i) => `${i.name} ${i.mac}`).join(", ") || "none"})`,
        );
      const mac = vif?.mac ?? opts.mac;
      if (!mac) throw new SetupError("--mac is needed: no xenroam vif was found");
      const ifname = opts.ifname ?? vif?.name;
      const detected = detectManagers(view);
      if (detected.length === 0) {
        out(
          "no network manager found (systemd-networkd, NetworkManager, ifupdown or netplan): nothing to write",
        );
        return;
      }
      for (const d of detected) out(`found ${d.manager}${d.running ? " (running)" : ""}: ${d.evidence}`);
      const managers = detected.map((d) => d.manager);
      for (const f of dropInsFor(managers, { mac, ...(ifname ? { name: ifname } : {}) })) {
        const had = view.read(f.path);
        if (had === f.content) {
          out(`unchanged ${f.path}`);
          continue;
        }
        if (had !== undefined && !had.startsWith(DROP_IN_MARK))
          throw new SetupError(`${f.path} exists and was not written by network-setup: move it away first`);
        if (opts.dryRun) {
          out(`would write ${f.path}:\n${f.content}`);
          continue;
        }
        // Never through a symbolic link: in an image it would point at the build host's files.
        const target = at(f.path);
        for (const p of [dirname(target), target, `${target}.new`]) {
          try {
            if (lstatSync(p).isSymbolicLink())
              throw new SetupError(`${p} is a symbolic link: network-setup writes only real files`);
          } catch (err) {
            if (err instanceof SetupError) throw err;
          }
        }
        mkdirSync(dirname(target), { recursive: true });
        rmSync(`${target}.new`, { force: true });
        writeFileSync(`${target}.new`, f.content, { mode: 0o644, flag: "wx" });
        renameSync(`${target}.new`, target);
        out(`wrote ${f.path}`);
        if (
          f.path === DROP_IN_PATHS.networkdConf &&
          detected.some((d) => d.manager === "systemd-networkd" && d.running)
        )
          out(
            `  systemd-networkd reads ${f.path} when it starts: restart it (systemctl restart systemd-networkd) for it to keep the agent's routes`,
          );
      }
      const problem =
        ifname && managers.includes("ifupdown") ? ifupdownProblem(view, { name: ifname }) : undefined;
      if (live && opts.apply && !opts.dryRun) {
        for (const d of detected.filter((x) => x.running)) {
          for (const cmd of apply[d.manager](vif)) {
            try {
              execFileSync(cmd[0] as string, cmd.slice(1), { stdio: "ignore", timeout: 15_000 });
              out(`ran ${cmd.join(" ")}`);
            } catch (err) {
              out(
                `could not run ${cmd.join(" ")} (${(err as Error).message.split("\n")[0]}): run it yourself`,
              );
            }
          }
        }
      }
      if (problem) throw new SetupError(problem);
    });
}

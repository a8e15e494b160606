// The distributions' real network managers, run against the lab's VM: systemd-networkd and NetworkManager as
// Debian 12 ships them, each in its own mount namespace inside the VM's network namespace, so the VM's
// interfaces are theirs to manage while their configuration and runtime state live under a directory the test
// owns (`root`, laid out as the guest's / would be: root/etc/…, root/run/…). The xenroam code under test
// reads the same directory through rootView(root), as it reads / in a real guest.
import { type ChildProcess, spawn } from "node:child_process";
import { chownSync, existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

export interface Daemon {
  readonly pid: number;
  readonly log: () => string;
  stop(): Promise<void>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function started(child: ChildProcess, logFile: string, extraPids: () => number[] = () => []): Daemon {
  let out = "";
  child.stdout?.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr?.on("data", (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  return {
    pid: child.pid ?? -1,
    log: () => out + (existsSync(logFile) ? readFileSync(logFile, "utf8") : ""),
    async stop() {
      for (const pid of [child.pid ?? -1, ...extraPids()]) {
        try {
          if (pid > 0) process.kill(pid, "SIGTERM");
        } catch {
          // gone already
        }
      }
      await Promise.race([exited, sleep(5000)]);
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    },
  };
}

/**
 * The sysfs of the VM's namespace read-only: systemd 252's udev_available() is "/sys is not read-only", and
 * with no udevd to initialise links, networkd would wait for it forever (NetworkManager likewise treats
 * links as udev's to announce). Read-only is what a container gets, and what makes both go without udev.
 */
const NO_UDEV = "mount -o remount,ro /sys";

/**
 * systemd-networkd (Debian 12: systemd 252) managing the VM's links, configured from root/etc/systemd and
 * root/run/systemd/network (where netplan generates).
 */
export function startNetworkd(vmNs: string, root: string): Daemon {
  for (const d of [
    "etc/systemd/network",
    "etc/systemd/networkd.conf.d",
    "run/systemd/netif",
    "run/systemd/network",
  ])
    mkdirSync(join(root, d), { recursive: true });
  // networkd drops to its own user and keeps its state there.
  const uid = Number(/^systemd-network:x:(\d+):(\d+):/m.exec(readFileSync("/etc/passwd", "utf8"))?.[1]);
  const gid = Number(/^systemd-network:x:(\d+):(\d+):/m.exec(readFileSync("/etc/passwd", "utf8"))?.[2]);
  if (!Number.isInteger(uid)) throw new Error("no systemd-network user (is systemd installed?)");
  chownSync(join(root, "run/systemd/netif"), uid, gid);
  const script = [
    "set -e",
    `mount --bind ${join(root, "etc/systemd/network")} /etc/systemd/network`,
    "mkdir -p /etc/systemd/networkd.conf.d",
    `mount --bind ${join(root, "etc/systemd/networkd.conf.d")} /etc/systemd/networkd.conf.d`,
    // Generated configuration (netplan's) is read from /run/systemd/network.
    "mkdir -p /run/systemd/network",
    `mount --bind ${join(root, "run/systemd/network")} /run/systemd/network`,
    "mkdir -p /run/systemd/netif",
    `mount --bind ${join(root, "run/systemd/netif")} /run/systemd/netif`,
    NO_UDEV,
    "exec /lib/systemd/systemd-networkd",
  ].join("\n");
  const child = spawn("ip", ["netns", "exec", vmNs, "unshare", "-m", "sh", "-c", script], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  return started(child, "/dev/null");
}

/**
 * NetworkManager (Debian 12: 1.42) managing the VM's links, with a D-Bus system bus of its own (it will not
 * start without one), configured from root/etc/NetworkManager, its state in root/var/lib and root/run.
 */
export function startNetworkManager(vmNs: string, root: string): Daemon {
  for (const d of [
    "etc/NetworkManager/conf.d",
    "etc/NetworkManager/system-connections",
    "var/lib/NetworkManager",
    "run/NetworkManager",
    "run/dbus",
  ])
    mkdirSync(join(root, d), { recursive: true });
  if (!existsSync(join(root, "etc/NetworkManager/NetworkManager.conf")))
    throw new Error(`${root}/etc/NetworkManager/NetworkManager.conf: write the guest's configuration first`);
  const dbusPid = join(root, "run/dbus/test.pid");
  const script = [
    "set -e",
    `mount --bind ${join(root, "run/dbus")} /run/dbus`,
    `mount --bind ${join(root, "etc/NetworkManager")} /etc/NetworkManager`,
    `mount --bind ${join(root, "var/lib/NetworkManager")} /var/lib/NetworkManager`,
    "mkdir -p /run/NetworkManager",
    `mount --bind ${join(root, "run/NetworkManager")} /run/NetworkManager`,
    NO_UDEV,
    `dbus-daemon --system --fork --nopidfile --print-pid > ${dbusPid}`,
    "exec NetworkManager --no-daemon",
  ].join("\n");
  const child = spawn("ip", ["netns", "exec", vmNs, "unshare", "-m", "sh", "-c", script], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  return started(child, "/dev/null", () => {
    try {
      return [Number(readFileSync(dbusPid, "utf8").trim())].filter((p) => p > 0);
    } catch {
      return [];
    }
  });
}

/** Polls until `check` holds or `ms` pass; throws with `what` and the daemon's log. */
export async function waitUntil(what: string, ms: number, check: () => boolean, daemon?: Daemon) {
  const until = Date.now() + ms;
  while (!check()) {
    if (Date.now() > until)
      throw new Error(`timed out waiting for ${what}${daemon ? `\n--- log ---\n${daemon.log()}` : ""}`);
    await sleep(100);
  }
}

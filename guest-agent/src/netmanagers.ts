// Living with the distribution's network manager (issue 11). A DomU's interfaces are set up by
// systemd-networkd, NetworkManager or ifupdown (netplan renders to one of the first two). xenroam-agent needs
// one of the VM's two vifs — the one added for xenroam, which is the standby until the first migration — to
// be its own: a manager that configures it undoes what the agent does there (it brings it up on the parking
// bridge, answers its RAs itself with the kernel's accept_ra off, takes it down and up). The other vif, the
// VM's own, stays the manager's: its addresses, DHCP, DNS. When roles alternate after a migration the agent
// keeps both working: the staging RA says "not a default router" (host-plugin/src/staging.ts), so a manager
// that handles RAs on the vif being staged adds no route that competes with the primary's.
//
// What this module does, pure over a read-only view of a root (the live system, or an image being built):
// which managers are there (detectManagers), the drop-in files that make them leave the xenroam vif alone
// and keep the agent's routes (dropInsFor), and, at run time, which vifs each running manager manages
// (managedVifs) and whether the agent can run beside them (coexistenceProblem).

export type Manager = "systemd-networkd" | "NetworkManager" | "ifupdown";

/** A root's files, read only. Paths are absolute inside the root ("/etc/…"). */
export interface RootView {
  exists(path: string): boolean;
  read(path: string): string | undefined;
  /** Names in a directory; none when it is missing. */
  list(dir: string): string[];
}

export interface Detection {
  readonly manager: Manager;
  /** Why it is thought to manage the network: the file that says so. */
  readonly evidence: string;
  /** Whether it is running now (its runtime state is there), not only installed and enabled. */
  readonly running: boolean;
}

/** The first line of every file network-setup writes: --remove deletes only files that start with it. */
export const DROP_IN_MARK = "# Written by xenroam-agent network-setup";

export const DROP_IN_PATHS = {
  networkd: "/etc/systemd/network/05-xenroam-agent.network",
  networkdConf: "/etc/systemd/networkd.conf.d/50-xenroam-agent.conf",
  networkManager: "/etc/NetworkManager/conf.d/90-xenroam-agent.conf",
} as const;

const NETWORKD_LINKS = "/run/systemd/netif/links";
const NM_DEVICES = "/run/NetworkManager/devices";
const IFUPDOWN_STATE = "/run/network";
const WANTS = "/etc/systemd/system/multi-user.target.wants";

const NETPLAN_DIRS = ["/etc/netplan", "/run/netplan", "/lib/netplan", "/usr/lib/netplan"];

/** The renderers netplan's YAML files ask for: networkd unless a file says NetworkManager. */
function netplanRenderers(v: RootView): { renderer: Manager; file: string }[] {
  const out: { renderer: Manager; file: string }[] = [];
  for (const dir of NETPLAN_DIRS) {
    for (const name of v
      .list(dir)
      .filter((n) => /\.ya?ml$/.test(n))
      .sort()) {
      const file = `${dir}/${name}`;
      const text = v.read(file) ?? "";
      out.push({
        renderer: /^\s*renderer:\s*["']?NetworkManager\b/m.test(text) ? "NetworkManager" : "systemd-networkd",
        file,
      });
    }
  }
  return out;
}

/** ifupdown's stanzas for interfaces other than lo, in /etc/network/interfaces and interfaces.d. */
export function ifupdownStanzas(v: RootView): { iface: string; kind: string; file: string }[] {
  const files = ["/etc/network/interfaces"];
  for (const n of v.list("/etc/network/interfaces.d").sort()) {
    // ifupdown's "source /etc/network/interfaces.d/*" takes every file; run-parts style names only for
    // source-directory, which Debian's default file does not use. Editor backups are still read by it.
    files.push(`/etc/network/interfaces.d/${n}`);
  }
  const out: { iface: string; kind: string; file: string }[] = [];
  for (const file of files) {
    const text = v.read(file);
    if (text === undefined) continue;
    for (const raw of text.split("\n")) {
      const line = raw.replace(/#.*/, "").trim();
      const m = /^(auto|allow-hotplug|allow-auto|allow-[a-z]+|iface)\s+(.+)$/.exec(line);
      if (!m) continue;
      const kind = m[1] as string;
      const names =
        kind === "iface" ? [(m[2] as string).split(/\s+/)[0] as string] : (m[2] as string).split(/\s+/);
      for (const iface of names) if (iface && iface !== "lo") out.push({ iface, kind, file });
    }
  }
  return out;
}

/** Which network managers this root has, enabled or running. */
export function detectManagers(v: RootView): Detection[] {
  const found = new Map<Manager, Detection>();
  const add = (manager: Manager, evidence: string, running: boolean) => {
    const had = found.get(manager);
    if (!had || (running && !had.running)) found.set(manager, { manager, evidence, running });
  };
  if (v.exists(`${WANTS}/systemd-networkd.service`))
    add("systemd-networkd", `${WANTS}/systemd-networkd.service`, false);
  if (v.exists("/etc/systemd/system/dbus-org.freedesktop.network1.service"))
    add("systemd-networkd", "/etc/systemd/system/dbus-org.freedesktop.network1.service", false);
  if (v.exists(`${WANTS}/NetworkManager.service`))
    add("NetworkManager", `${WANTS}/NetworkManager.service`, false);
  for (const { renderer, file } of netplanRenderers(v)) add(renderer, `${file} (netplan)`, false);
  const stanzas = ifupdownStanzas(v);
  if (stanzas.length > 0 && (v.exists("/sbin/ifup") || v.exists("/usr/sbin/ifup")))
    add("ifupdown", `${stanzas[0]?.file} (${stanzas[0]?.kind} ${stanzas[0]?.iface})`, false);
  // Running now: each leaves its runtime state where this module reads it (managedVifs).
  if (v.list(NETWORKD_LINKS).length > 0) add("systemd-networkd", NETWORKD_LINKS, true);
  if (v.exists(NM_DEVICES)) add("NetworkManager", NM_DEVICES, true);
  if (v.list(IFUPDOWN_STATE).some((n) => n.startsWith("ifstate.") && n !== "ifstate.lo"))
    add("ifupdown", `${IFUPDOWN_STATE}/ifstate.*`, true);
  return [...found.values()];
}

export interface Vif {
  readonly name: string;
  readonly ifindex: number;
  readonly mac: string;
}

/**
 * The interfaces that are the VM's vifs: the Xen vifs (netfront devices) when there are any, else every
 * interface with a MAC (the lab's VM, whose "vifs" are veth pairs).
 */
export function vifsOf(interfaces: readonly (Vif & { devid?: number })[]): Vif[] {
  const xen = interfaces.filter((i) => i.devid !== undefined);
  return [...(xen.length > 0 ? xen : interfaces)];
}

export interface DropIn {
  readonly manager: Manager;
  readonly path: string;
  readonly content: string;
}

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

/**
 * The files that make each manager leave the xenroam vif to the agent and keep the agent's routes. `name` is
 * the vif's interface name when known (a live guest): NetworkManager matches mac: against a device's permanent
 * address only — a Xen netfront has one (its MAC from xenstore, set before register_netdev), but where the
 * kernel has none (the lab's veth pairs, measured with NetworkManager 1.42) only the name matches.
 */
export function dropInsFor(managers: readonly Manager[], vif: { mac: string; name?: string }): DropIn[] {
  const mac = vif.mac.toLowerCase();
  if (!MAC.test(mac)) throw new Error(`not a MAC address: "${vif.mac}"`);
  const head = (what: string) =>
    `${DROP_IN_MARK} for the VM's xenroam vif (${mac}${vif.name ? `, ${vif.name}` : ""}).\n# ${what}\n# xenroam-agent network-setup --remove takes it away.\n`;
  const out: DropIn[] = [];
  if (managers.includes("systemd-networkd")) {
    out.push({
      manager: "systemd-networkd",
      path: DROP_IN_PATHS.networkd,
      // The first .network file (by name, across /etc, /run and /lib) whose [Match] fits a link is the one
      // networkd uses: 05- comes before netplan's 10-netplan-* and the usual 50-…/99-… ones.
      content: `${head("systemd-networkd leaves this vif to xenroam-agent, which brings it up and down and takes its addresses from RAs.")}
[Match]
MACAddress=${mac}

[Link]
Unmanaged=yes
`,
    });
    out.push({
      manager: "systemd-networkd",
      path: DROP_IN_PATHS.networkdConf,
      content: `${head("systemd-networkd keeps routes it did not make: the agent's default routes on the VM's other vif.")}
[Network]
ManageForeignRoutes=no
`,
    });
  }
  if (managers.includes("NetworkManager")) {
    const specs = [`mac:${mac}`, ...(vif.name ? [`interface-name:${vif.name}`] : [])];
    out.push({
      manager: "NetworkManager",
      path: DROP_IN_PATHS.networkManager,
      // A [device-*] section of its own rather than keyfile.unmanaged-devices, which an admin's file may set.
      content: `${head("NetworkManager leaves this vif to xenroam-agent (unmanaged).")}
[device-xenroam-agent]
match-device=${specs.join(",")}
managed=0
`,
    });
  }
  // ifupdown has no drop-in that takes an interface away: network-setup checks that no stanza names the
  // xenroam vif (ifupdownProblem) and says what to remove.
  return out;
}

/** What ifupdown's files do to the xenroam vif that the agent cannot live with; undefined when nothing. */
export function ifupdownProblem(v: RootView, vif: { name: string }): string | undefined {
  const mine = ifupdownStanzas(v).filter((s) => s.iface === vif.name);
  if (mine.length === 0) return undefined;
  return `ifupdown configures ${vif.name}, the VM's xenroam vif (${mine.map((s) => `"${s.kind} ${s.iface}" in ${s.file}`).join(", ")}): remove ${mine.length === 1 ? "that stanza" : "those stanzas"}, then ifdown ${vif.name}; xenroam-agent brings it up when a migration needs it`;
}

/** key=value lines (systemd's link state files, NetworkManager's device files). */
function keyValues(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split("\n")) {
    const m = /^\s*([A-Za-z0-9_-]+)\s*=\s*(.*?)\s*$/.exec(line);
    if (m) out.set(m[1] as string, m[2] as string);
  }
  return out;
}

/**
 * Which of these vifs a running manager manages now, from the state it keeps under /run:
 * - systemd-networkd writes /run/systemd/netif/links/IFINDEX for every link it knows, ADMIN_STATE=unmanaged
 *   for the ones no .network file (or one with Unmanaged=yes) claims; anything else is its.
 * - NetworkManager writes /run/NetworkManager/devices/IFINDEX ([device] managed=true) for the devices it
 *   manages and none for unmanaged ones (both seen with NetworkManager 1.42, test/lab/netmanagers.root.test).
 * - ifupdown writes /run/network/ifstate.NAME for each interface ifup configured.
 */
export function managedVifs(
  v: RootView,
  running: readonly Manager[],
  vifs: readonly Vif[],
): Map<Manager, Vif[]> {
  const out = new Map<Manager, Vif[]>();
  for (const m of running) {
    const mine = vifs.filter((vif) => {
      if (m === "systemd-networkd") {
        const state = v.read(`${NETWORKD_LINKS}/${vif.ifindex}`);
        // pending, initialized: networkd has not matched the link yet (the agent may start before it has):
        // not counted as its, the prepare finds out.
        const admin =
          state === undefined ? "unmanaged" : (keyValues(state).get("ADMIN_STATE") ?? "unmanaged");
        return !["unmanaged", "pending", "initialized"].includes(admin);
      }
      if (m === "NetworkManager") {
        const state = v.read(`${NM_DEVICES}/${vif.ifindex}`);
        return state !== undefined && keyValues(state).get("managed") === "true";
      }
      const state = v.read(`${IFUPDOWN_STATE}/ifstate.${vif.name}`);
      return state !== undefined && state.trim() !== "";
    });
    out.set(m, mine);
  }
  return out;
}

const RESTART: Record<Manager, string> = {
  "systemd-networkd": "systemctl restart systemd-networkd",
  NetworkManager: "systemctl reload NetworkManager",
  ifupdown: "ifdown the interface",
};

/**
 * Whether the agent can run beside the network managers running now: refused when one of them manages every
 * vif of the VM (then no vif is the agent's to bring up on the staging bridge), or when two of them manage the
 * same vif. Returns the reason and what to change, or undefined.
 */
export function coexistenceProblem(v: RootView, vifs: readonly Vif[]): string | undefined {
  if (vifs.length < 2) return undefined; // the prepare says it: the guest needs two interfaces
  const running = detectManagers(v)
    .filter((d) => d.running)
    .map((d) => d.manager);
  const managed = managedVifs(v, running, vifs);
  for (const [m, mine] of managed) {
    if (mine.length === vifs.length) {
      const list = mine.map((x) => `${x.name} (${x.mac})`).join(" and ");
      return `${m} manages every vif of this VM (${list}), so none is xenroam-agent's to bring up on the staging bridge: run "xenroam-agent network-setup" (it leaves the VM's xenroam vif to the agent through ${m}'s own drop-in files), then ${RESTART[m]}, then start xenroam-agent again`;
    }
  }
  for (const vif of vifs) {
    const by = [...managed].filter(([, mine]) => mine.includes(vif)).map(([m]) => m);
    if (by.length > 1) {
      return `${by.join(" and ")} both manage ${vif.name} (${vif.mac}): leave it to one of them (disable the other's unit), then start xenroam-agent again`;
    }
  }
  return undefined;
}

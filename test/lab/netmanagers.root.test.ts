// Root-only: xenroam-agent beside the distribution's network manager, the real ones Debian 12 ships, managing
// the lab VM's interfaces (test/lab/managers.ts runs them in the VM's namespace). For each: without
// xenroam's drop-ins the manager takes every vif and the agent refuses to start, saying what to do; after
// `xenroam-agent network-setup` it leaves the xenroam vif alone, and the method (never a fallback) moves the
// VM there and back with its home address reachable both ways after each move; the agent's routes survive
// the manager's restart. ifupdown, which has no daemon, with the real ifup: network-setup refuses while a
// stanza names the xenroam vif, and the method works beside `ifup` of the other.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import test, { type ExecutionContext } from "ava";
import { coexistenceProblem, managedVifs, rootView, type Vif } from "@xenroam/guest-agent";
import {
  DEFAULT_TOPOLOGY,
  findWorkspaceCommand,
  labDown,
  labUp,
  parseTopology,
  type Topology,
} from "@xenroam/lab";
import { type Daemon, startNetworkd, startNetworkManager, waitUntil } from "./managers.js";
import { migrate, pings as pingUntil, prepare } from "./support.js";

const run = promisify(execFile);
const AGENT = findWorkspaceCommand("xenroam-agent");
const XENROAM = findWorkspaceCommand("xenroam");

function fresh(t: ExecutionContext, prefix: string) {
  const name = `${prefix}${randomBytes(2).toString("hex")}`;
  const stateRoot = mkdtempSync(join(tmpdir(), "xr-nm-"));
  const topology = parseTopology({ ...DEFAULT_TOPOLOGY, name });
  const daemons: Daemon[] = [];
  t.teardown(async () => {
    for (const d of daemons) await d.stop();
    await labDown(name, { stateRoot, force: true }).catch(() => {});
    rmSync(stateRoot, { recursive: true, force: true });
  });
  const root = join(stateRoot, "guest");
  mkdirSync(root);
  return {
    topology,
    stateRoot,
    stateDir: join(stateRoot, name),
    root,
    vmNs: `${name}-${topology.vm.name}`,
    cnNs: `${name}-${topology.correspondent.name}`,
    keep: (d: Daemon) => (daemons.push(d), d),
    drop: (d: Daemon) => daemons.splice(daemons.indexOf(d), 1),
  };
}

/** The VM's interfaces as the agent sees them (its vifs: here the lab's veth ends, eth0 and eth1). */
async function vifs(vmNs: string): Promise<Vif[]> {
  const { stdout } = await run("ip", ["-n", vmNs, "-j", "link", "show"]);
  return (JSON.parse(stdout) as Array<{ ifname: string; ifindex: number; address?: string }>)
    .filter((l) => l.ifname !== "lo" && l.address)
    .map((l) => ({ name: l.ifname, ifindex: l.ifindex, mac: l.address as string }));
}

/** Pings with the patience these tests need beside a network manager (30 tries). */
const pings = (netns: string, to: string) => pingUntil(netns, to, 30);

/**
 * Starts xenroam-agent in the VM with the manager's runtime state where a guest has it (/run under the test's
 * root, in a mount namespace of its own); returns how it ended. It refuses before it touches xenstore, so
 * the xenstore path is one that does not exist: an agent that does not refuse keeps waiting and is killed.
 */
async function agentStart(vmNs: string, root: string): Promise<{ code: number | string; stderr: string }> {
  if (!AGENT) throw new Error("xenroam-agent is not built in this workspace");
  const binds = ["systemd/netif", "NetworkManager", "network"]
    .map((d) => `mkdir -p /run/${d} && mount --bind ${join(root, "run", d)} /run/${d}`)
    .join(" && ");
  const script = `set -e; mount -t tmpfs tmpfs /run; ${binds}; exec ${AGENT.map((a) => `'${a}'`).join(" ")} --channel xl --xenstore /nonexistent/xenbus`;
  for (const d of ["systemd/netif", "NetworkManager", "network"])
    mkdirSync(join(root, "run", d), { recursive: true });
  try {
    await run("ip", ["netns", "exec", vmNs, "unshare", "-m", "sh", "-c", script], {
      timeout: 8000,
      // In a namespace the agent does not read /run's managers unless told to (main.ts): here it is their /run.
      env: { ...process.env, XENROAM_AGENT_CHECK_MANAGERS: "1" },
    });
    return { code: 0, stderr: "" };
  } catch (err) {
    const e = err as { code?: number | string; signal?: string; stderr?: string };
    return { code: e.code ?? e.signal ?? "?", stderr: e.stderr ?? "" };
  }
}

async function networkSetup(root: string, args: string[]) {
  if (!AGENT) throw new Error("xenroam-agent is not built in this workspace");
  const [cmd, ...rest] = AGENT as [string, ...string[]];
  return run(cmd, [...rest, "network-setup", "--root", root, ...args]);
}

/**
 * At hostb, the manager's vif (eth0) is the one staged for the way back: a prepare, and while it stands the
 * VM's traffic still leaves by its primary (eth1), whatever the manager makes of the staging RAs on eth0
 * (networkd and NetworkManager answer RAs themselves there); then the prepare is undone.
 */
async function stagedKeepsPrimary(t: ExecutionContext, topology: Topology, stateDir: string, vmNs: string) {
  await prepare(topology, stateDir, "hosta");
  await new Promise((r) => setTimeout(r, 2500));
  const { stdout } = await run("ip", ["-n", vmNs, "-6", "route", "get", topology.correspondent.address]);
  t.regex(stdout, / dev eth1 /, `with eth0 staged the VM's traffic still leaves by eth1: ${stdout.trim()}`);
  t.true(await pings(vmNs, topology.correspondent.address), "VM -> CN while eth0 is staged");
  const [cmd, ...rest] = XENROAM as [string, ...string[]];
  await run("ip", [
    "netns",
    "exec",
    `${topology.name}-hostb`,
    cmd,
    ...rest,
    "--lab",
    stateDir,
    "abort",
    topology.vm.name,
  ]);
}

/** There and back with the method; the HoA answers the CN and the VM reaches the CN after each move. */
async function thereAndBack(
  t: ExecutionContext,
  topology: Topology,
  stateDir: string,
  vmNs: string,
  cnNs: string,
  /**
   * Whether the manager may set the parked old primary up again: NetworkManager does (measured, 1.42: a few
   * seconds after the switch it activates the vif's profile again; on the parking bridge no RA answers, so it
   * gets no route); what matters then is that the VM's traffic still leaves by the new primary.
   */
  standbyComesUp = false,
) {
  const hoa = topology.mobility?.hoa as string;
  for (const to of ["hostb", "hosta"]) {
    if (to === "hosta") await stagedKeepsPrimary(t, topology, stateDir, vmNs);
    const r = await migrate(topology, stateDir, to);
    t.is(r.method, "dual-interface", `to ${to}: ${r.fallback ?? ""}`);
    t.true(await pings(cnNs, hoa), `CN -> HoA after the move to ${to}`);
    t.true(await pings(vmNs, topology.correspondent.address), `VM -> CN after the move to ${to}`);
    // The VM's own connections leave from its HoA: the agent's default route wins over the one a manager
    // adds again at each RA on the vif it keeps (without the HoA as source, their answers would be rewritten
    // to the HoA and never reach them). Looked at after the site's next RA has come (max interval 4 s).
    await new Promise((r) => setTimeout(r, (topology.sites[0]?.ra.maxIntervalMs ?? 4000) + 1000));
    const { stdout: via } = await run("ip", [
      "-n",
      vmNs,
      "-6",
      "route",
      "get",
      topology.correspondent.address,
    ]);
    const [primary, standby] = to === "hostb" ? ["eth1", "eth0"] : ["eth0", "eth1"];
    t.true(
      via.includes(` dev ${primary} `) && via.includes(` src ${hoa} `),
      `VM -> CN by ${primary} from the HoA after the move to ${to} and an RA: ${via.trim()}`,
    );
    // The manager did not bring the old primary up again: parked, it would carry routes into nowhere.
    const { stdout } = await run("ip", ["-n", vmNs, "-j", "link", "show", standby]);
    const flags = (JSON.parse(stdout) as Array<{ flags: string[] }>)[0]?.flags ?? [];
    if (!standbyComesUp)
      t.false(flags.includes("UP"), `${standby}, the standby after the move to ${to}, stays down`);
  }
}

async function agentRoutes(vmNs: string): Promise<string> {
  const { stdout } = await run("ip", ["-n", vmNs, "-6", "route", "show", "default"]);
  return stdout;
}

test("systemd-networkd: refused while it manages both vifs; after network-setup the method there and back, the agent's routes kept", async (t) => {
  const f = fresh(t, "nd");
  const { topology, root, vmNs, cnNs } = f;
  await labUp(topology, { stateRoot: f.stateRoot });
  const view = rootView(root);
  // The guest's configuration as a Debian image with systemd-networkd often has it: every ethernet link by RAs.
  mkdirSync(join(root, "etc/systemd/network"), { recursive: true });
  writeFileSync(
    join(root, "etc/systemd/network/50-ether.network"),
    "[Match]\nName=eth*\n\n[Network]\nIPv6AcceptRA=yes\n",
  );
  mkdirSync(join(root, "etc/systemd/system/multi-user.target.wants"), { recursive: true });
  symlinkSync(
    "/lib/systemd/system/systemd-networkd.service",
    join(root, "etc/systemd/system/multi-user.target.wants/systemd-networkd.service"),
  );
  const links = await vifs(vmNs);
  const managed = () => managedVifs(view, ["systemd-networkd"], links).get("systemd-networkd") ?? [];

  // Without xenroam's drop-ins networkd claims both vifs, and the agent will not start beside it.
  let nd = f.keep(startNetworkd(vmNs, root));
  await waitUntil("networkd to claim both vifs", 15_000, () => managed().length === 2, nd);
  t.regex(coexistenceProblem(view, links) ?? "", /systemd-networkd manages every vif .*network-setup/);
  const refused = await agentStart(vmNs, root);
  t.is(refused.code, 2, `the agent refuses to start: ${refused.stderr}`);
  t.regex(refused.stderr, /systemd-networkd manages every vif.*xenroam-agent network-setup/s);
  await nd.stop();
  f.drop(nd);
  // It left eth1, the xenroam vif, up on the parking bridge; as at the guest's next boot, it is down again.
  await run("ip", ["-n", vmNs, "link", "set", "eth1", "down"]);

  const { stdout } = await networkSetup(root, ["--mac", topology.vm.secondaryMac, "--ifname", "eth1"]);
  t.regex(stdout, /wrote \/etc\/systemd\/network\/05-xenroam-agent\.network/);
  nd = f.keep(startNetworkd(vmNs, root));
  await waitUntil(
    "networkd to manage eth0 and leave eth1",
    15_000,
    () =>
      managed()
        .map((l) => l.name)
        .join() === "eth0" &&
      view.read(`/run/systemd/netif/links/${links.find((l) => l.name === "eth1")?.ifindex}`) !== undefined,
    nd,
  );
  t.is(coexistenceProblem(view, links), undefined);
  t.not((await agentStart(vmNs, root)).code, 2, "the agent starts (and waits for xenstore)");

  await thereAndBack(t, topology, f.stateDir, vmNs, cnNs);
  t.deepEqual(
    managed().map((l) => l.name),
    ["eth0"],
    "networkd still leaves eth1 to the agent",
  );
  // The agent's default route on the primary (metric 64) outlives networkd's restart.
  t.regex(await agentRoutes(vmNs), /dev eth0 proto static .*metric 64\b/);
  await nd.stop();
  f.drop(nd);
  nd = f.keep(startNetworkd(vmNs, root));
  await waitUntil("networkd to manage eth0 again", 15_000, () => managed().length === 1, nd);
  await new Promise((r) => setTimeout(r, 1500));
  t.regex(await agentRoutes(vmNs), /dev eth0 proto static .*metric 64\b/, "kept across networkd's restart");
  t.true(await pings(cnNs, topology.mobility?.hoa as string), "CN -> HoA after networkd's restart");
});

test("NetworkManager: refused while it manages both vifs; after network-setup the method there and back, the agent's routes kept", async (t) => {
  const f = fresh(t, "nm");
  const { topology, root, vmNs, cnNs } = f;
  await labUp(topology, { stateRoot: f.stateRoot });
  const view = rootView(root);
  // The guest's configuration: NetworkManager with its keyfile plugin, the admin's profile for eth0 (RAs,
  // EUI-64 identifiers), and NetworkManager's default of a "Wired connection" for any other ethernet link.
  mkdirSync(join(root, "etc/NetworkManager/system-connections"), { recursive: true });
  writeFileSync(join(root, "etc/NetworkManager/NetworkManager.conf"), "[main]\nplugins=keyfile\n");
  writeFileSync(
    join(root, "etc/NetworkManager/system-connections/vm.nmconnection"),
    "[connection]\nid=vm\ntype=ethernet\ninterface-name=eth0\n\n[ipv4]\nmethod=disabled\n\n[ipv6]\nmethod=auto\naddr-gen-mode=eui64\n",
    { mode: 0o600 },
  );
  mkdirSync(join(root, "etc/systemd/system/multi-user.target.wants"), { recursive: true });
  symlinkSync(
    "/lib/systemd/system/NetworkManager.service",
    join(root, "etc/systemd/system/multi-user.target.wants/NetworkManager.service"),
  );
  const links = await vifs(vmNs);
  const managed = () => managedVifs(view, ["NetworkManager"], links).get("NetworkManager") ?? [];

  let nm = f.keep(startNetworkManager(vmNs, root));
  await waitUntil("NetworkManager to manage both vifs", 20_000, () => managed().length === 2, nm);
  t.regex(coexistenceProblem(view, links) ?? "", /NetworkManager manages every vif .*network-setup/);
  const refused = await agentStart(vmNs, root);
  t.is(refused.code, 2, `the agent refuses to start: ${refused.stderr}`);
  t.regex(refused.stderr, /NetworkManager manages every vif.*xenroam-agent network-setup/s);
  await nm.stop();
  f.drop(nm);
  await run("ip", ["-n", vmNs, "link", "set", "eth1", "down"]);
  rmSync(join(root, "run/NetworkManager"), { recursive: true, force: true });

  const { stdout } = await networkSetup(root, ["--mac", topology.vm.secondaryMac, "--ifname", "eth1"]);
  t.regex(stdout, /wrote \/etc\/NetworkManager\/conf\.d\/90-xenroam-agent\.conf/);
  nm = f.keep(startNetworkManager(vmNs, root));
  await waitUntil(
    "NetworkManager to manage eth0 and leave eth1",
    20_000,
    () =>
      managed()
        .map((l) => l.name)
        .join() === "eth0",
    nm,
  );
  await new Promise((r) => setTimeout(r, 3000));
  t.deepEqual(
    managed().map((l) => l.name),
    ["eth0"],
  );
  t.is(coexistenceProblem(view, links), undefined);

  await thereAndBack(t, topology, f.stateDir, vmNs, cnNs, true);
  t.deepEqual(
    managed().map((l) => l.name),
    ["eth0"],
    "NetworkManager still leaves eth1 to the agent",
  );
  t.regex(await agentRoutes(vmNs), /dev eth0 proto static .*metric 64\b/);
  await nm.stop();
  f.drop(nm);
  rmSync(join(root, "run/NetworkManager"), { recursive: true, force: true });
  nm = f.keep(startNetworkManager(vmNs, root));
  await waitUntil("NetworkManager to manage eth0 again", 20_000, () => managed().length === 1, nm);
  await new Promise((r) => setTimeout(r, 3000));
  t.regex(
    await agentRoutes(vmNs),
    /dev eth0 proto static .*metric 64\b/,
    "kept across NetworkManager's restart",
  );
  t.true(await pings(cnNs, topology.mobility?.hoa as string), "CN -> HoA after NetworkManager's restart");
});

test("ifupdown: network-setup refuses while a stanza names the xenroam vif, and so does the agent once ifup took both; the method beside ifup of the other", async (t) => {
  const f = fresh(t, "if");
  const { topology, root, vmNs, cnNs } = f;
  await labUp(topology, { stateRoot: f.stateRoot });
  const view = rootView(root);
  // A Debian installer's habit: every NIC it saw at install time gets a hotplug stanza.
  const interfaces = join(root, "etc/network/interfaces");
  const stanza = (dev: string) => `allow-hotplug ${dev}\niface ${dev} inet6 auto\n`;
  mkdirSync(join(root, "etc/network/interfaces.d"), { recursive: true });
  writeFileSync(interfaces, `auto lo\niface lo inet loopback\n\n${stanza("eth0")}\n${stanza("eth1")}`);
  mkdirSync(join(root, "sbin"), { recursive: true });
  symlinkSync("/sbin/ifup", join(root, "sbin/ifup"));
  mkdirSync(join(root, "run/network"), { recursive: true });
  // The real ifup, with this root's file and state; the host's hook scripts are not the guest's (--no-scripts).
  const ifupdown = (cmd: "ifup" | "ifdown", dev: string) =>
    run("ip", [
      "netns",
      "exec",
      vmNs,
      cmd,
      "-i",
      interfaces,
      "--state-dir",
      join(root, "run/network"),
      "--no-scripts",
      "--allow=hotplug",
      dev,
    ]);

  const setup = await networkSetup(root, ["--mac", topology.vm.secondaryMac, "--ifname", "eth1"]).then(
    () => undefined,
    (err: { code?: number; stderr?: string }) => err,
  );
  t.is(setup?.code, 1, "network-setup fails while ifupdown configures the xenroam vif");
  t.regex(setup?.stderr ?? "", /ifupdown configures eth1.*"allow-hotplug eth1".*remove those stanzas/s);

  await ifupdown("ifup", "eth0");
  await ifupdown("ifup", "eth1");
  const links = await vifs(vmNs);
  t.deepEqual(
    (managedVifs(view, ["ifupdown"], links).get("ifupdown") ?? []).map((l) => l.name),
    ["eth0", "eth1"],
  );
  const refused = await agentStart(vmNs, root);
  t.is(refused.code, 2, `the agent refuses to start: ${refused.stderr}`);
  t.regex(refused.stderr, /ifupdown manages every vif/);

  // The admin does what it said: the stanza goes, ifdown takes the vif back.
  await ifupdown("ifdown", "eth1");
  writeFileSync(interfaces, `auto lo\niface lo inet loopback\n\n${stanza("eth0")}`);
  const { stdout } = await networkSetup(root, ["--mac", topology.vm.secondaryMac, "--ifname", "eth1"]);
  t.regex(stdout, /found ifupdown/);
  t.is(coexistenceProblem(view, links), undefined);
  t.not((await agentStart(vmNs, root)).code, 2, "the agent starts (and waits for xenstore)");
  await thereAndBack(t, topology, f.stateDir, vmNs, cnNs);
});

test("netplan (networkd renderer): network-setup finds networkd through netplan's YAML; its 05- file wins over netplan's 10-netplan-*", async (t) => {
  const f = fresh(t, "np");
  const { topology, root, vmNs, cnNs } = f;
  await labUp(topology, { stateRoot: f.stateRoot });
  const view = rootView(root);
  // Ubuntu's cloud images' way: netplan matches every ethernet link by name; the real `netplan generate`
  // renders it for networkd under root/run/systemd/network.
  mkdirSync(join(root, "etc/netplan"), { recursive: true });
  writeFileSync(
    join(root, "etc/netplan/50-cloud-init.yaml"),
    'network:\n  version: 2\n  renderer: networkd\n  ethernets:\n    all:\n      match:\n        name: "eth*"\n      accept-ra: true\n',
    { mode: 0o600 },
  );
  await run("netplan", ["generate", "--root-dir", root]);
  t.true(view.exists("/run/systemd/network/10-netplan-all.network"), "netplan rendered for networkd");
  const { stdout } = await networkSetup(root, ["--mac", topology.vm.secondaryMac, "--ifname", "eth1"]);
  t.regex(stdout, /found systemd-networkd: \/etc\/netplan\/50-cloud-init\.yaml \(netplan\)/);
  const links = await vifs(vmNs);
  const managed = () => managedVifs(view, ["systemd-networkd"], links).get("systemd-networkd") ?? [];
  const nd = f.keep(startNetworkd(vmNs, root));
  const eth0 = links.find((l) => l.name === "eth0")?.ifindex;
  await waitUntil(
    "networkd to manage eth0 with netplan's file and leave eth1",
    15_000,
    () =>
      managed()
        .map((l) => l.name)
        .join() === "eth0" &&
      /NETWORK_FILE=\/run\/systemd\/network\/10-netplan-all\.network/.test(
        view.read(`/run/systemd/netif/links/${eth0}`) ?? "",
      ),
    nd,
  );
  t.is(coexistenceProblem(view, links), undefined);
  await thereAndBack(t, topology, f.stateDir, vmNs, cnNs);
});

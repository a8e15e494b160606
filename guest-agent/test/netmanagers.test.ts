// What xenroam-agent makes of the distribution's network managers, on roots made of files. The runtime state
// files are as the real daemons wrote them (systemd-networkd 252 and NetworkManager 1.42, seen in
// test/lab/netmanagers.root.test.ts, which runs both against the lab's VM).
import test from "ava";
import {
  coexistenceProblem,
  DROP_IN_MARK,
  DROP_IN_PATHS,
  detectManagers,
  dropInsFor,
  ifupdownProblem,
  managedVifs,
  type RootView,
  vifsOf,
} from "../src/netmanagers.js";
import { SetupError, xenroamVif } from "../src/network-setup.js";

function root(files: Record<string, string>): RootView {
  const dirs = new Set<string>();
  for (const p of Object.keys(files)) {
    const parts = p.split("/");
    for (let i = 2; i < parts.length; i++) dirs.add(parts.slice(0, i).join("/"));
  }
  return {
    exists: (p) => p in files || dirs.has(p),
    read: (p) => files[p],
    list: (d) => [
      ...new Set(
        Object.keys(files)
          .filter((p) => p.startsWith(`${d}/`))
          .map((p) => p.slice(d.length + 1).split("/")[0] as string),
      ),
    ],
  };
}

const NETWORKD_UNMANAGED = "# This is private data. Do not parse.\nADMIN_STATE=unmanaged\nOPER_STATE=off\n";
const NETWORKD_CONFIGURED =
  "# This is private data. Do not parse.\nADMIN_STATE=configured\nOPER_STATE=routable\nNETWORK_FILE=/etc/systemd/network/50-ether.network\n";
const NM_MANAGED = "[device]\nmanaged=true\nperm-hw-addr-fake=00:16:3E:00:00:02\nnm-owned=false\n";

const eth0 = { name: "eth0", ifindex: 2, mac: "00:16:3e:00:00:01" };
const eth1 = { name: "eth1", ifindex: 3, mac: "00:16:3e:00:00:02" };

test("detects networkd and NetworkManager enabled, running, or through netplan's renderer", (t) => {
  t.deepEqual(
    detectManagers(root({ "/etc/systemd/system/multi-user.target.wants/systemd-networkd.service": "" })).map(
      (d) => [d.manager, d.running],
    ),
    [["systemd-networkd", false]],
  );
  t.deepEqual(
    detectManagers(root({ "/run/NetworkManager/devices/2": NM_MANAGED })).map((d) => [d.manager, d.running]),
    [["NetworkManager", true]],
  );
  const netplan = detectManagers(
    root({
      "/etc/netplan/01.yaml": "network:\n  version: 2\n  renderer: NetworkManager\n",
      "/etc/netplan/50-cloud-init.yaml": "network:\n  version: 2\n  ethernets: {}\n",
    }),
  );
  t.deepEqual(
    netplan.map((d) => [d.manager, d.evidence]),
    [
      ["NetworkManager", "/etc/netplan/01.yaml (netplan)"],
      ["systemd-networkd", "/etc/netplan/50-cloud-init.yaml (netplan)"],
    ],
  );
  t.deepEqual(detectManagers(root({ "/etc/hostname": "vm\n" })), []);
});

test("ifupdown counts only with its stanzas for something other than lo, and ifup installed", (t) => {
  const lo = { "/etc/network/interfaces": "auto lo\niface lo inet loopback\n", "/sbin/ifup": "" };
  t.deepEqual(detectManagers(root(lo)), []);
  const eth = { ...lo, "/etc/network/interfaces.d/eth0": "allow-hotplug eth0\niface eth0 inet6 auto\n" };
  t.deepEqual(
    detectManagers(root(eth)).map((d) => d.manager),
    ["ifupdown"],
  );
  t.deepEqual(
    detectManagers(root({ "/etc/network/interfaces.d/eth0": "auto eth0\n" })),
    [],
    "no ifup, no ifupdown",
  );
});

test("ifupdown's stanzas that name the xenroam vif are refused, with what to remove; comments are not stanzas", (t) => {
  const v = root({
    "/etc/network/interfaces":
      "source /etc/network/interfaces.d/*\n# auto eth1\nallow-hotplug eth0\niface eth0 inet6 auto\n",
    "/etc/network/interfaces.d/eth1": "auto eth1 eth2\niface eth1 inet6 auto\n",
  });
  t.regex(
    ifupdownProblem(v, { name: "eth1" }) ?? "",
    /^ifupdown configures eth1, the VM's xenroam vif \("auto eth1" in \/etc\/network\/interfaces\.d\/eth1, "iface eth1" in .*\): remove those stanzas, then ifdown eth1/,
  );
  t.is(ifupdownProblem(v, { name: "eth3" }), undefined);
});

test("drop-ins: networkd's .network sorts first and claims the vif by MAC; NetworkManager's by MAC and name", (t) => {
  const files = dropInsFor(["systemd-networkd", "NetworkManager"], {
    mac: "00:16:3E:00:01:10",
    name: "enX1",
  });
  t.deepEqual(
    files.map((f) => f.path),
    [DROP_IN_PATHS.networkd, DROP_IN_PATHS.networkdConf, DROP_IN_PATHS.networkManager],
  );
  for (const f of files) t.true(f.content.startsWith(DROP_IN_MARK), f.path);
  t.regex(files[0]?.content ?? "", /\[Match\]\nMACAddress=00:16:3e:00:01:10\n\n\[Link\]\nUnmanaged=yes\n$/);
  t.regex(files[1]?.content ?? "", /\[Network\]\nManageForeignRoutes=no\n$/);
  t.regex(files[2]?.content ?? "", /match-device=mac:00:16:3e:00:01:10,interface-name:enX1\nmanaged=0\n$/);
  t.regex(
    dropInsFor(["NetworkManager"], { mac: "00:16:3e:00:01:10" })[0]?.content ?? "",
    /match-device=mac:00:16:3e:00:01:10\n/,
  );
  t.deepEqual(dropInsFor(["ifupdown"], { mac: "00:16:3e:00:01:10" }), []);
  t.throws(() => dropInsFor(["NetworkManager"], { mac: "00:16:3e" }), { message: /not a MAC address/ });
});

test("which vifs each running manager manages, from its own runtime state", (t) => {
  const v = root({
    "/run/systemd/netif/links/2": NETWORKD_CONFIGURED,
    "/run/systemd/netif/links/3": NETWORKD_UNMANAGED,
    "/run/NetworkManager/devices/2": NM_MANAGED,
    "/run/network/ifstate.eth1": "eth1\n",
  });
  const m = managedVifs(v, ["systemd-networkd", "NetworkManager", "ifupdown"], [eth0, eth1]);
  t.deepEqual(
    m.get("systemd-networkd")?.map((l) => l.name),
    ["eth0"],
  );
  t.deepEqual(
    m.get("NetworkManager")?.map((l) => l.name),
    ["eth0"],
    "no device file: unmanaged",
  );
  t.deepEqual(
    m.get("ifupdown")?.map((l) => l.name),
    ["eth1"],
  );
});

test("the agent refuses when a manager has every vif, or two managers one vif; one vif left to it is fine", (t) => {
  const both = root({
    "/run/systemd/netif/links/2": NETWORKD_CONFIGURED,
    "/run/systemd/netif/links/3": NETWORKD_CONFIGURED,
  });
  t.regex(
    coexistenceProblem(both, [eth0, eth1]) ?? "",
    /^systemd-networkd manages every vif of this VM \(eth0 \(00:16:3e:00:00:01\) and eth1 \(00:16:3e:00:00:02\)\).*run "xenroam-agent network-setup".*systemctl restart systemd-networkd/,
  );
  const one = root({
    "/run/systemd/netif/links/2": NETWORKD_CONFIGURED,
    "/run/systemd/netif/links/3": NETWORKD_UNMANAGED,
  });
  t.is(coexistenceProblem(one, [eth0, eth1]), undefined);
  const twoManagers = root({
    "/run/systemd/netif/links/2": NETWORKD_CONFIGURED,
    "/run/systemd/netif/links/3": NETWORKD_UNMANAGED,
    "/run/NetworkManager/devices/2": NM_MANAGED,
  });
  t.regex(
    coexistenceProblem(twoManagers, [eth0, eth1]) ?? "",
    /systemd-networkd and NetworkManager both manage eth0/,
  );
  t.is(coexistenceProblem(both, [eth0]), undefined, "one vif: the prepare says what is missing");
  t.is(coexistenceProblem(root({}), [eth0, eth1]), undefined, "no manager running");
});

test("the VM's vifs are its Xen vifs when it has any; xenroam's is the second, or the one --mac names", (t) => {
  const docker = { name: "docker0", ifindex: 5, mac: "02:42:ac:11:00:01" };
  const x0 = { ...eth0, devid: 0 };
  const x1 = { ...eth1, devid: 1 };
  t.deepEqual(
    vifsOf([docker, x1, x0]).map((l) => l.name),
    ["eth1", "eth0"],
  );
  t.deepEqual(
    vifsOf([docker, eth0]).map((l) => l.name),
    ["docker0", "eth0"],
  );
  t.is(xenroamVif([x1, docker, x0], undefined)?.name, "eth1");
  t.is(xenroamVif([x1, x0], "00:16:3e:00:00:01")?.name, "eth0");
  t.is(xenroamVif([x1, x0], "00:16:3e:00:00:09"), undefined);
  t.throws(() => xenroamVif([docker], undefined), {
    instanceOf: SetupError,
    message: /no Xen vif here.*--mac/,
  });
  t.throws(() => xenroamVif([x0], undefined), {
    instanceOf: SetupError,
    message: /has 1 Xen vif\(s\).*needs two/,
  });
});

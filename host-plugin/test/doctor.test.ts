import test from "ava";
import { checks, type HostFacts } from "../src/doctor.js";

const ready: HostFacts = {
  nodeVersion: "v20.19.1",
  uid: 0,
  os: { distro: "Debian GNU/Linux", release: "12", kernel: "6.1.0-xen" },
  interfaces: ["lo", "eth0", "xenbr0", "xrpark0"],
  commands: { xl: "/usr/sbin/xl", radvd: "/usr/sbin/radvd", nft: "/usr/sbin/nft", ip: "/usr/sbin/ip" },
  paths: {
    "/run/xenstored/socket": true,
    "/etc/xenroam/sites.json": true,
    "/lib/modules/6.1.0-xen/kernel/drivers/net/veth.ko": true,
  },
};
const opts = {
  toolstack: "xl" as const,
  bridge: "xenbr0",
  parkingBridge: "xrpark0",
  sitesFile: "/etc/xenroam/sites.json",
};

test("a ready xl host passes every check", (t) => {
  t.deepEqual(
    checks(ready, opts).filter((c) => !c.ok),
    [],
  );
});

test("each missing piece is named with its fix; only essentials fail the host", (t) => {
  const broken: HostFacts = {
    ...ready,
    nodeVersion: "v18.19.0",
    uid: 1000,
    interfaces: ["lo", "eth0"],
    commands: { ip: "/usr/sbin/ip" },
    paths: {},
  };
  const failed = checks(broken, opts).filter((c) => !c.ok);
  const byName = Object.fromEntries(failed.map((c) => [c.name, c]));
  t.regex(byName.node?.fix ?? "", /Node\.js 20\.10/);
  t.regex(byName.root?.fix ?? "", /as root/);
  t.regex(byName.xenstore?.detail ?? "", /\/dev\/xen\/xenbus/);
  t.regex(byName["toolstack (xl)"]?.fix ?? "", /xen-utils|--toolstack xapi/);
  t.regex(byName.radvd?.fix ?? "", /apt-get install radvd/);
  t.regex(byName.bridge?.fix ?? "", /--bridge NAME/);
  t.false(byName["parking bridge"]?.essential, "receive creates the parking bridge on demand");
  t.false(byName.nft?.essential);
  t.regex(byName.sites?.fix ?? "", /--control URL/);
  t.false(byName["veth (announce)"]?.essential, "without it the router learns the address after the resume");
  t.regex(byName["veth (announce)"]?.fix ?? "", /--no-announce/);
  const xapi = checks(
    { ...ready, commands: { ...ready.commands, xe: undefined } },
    { ...opts, toolstack: "xapi" },
  );
  t.regex(xapi.find((c) => c.name === "toolstack (xapi)")?.fix ?? "", /XCP-ng/);
  t.false(
    xapi.some((c) => c.name === "veth (announce)"),
    "XAPI hosts do not announce",
  );
});

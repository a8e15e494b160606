#!/usr/bin/env node
// Builds xenroam's Debian packages from its bundles (scripts/package.mjs), with dpkg-deb:
//   agent  xenroam-agent_<version>_amd64.deb  the guest agent for Debian DomUs: /opt/xenroam-agent (Bun and the
//          agent), /usr/sbin/xenroam-agent, the systemd unit (enabled, and started where systemd runs),
//          /etc/default/xenroam-agent (a conffile). Needs only the C library (and deb-systemd-helper).
//   host   xenroam_<version>_amd64.deb  the Dom0 side for Debian xl hosts: /opt/xenroam (Node.js and xenroam),
//          /usr/sbin/xenroam; depends on radvd, nftables and iproute2, which xenroam runs.
// Removing a package stops what it started and leaves nothing but its conffile; purging takes that too.
// Usage: node scripts/package-deb.mjs agent|host [--out DIR]
import { execFileSync } from "node:child_process";
import { chmodSync, cpSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const repo = join(dirname(fileURLToPath(import.meta.url)), "..");
const target = process.argv[2];
const outArg = process.argv.indexOf("--out");
const out = outArg > 0 ? process.argv[outArg + 1] : join(repo, "dist-packages");
if (!["agent", "host"].includes(target) || (outArg > 0 && !out)) {
  process.stderr.write("usage: node scripts/package-deb.mjs agent|host [--out DIR]\n");
  process.exit(2);
}
if (process.arch !== "x64") {
  process.stderr.write(
    `package-deb: xenroam's packages are built for amd64; this machine is ${process.arch}\n`,
  );
  process.exit(2);
}
const log = (line) => process.stderr.write(`package-deb ${target}: ${line}\n`);
const { version, license } = JSON.parse(readFileSync(join(repo, "package.json"), "utf8"));
const MAINTAINER = "xenroam developers <xenroam@users.noreply.github.com>";
const HOMEPAGE = "https://github.com/xenroam/xenroam";

const bundle = execFileSync(process.execPath, [join(repo, "scripts", "package.mjs"), target, "--out", out], {
  encoding: "utf8",
  stdio: ["ignore", "pipe", "inherit"],
}).trim();

const name = target === "agent" ? "xenroam-agent" : "xenroam";
const tree = join(out, `${name}_${version}_amd64`);
rmSync(tree, { recursive: true, force: true });
const put = (path, text, mode = 0o644) => {
  mkdirSync(dirname(join(tree, path)), { recursive: true });
  writeFileSync(join(tree, path), text);
  chmodSync(join(tree, path), mode);
};

// Maintainer scripts for one systemd unit, as debhelper's dh_installsystemd writes them: enabled through
// deb-systemd-helper (which works without a running systemd, in an image being built), started, stopped and
// reloaded only where systemd runs.
const unitScripts = (unit) => ({
  postinst: `#!/bin/sh
set -e
if [ "$1" = configure ] || [ "$1" = abort-upgrade ] || [ "$1" = abort-deconfigure ] || [ "$1" = abort-remove ]; then
  if command -v deb-systemd-helper >/dev/null 2>&1; then
    deb-systemd-helper unmask '${unit}' >/dev/null || true
    if deb-systemd-helper --quiet was-enabled '${unit}'; then
      deb-systemd-helper enable '${unit}' >/dev/null || true
    else
      deb-systemd-helper update-state '${unit}' >/dev/null || true
      [ -n "$2" ] || deb-systemd-helper enable '${unit}' >/dev/null || true
    fi
  fi
  if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
    deb-systemd-invoke restart '${unit}' >/dev/null || true
  fi
fi
`,
  prerm: `#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
  deb-systemd-invoke stop '${unit}' >/dev/null || true
fi
`,
  postrm: `#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
  systemctl --system daemon-reload >/dev/null || true
fi
if [ "$1" = remove ] && command -v deb-systemd-helper >/dev/null 2>&1; then
  deb-systemd-helper mask '${unit}' >/dev/null || true
fi
if [ "$1" = purge ] && command -v deb-systemd-helper >/dev/null 2>&1; then
  deb-systemd-helper purge '${unit}' >/dev/null || true
  deb-systemd-helper unmask '${unit}' >/dev/null || true
fi
`,
});

let control;
if (target === "agent") {
  cpSync(join(bundle, "bin"), join(tree, "opt/xenroam-agent/bin"), { recursive: true });
  cpSync(join(bundle, "lib"), join(tree, "opt/xenroam-agent/lib"), { recursive: true });
  put("usr/sbin/xenroam-agent", `#!/bin/sh\nexec /opt/xenroam-agent/bin/xenroam-agent "$@"\n`, 0o755);
  put(
    "lib/systemd/system/xenroam-agent.service",
    readFileSync(join(bundle, "xenroam-agent.service"), "utf8"),
  );
  put(
    "etc/default/xenroam-agent",
    `# Options for xenroam-agent (xenroam-agent --help). xl hosts: --channel xl; XAPI pools: --channel xapi.
# With a home address: --hoa ADDR --vm NAME --control URL --token-file /etc/xenroam/vm.token --peer [CN]:7361
# (an https:// URL with a private CA: --control-ca /etc/xenroam/control-ca.pem)
XENROAM_AGENT_OPTS="--channel xl"
`,
  );
  put("DEBIAN/conffiles", "/etc/default/xenroam-agent\n");
  // The network manager leaves the xenroam vif to the agent (xenroam-agent network-setup): on a running
  // system only — in an image being built (a chroot, no systemd running) the vifs are not there to look at,
  // and the admin runs it with --root and --mac. It goes with the package (prerm remove), before the unit.
  const scripts = unitScripts("xenroam-agent.service");
  scripts.postinst = scripts.postinst.replace(
    "#!/bin/sh\nset -e\n",
    `#!/bin/sh
set -e
if [ "$1" = configure ]; then
  if [ -d /run/systemd/system ]; then
    /opt/xenroam-agent/bin/xenroam-agent network-setup ||
      echo "xenroam-agent: the network manager is not set up for xenroam (above); the agent refuses to start until it is" >&2
  else
    echo "xenroam-agent: in an image, run: xenroam-agent network-setup --root DIR --mac MAC (the xenroam vif)"
  fi
fi
`,
  );
  scripts.prerm = scripts.prerm.replace(
    "#!/bin/sh\nset -e\n",
    `#!/bin/sh
set -e
if [ "$1" = remove ]; then
  /opt/xenroam-agent/bin/xenroam-agent network-setup --remove --no-apply >/dev/null || true
fi
`,
  );
  for (const [script, text] of Object.entries(scripts)) put(`DEBIAN/${script}`, text, 0o755);
  control = {
    Package: "xenroam-agent",
    // deb-systemd-helper, which enables the unit (what debhelper's \${misc:Depends} brings for a unit).
    Depends: "libc6 (>= 2.17), init-system-helpers (>= 1.18~)",
    Recommends: "nftables",
    Description: `xenroam guest agent: live migration of Xen VMs across IPv6 subnets
 Runs in a Xen DomU. When Dom0 prepares a migration to another IPv6 subnet, the
 agent brings up the VM's secondary interface and takes its address in the
 destination subnet ahead of time; when the VM has arrived it switches to that
 interface, so a migration across subnets costs no more downtime than one
 inside a subnet. With a home address it keeps it reachable through the
 mobility layer (nftables). Bundles its own JavaScript runtime (Bun).`,
  };
} else {
  cpSync(join(bundle, "bin"), join(tree, "opt/xenroam/bin"), { recursive: true });
  cpSync(join(bundle, "lib"), join(tree, "opt/xenroam/lib"), { recursive: true });
  put(
    "usr/sbin/xenroam",
    `#!/bin/sh\nexec /opt/xenroam/bin/node /opt/xenroam/lib/xenroam/xenroam.mjs "$@"\n`,
    0o755,
  );
  mkdirSync(join(tree, "etc/xenroam"), { recursive: true });
  // What xenroam leaves at run time (staging bridges' radvd files, locks) is under /run/xenroam; a purge
  // takes it, and the directory of sites files the admin made stays unless it is empty.
  put(
    "DEBIAN/postrm",
    `#!/bin/sh
set -e
if [ "$1" = purge ]; then
  rm -rf /run/xenroam
  rmdir /etc/xenroam 2>/dev/null || true
fi
`,
    0o755,
  );
  control = {
    Package: "xenroam",
    Depends: "libc6 (>= 2.28), libstdc++6, libgcc-s1, radvd, nftables, iproute2",
    Recommends: "xen-utils-common",
    Description: `xenroam for Dom0: live migration of Xen VMs across IPv6 subnets
 The Dom0 side of xenroam for xl hosts: before a migration to another IPv6
 subnet it gives a staging bridge the destination gateway's link-local address
 and MAC and runs radvd on it with the destination prefix, so that the VM's
 guest agent takes its destination address in advance; it then migrates with
 the VM's two vifs swapped, for no more downtime than a migration inside one
 subnet. Bundles its own JavaScript runtime (Node.js). Check a host with
 'xenroam doctor'.`,
  };
}

const size = Number(
  execFileSync("du", ["-sk", "--exclude=DEBIAN", tree], { encoding: "utf8" }).split("\t")[0],
);
const fields = {
  Package: control.Package,
  Version: version,
  Architecture: "amd64",
  Maintainer: MAINTAINER,
  "Installed-Size": String(size),
  Depends: control.Depends,
  Recommends: control.Recommends,
  Section: "net",
  Priority: "optional",
  Homepage: HOMEPAGE,
  Description: control.Description,
};
put(
  "DEBIAN/control",
  `${Object.entries(fields)
    .map(([k, v]) => `${k}: ${v}`)
    .join("\n")}\n`,
);
put(
  `usr/share/doc/${name}/copyright`,
  `Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: xenroam\nSource: ${HOMEPAGE}\n\nFiles: *\nCopyright: xenroam developers\nLicense: ${license}\n`,
);
const deb = join(out, `${name}_${version}_amd64.deb`);
execFileSync("dpkg-deb", ["--root-owner-group", "-Zgzip", "--build", tree, deb], {
  stdio: ["ignore", "ignore", "inherit"],
});
rmSync(tree, { recursive: true, force: true });
log(`wrote ${deb}`);
process.stdout.write(`${deb}\n`);

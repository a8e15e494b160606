// Root-only: xenroam's Debian packages (scripts/package-deb.mjs) in a bare Debian 12 root made by debootstrap
// (minbase: what every Debian system has, nothing more), as an admin would use them, with `apt install ./…deb`:
// the agent's package enables its unit, runs, and after a purge nothing of it is left; the host's brings
// radvd, nftables and iproute2, runs, and purges to nothing. Needs debootstrap and
// Debian's archive (the machine's own apt mirror), like the real-Xen rig: root tests run in a network namespace
// of their own (scripts/test-root.sh), so the downloads alone go through the machine's, which test-root.sh
// names in XENROAM_TEST_ONLINE_NETNS.
import { execFileSync, spawn } from "node:child_process";
import {
  existsSync,
  lstatSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { basename, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import test from "ava";

const REPO = fileURLToPath(new URL("../../..", import.meta.url));
const work = mkdtempSync(join(tmpdir(), "xr-deb-"));
const root = join(work, "root");
const debs: Record<"agent" | "host", string> = { agent: "", host: "" };
const env = { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", LANG: "C.UTF-8", DEBIAN_FRONTEND: "noninteractive" };
const inRoot = (...argv: string[]) =>
  execFileSync("chroot", [root, ...argv], { encoding: "utf8", env, stdio: ["ignore", "pipe", "pipe"] });
/** A command that downloads from Debian's archive, in the machine's network namespace. */
const online = (...argv: string[]) =>
  execFileSync("nsenter", [`--net=${onlineNetns()}`, ...argv], {
    encoding: "utf8",
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });

/** `apt install ./x.deb` in the root, dependencies from Debian's archive. */
const aptInstall = (deb: string) =>
  online(
    "chroot",
    root,
    "apt-get",
    "install",
    "-y",
    "-qq",
    "--no-install-recommends",
    `/tmp/${basename(deb)}`,
  );

function onlineNetns(): string {
  const ns = process.env.XENROAM_TEST_ONLINE_NETNS;
  if (!ns) throw new Error("XENROAM_TEST_ONLINE_NETNS is not set: run root tests with scripts/test-root.sh");
  return ns;
}

/** The archive this machine's apt uses (deb822 or one-line sources), else Debian's own. */
function mirror(): string {
  for (const f of ["/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list"]) {
    if (!existsSync(f)) continue;
    const m =
      /^URIs:\s*(\S+\/debian)\/?\s*$/m.exec(readFileSync(f, "utf8")) ??
      /^deb\s+(?:\[[^\]]*\]\s+)?(\S+\/debian)\/?\s+bookworm/m.exec(readFileSync(f, "utf8"));
    if (m?.[1]) return m[1];
  }
  return "http://deb.debian.org/debian";
}

/** Every path under the root, but dpkg's, apt's and debconf's own records and logs. */
function listing(): Set<string> {
  const skip = [/^var\/lib\/dpkg\//, /^var\/log\//, /^var\/cache\//, /^var\/lib\/apt\//, /^proc\//, /^tmp\//];
  const out = new Set<string>();
  const walk = (dir: string) => {
    for (const e of readdirSync(dir)) {
      const p = join(dir, e);
      const rel = relative(root, p);
      if (skip.some((r) => r.test(`${rel}/`))) continue;
      out.add(rel);
      if (lstatSync(p).isDirectory()) walk(p);
    }
  };
  walk(root);
  return out;
}
const diff = (a: Set<string>, b: Set<string>) => [...b].filter((p) => !a.has(p)).sort();

test.before(() => {
  for (const target of ["agent", "host"] as const)
    debs[target] = execFileSync(
      process.execPath,
      [join(REPO, "scripts", "package-deb.mjs"), target, "--out", join(work, "out")],
      { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] },
    ).trim();
  if (!existsSync("/usr/sbin/debootstrap"))
    online("apt-get", "install", "-y", "-qq", "--no-install-recommends", "debootstrap");
  online("debootstrap", "--variant=minbase", "bookworm", root, mirror());
  execFileSync("mount", ["-t", "proc", "proc", join(root, "proc")]);
  execFileSync("cp", ["/etc/resolv.conf", join(root, "etc/resolv.conf")]);
  for (const d of Object.values(debs)) execFileSync("cp", [d, join(root, "tmp")]);
  // No daemon a package installs starts here (apt runs in the machine's network namespace): policy-rc.d(8).
  writeFileSync(join(root, "usr/sbin/policy-rc.d"), "#!/bin/sh\nexit 101\n", { mode: 0o755 });
  online("chroot", root, "apt-get", "update", "-qq");
});

test.after.always(() => {
  if (existsSync(join(root, "proc/self"))) execFileSync("umount", ["-l", join(root, "proc")]);
  rmSync(work, { recursive: true, force: true });
});

test.serial("the packages say what they are and what they need", (t) => {
  const agent = execFileSync("dpkg-deb", ["-f", debs.agent], { encoding: "utf8" });
  t.regex(agent, /^Package: xenroam-agent$/m);
  t.regex(agent, /^Architecture: amd64$/m);
  t.regex(
    agent,
    /^Depends: libc6 \(>= 2\.17\), init-system-helpers \(>= 1\.18~\)$/m,
    "the agent needs the C library and deb-systemd-helper, nothing more",
  );
  const host = execFileSync("dpkg-deb", ["-f", debs.host], { encoding: "utf8" });
  t.regex(host, /^Package: xenroam$/m);
  t.regex(host, /^Depends: .*\bradvd\b/m);
  t.regex(host, /^Depends: .*\bnftables\b/m);
  const files = execFileSync("dpkg-deb", ["-c", debs.agent], { encoding: "utf8" });
  for (const f of [
    "./opt/xenroam-agent/bin/bun",
    "./opt/xenroam-agent/bin/xenroam-agent",
    "./opt/xenroam-agent/lib/agent/agent.mjs",
    "./lib/systemd/system/xenroam-agent.service",
    "./etc/default/xenroam-agent",
    "./usr/sbin/xenroam-agent",
  ])
    t.true(files.includes(f), f);
  t.regex(files, /^-\S+ root\/root /m, "files owned by root");
});

test.serial(
  "xenroam-agent: apt installs it into a bare Debian root and enables its unit, it runs there, and a purge leaves nothing",
  async (t) => {
    const before = listing();
    aptInstall(debs.agent);
    t.true(existsSync(join(root, "opt/xenroam-agent/bin/bun")));
    // A link that points into the root (absolute, as systemd makes it): read, not followed from here.
    const wants = join(root, "etc/systemd/system/multi-user.target.wants/xenroam-agent.service");
    t.is(
      existsSync(join(root, "etc/systemd/system/multi-user.target.wants")) ? readlinkSync(wants) : undefined,
      "/lib/systemd/system/xenroam-agent.service",
      "the unit is enabled for the image's next boot",
    );
    t.regex(inRoot("/usr/sbin/xenroam-agent", "--help"), /The xenroam guest agent/);

    // As a daemon, in a network namespace of its own: no xenstore in a chroot, so it waits for one.
    const agent = spawn("unshare", ["--net", "chroot", root, "/usr/sbin/xenroam-agent", "--channel", "xl"], {
      stdio: ["ignore", "pipe", "pipe"],
      env,
    });
    const closed = new Promise<number | null>((r) => agent.on("close", (c) => r(c)));
    let out = "";
    agent.stdout.on("data", (c) => (out += String(c)));
    agent.stderr.on("data", (c) => (out += String(c)));
    for (let i = 0; i < 100 && !out.includes("xenstore_unavailable"); i++)
      await new Promise((r) => setTimeout(r, 50));
    agent.kill("SIGTERM");
    t.is(await closed, 0, out);
    t.regex(out, /"event":"stopped"/);

    inRoot("apt-get", "purge", "-y", "-qq", "--autoremove", "xenroam-agent");
    t.deepEqual(diff(before, listing()), [], "nothing of the package is left after a purge");
  },
);

test.serial(
  "xenroam: apt installs it with radvd and nftables, it runs, and a purge leaves nothing of it",
  (t) => {
    const before = listing();
    aptInstall(debs.host);
    t.truthy(inRoot("dpkg-query", "-W", "radvd", "nftables", "iproute2"), "its dependencies came with it");
    t.regex(inRoot("/usr/sbin/xenroam", "--help"), /Usage: xenroam/);
    inRoot("apt-get", "purge", "-y", "-qq", "--autoremove", "xenroam");
    const left = diff(before, listing());
    t.deepEqual(
      left.filter((p) => /xenroam/.test(p)),
      [],
      `nothing of xenroam is left after a purge (left, from its dependencies: ${left.join(", ") || "nothing"})`,
    );
  },
);

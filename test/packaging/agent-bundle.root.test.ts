// Root-only: the guest agent's DomU bundle, installed by its own install.sh into an empty image root that
// has only what a bare Debian 12 system has for it (the C runtime libraries its runtime links, /bin/sh), starts
// there: --help, then as a daemon (rtnetlink opens through bun:ffi, it looks for xenstore, SIGTERM ends it
// cleanly), its resident memory below a guard.
import { execFileSync, spawn } from "node:child_process";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  realpathSync,
  rmSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import test from "ava";

const REPO = fileURLToPath(new URL("../../..", import.meta.url));

/** What the dynamic loader needs for `file`, as ldd lists it. */
function libsOf(file: string): string[] {
  return execFileSync("ldd", [file], { encoding: "utf8" })
    .split("\n")
    .flatMap((l) => {
      const m = /(\/\S+) \(0x/.exec(l) ?? /=> (\/\S+)/.exec(l);
      return m?.[1] ? [m[1]] : [];
    });
}

function copyInto(root: string, file: string): void {
  const target = join(root, file);
  mkdirSync(dirname(target), { recursive: true });
  copyFileSync(realpathSync(file), target);
}

test("the bundle installs into a bare image root and runs there with nothing else", async (t) => {
  const work = mkdtempSync(join(tmpdir(), "xr-bundle-"));
  t.teardown(() => rmSync(work, { recursive: true, force: true }));
  const bundle = execFileSync(
    process.execPath,
    [join(REPO, "scripts", "package.mjs"), "agent", "--out", join(work, "out")],
    {
      encoding: "utf8",
    },
  ).trim();
  t.true(existsSync(`${bundle}.tar.gz`));

  // The "bare Debian 12" root: the libraries the bundle's runtime and sh link against, and /bin/sh. Nothing of
  // npm, no libstdc++ (Bun's baseline build links only the C library).
  const runtime = join(bundle, "bin", "bun");
  t.true(existsSync(runtime), "the agent runs on Bun");
  t.false(
    libsOf(runtime).some((l) => l.includes("libstdc++")),
    "Bun's baseline build needs no C++ runtime",
  );
  const root = join(work, "root");
  for (const f of new Set([...libsOf(runtime), ...libsOf("/bin/sh")])) copyInto(root, f);
  mkdirSync(join(root, "bin"), { recursive: true });
  copyFileSync(realpathSync("/bin/sh"), join(root, "bin", "sh"));
  const installed = execFileSync("sh", [join(bundle, "install.sh"), "--root", root], { encoding: "utf8" });
  t.true(existsSync(join(root, "etc/systemd/system/xenroam-agent.service")));
  t.regex(installed, /not run: xenroam-agent network-setup --root .* --mac MAC/, "says what is left to do");
  t.regex(readFileSync(join(root, "etc/default/xenroam-agent"), "utf8"), /XENROAM_AGENT_OPTS="--channel xl"/);
  execFileSync("sh", [join(bundle, "install.sh"), "--root", root]); // idempotent
  // /proc, as every running system has it (Bun reads /proc/self at start; Node.js did not need it).
  mkdirSync(join(root, "proc"), { recursive: true });
  execFileSync("mount", ["-t", "proc", "proc", join(root, "proc")]);
  t.teardown(() => execFileSync("umount", ["-l", join(root, "proc")]));

  // systemd's environment, not this machine's (which may point the runtime at files the image lacks).
  const env = { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", LANG: "C.UTF-8" };
  const help = execFileSync("chroot", [root, "/opt/xenroam-agent/bin/xenroam-agent", "--help"], {
    encoding: "utf8",
    env,
  });
  t.regex(help, /The xenroam guest agent/);

  // As a daemon, in a network namespace of its own: no xenstore in this "image", so it waits for one.
  const agent = spawn(
    "unshare",
    ["--net", "chroot", root, "/opt/xenroam-agent/bin/xenroam-agent", "--xenstore", "/dev/xen/xenbus"],
    { stdio: ["ignore", "pipe", "pipe"], env },
  );
  let out = "";
  let err = "";
  agent.stdout.on("data", (c) => (out += String(c)));
  agent.stderr.on("data", (c) => (err += String(c)));
  for (let i = 0; i < 100 && !out.includes("xenstore_unavailable"); i++)
    await new Promise((r) => setTimeout(r, 50));
  const closed = new Promise<number | null>((r) => agent.on("close", (c) => r(c)));
  agent.kill("SIGTERM");
  t.is(await closed, 0, `${out}${err}`);
  t.is(err, "", "nothing on stderr: no warning, no missing file");
  const lines = out
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as { event: string; rssMb?: number; maxRssMb?: number });
  const events = lines.map((l) => l.event);
  t.deepEqual(events.slice(0, 2), ["started", "xenstore_unavailable"]);
  t.deepEqual(events.slice(-2), ["stopping", "stopped"]);
  // Its memory, as the agent reports it (the figures test:xen prints from the real-Xen guest): a guard against
  // regressions, not issue 11's target (40 MB, not met yet). Here, idle and without xenstore, the Bun agent
  // held 44.9 MB at most on 2026-12-04, the Node.js one 52.
  const stopping = lines.find((l) => l.event === "stopping");
  t.true(
    typeof stopping?.maxRssMb === "number" && stopping.maxRssMb <= 48,
    `at most ${stopping?.maxRssMb} MB (the guard is 48)`,
  );

  // With the image's network manager (systemd-networkd enabled, netplan's way of matching every link):
  // --mac writes networkd's drop-ins; --uninstall takes them and everything else install.sh put there.
  mkdirSync(join(root, "etc/systemd/system/multi-user.target.wants"), { recursive: true });
  execFileSync("ln", [
    "-s",
    "/lib/systemd/system/systemd-networkd.service",
    join(root, "etc/systemd/system/multi-user.target.wants/systemd-networkd.service"),
  ]);
  const mac = "00:16:3e:00:01:10";
  execFileSync("sh", [join(bundle, "install.sh"), "--root", root, "--mac", mac]);
  t.regex(
    readFileSync(join(root, "etc/systemd/network/05-xenroam-agent.network"), "utf8"),
    /MACAddress=00:16:3e:00:01:10/,
  );
  t.true(existsSync(join(root, "etc/systemd/networkd.conf.d/50-xenroam-agent.conf")));
  execFileSync("sh", [join(bundle, "install.sh"), "--root", root, "--uninstall"]);
  for (const gone of [
    "opt/xenroam-agent",
    "etc/systemd/system/xenroam-agent.service",
    "etc/default/xenroam-agent",
    "etc/systemd/network/05-xenroam-agent.network",
    "etc/systemd/networkd.conf.d",
  ])
    t.false(existsSync(join(root, gone)), `${gone} is gone`);
});

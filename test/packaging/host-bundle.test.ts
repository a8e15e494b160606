// The Dom0 bundle (npm run package:host) runs on its own: xenroam from one JavaScript file with its own
// Node.js, no node_modules anywhere near it; install-xapi points the hooks at the bundled hook and plugin.
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import test from "ava";

const REPO = fileURLToPath(new URL("../../..", import.meta.url));

test("the host bundle runs xenroam, doctor and install-xapi from its own files", (t) => {
  const work = mkdtempSync(join(tmpdir(), "xr-hostpkg-"));
  t.teardown(() => rmSync(work, { recursive: true, force: true }));
  const bundle = execFileSync(
    process.execPath,
    [join(REPO, "scripts", "package.mjs"), "host", "--out", work],
    {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"],
    },
  ).trim();
  const root = join(work, "root");
  mkdirSync(root);
  execFileSync("sh", [join(bundle, "install.sh"), "--root", root]);
  // Run from the installed copy, in a directory with no node_modules above it.
  const node = join(root, "opt/xenroam/bin/node");
  const xenroam = (...args: string[]) =>
    execFileSync(node, [join(root, "opt/xenroam/lib/xenroam/xenroam.mjs"), ...args], {
      cwd: "/",
      encoding: "utf8",
      env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" },
    });
  t.regex(xenroam("--help"), /Live-migrate Xen VMs across IPv6 subnets/);
  let doctor: { checks: Array<{ name: string }> } | undefined;
  try {
    doctor = JSON.parse(xenroam("doctor", "--json")) as typeof doctor;
  } catch (err) {
    doctor = JSON.parse(String((err as { stdout: string }).stdout)) as typeof doctor;
  }
  t.true(doctor?.checks.some((c) => c.name === "xenstore"));
  xenroam("install-xapi", "--root", root);
  const post = readFileSync(join(root, "etc/xapi.d/vm-post-migrate/10-xenroam"), "utf8");
  t.true(post.includes(join(root, "opt/xenroam/lib/xapi-hook/xapi-hook.mjs")), post);
  const plugin = readFileSync(join(root, "etc/xapi.d/plugins/xenroam"), "utf8");
  t.true(plugin.includes(join(root, "opt/xenroam/lib/xapi-plugin/xapi-plugin.mjs")), plugin);
});

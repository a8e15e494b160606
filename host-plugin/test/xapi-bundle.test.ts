// The XAPI Dom0 bundle (node scripts/package.mjs host-xapi) as an XCP-ng 8.x / XenServer 8 host gets it:
// every ELF file in it needs nothing above glibc 2.17 and GLIBCXX_3.4.19 (CentOS 7), no native addon rides
// along, and its three entry points run from the installed copy under the bundled Bun, with no node_modules
// near: xenroam (--help, doctor, install-xapi), the migration hook as XAPI runs it, and the host plugin as
// XAPI calls it — that one through the real xen-api client to a XAPI and a xenstored.
import { execFile, execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import test from "ava";
import { XenstoreServer } from "@xenroam/xenstore";
import { beyondLimits, isElf, versionNeeds } from "../src/elf.js";
import { FakeXapi, poolA } from "./support/fake-xapi.js";

const REPO = fileURLToPath(new URL("../../..", import.meta.url));
const FAKE_XE = fileURLToPath(new URL("../../test/fixtures/fake-xe.mjs", import.meta.url));

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? filesUnder(join(dir, e.name)) : e.isFile() ? [join(dir, e.name)] : [],
  );
}

const run = (file: string, args: string[], env: NodeJS.ProcessEnv) =>
  new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(file, args, { cwd: "/", env, encoding: "utf8" }, (err, stdout, stderr) =>
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });

test("the XAPI bundle fits glibc 2.17 and runs xenroam, its hook and its plugin under the bundled Bun", async (t) => {
  t.timeout(240_000);
  const work = mkdtempSync(join(tmpdir(), "xr-xapipkg-"));
  const xapi = await new FakeXapi(poolA()).start();
  const xs = new XenstoreServer();
  t.teardown(async () => {
    await xapi.stop();
    await xs.close();
    rmSync(work, { recursive: true, force: true });
  });
  const bundle = execFileSync(
    process.execPath,
    [join(REPO, "scripts", "package.mjs"), "host-xapi", "--out", work],
    { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] },
  ).trim();

  // What a CentOS 7 Dom0 can load: every ELF file of the bundle, whatever its name.
  const elves = filesUnder(bundle).filter((f) => statSync(f).size > 4 && isElf(readFileSync(f)));
  t.deepEqual(
    elves.map((f) => f.slice(bundle.length + 1)),
    ["bin/bun"],
    "the runtime is the only binary: no native addon rides along",
  );
  for (const f of elves) t.deepEqual(beyondLimits(versionNeeds(readFileSync(f))), [], f);
  t.regex(readFileSync(join(bundle, "VERSION"), "utf8"), /Bun \d+\.\d+\.\d+ \(baseline\)/);

  const root = join(work, "root");
  mkdirSync(root);
  execFileSync("sh", [join(bundle, "install.sh"), "--root", root]);
  const bun = join(root, "opt/xenroam/bin/bun");
  t.deepEqual(readdirSync(join(root, "opt/xenroam/bin")), ["bun"]);
  const env = { PATH: `${process.env.PATH}` };
  const xenroam = (...args: string[]) =>
    run(bun, [join(root, "opt/xenroam/lib/xenroam/xenroam.mjs"), ...args], env);

  const help = await xenroam("--help");
  t.is(help.code, 0, help.stderr);
  t.regex(help.stdout, /Live-migrate Xen VMs across IPv6 subnets/);
  const doctor = await xenroam("doctor", "--json");
  t.true(
    (JSON.parse(doctor.stdout) as { checks: Array<{ name: string }> }).checks.some(
      (c) => c.name === "xenstore",
    ),
    doctor.stderr,
  );
  t.is((await xenroam("install-xapi", "--root", root)).code, 0);
  const post = join(root, "etc/xapi.d/vm-post-migrate/10-xenroam");
  t.true(readFileSync(post, "utf8").includes(bun), "the hooks run the bundled Bun");

  const xe = join(work, "xe");
  writeFileSync(xe, `#!/bin/sh\nexec '${process.execPath}' '${FAKE_XE}' "$@"\n`, { mode: 0o755 });
  // The hook as XAPI runs it (a migration xenroam did not set up): 0, with its JSON log on stderr.
  const hook = await run(
    post,
    ["-vmuuid", "5e1d4f4e-0000-4000-8000-000000000001", "-reason", "destination"],
    {
      ...env,
      XENROAM_XE: xe,
    },
  );
  t.is(hook.code, 0, hook.stderr);

  // The host plugin as XAPI calls it, with the caller's session: xenroam status through XAPI and xenstore.
  const sock = join(work, "xenstored.sock");
  await xs.listen(sock);
  const sites = join(work, "sites.json");
  writeFileSync(
    sites,
    JSON.stringify({
      sites: [
        {
          name: "a",
          prefix: "2001:db8:a::/64",
          gateway: { linkLocal: "fe80::a:1", mac: "02:00:00:00:0a:01" },
        },
      ],
      hosts: [{ name: "hosta", site: "a" }],
    }),
  );
  const call = `<?xml version="1.0"?><methodCall><methodName>status</methodName><params><param><value><string>OpaqueRef:session</string></value></param><param><value><struct><member><name>vm</name><value><string>web1</string></value></member></struct></value></param></params></methodCall>`;
  const plugin = await run(join(root, "etc/xapi.d/plugins/xenroam"), [call], {
    ...env,
    XENROAM_XAPI_URL: xapi.url,
    XENROAM_XENSTORE: sock,
    XENROAM_STATE_DIR: join(work, "state"),
    XENROAM_SITES: sites,
  });
  t.is(plugin.code, 0, plugin.stderr);
  t.regex(plugin.stdout, /<name>Status<\/name><value>Success<\/value>/, plugin.stdout);

  // Under Bun as under Node.js, an https:// XAPI is checked before the login: unpinned, it is sent nothing;
  // pinned (openssl's fingerprint as the admin reads it), the login goes through.
  const key = join(work, "xapi.key");
  const cert = join(work, "xapi.pem");
  execFileSync(
    "openssl",
    [
      ...["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"],
      ...["-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=hosta"],
      ...["-addext", "subjectAltName=IP:127.0.0.1"],
    ],
    { stdio: "ignore" },
  );
  const fingerprint = execFileSync("openssl", ["x509", "-noout", "-fingerprint", "-sha256", "-in", cert], {
    encoding: "utf8",
  }).trim();
  const secure = await new FakeXapi(poolA()).start({
    tls: { key: readFileSync(key, "utf8"), cert: readFileSync(cert, "utf8") },
  });
  t.teardown(() => secure.stop());
  const password = join(work, "xapi.password");
  writeFileSync(password, "secret\n", { mode: 0o600 });
  const parking = (...trust: string[]) =>
    xenroam(
      "--toolstack",
      "xapi",
      "--xapi-url",
      secure.url,
      "--xapi-password-file",
      password,
      ...trust,
      "xapi-parking",
    );
  const refused = await parking();
  t.is(refused.code, 1);
  t.regex(refused.stderr, /certificate is not trusted .* xenroam sent it nothing, no password/);
  t.deepEqual(secure.bodies, [], "the unchecked XAPI got no login");
  const pinned = await parking("--xapi-fingerprint", fingerprint.replace(/^.*=/, ""));
  t.is(pinned.code, 0, pinned.stderr);
  t.regex(pinned.stdout, /the parking network/);
});

import { chmodSync, mkdirSync, mkdtempSync, realpathSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "ava";
import { binaryPath, resolveBinary } from "@xenroam/process";
import { checks, commandFacts, gatherFacts, type HostFacts } from "../src/doctor.js";

const ready: HostFacts = {
  nodeVersion: "v20.19.1",
  uid: 0,
  os: { distro: "Debian GNU/Linux", release: "12", kernel: "6.1.0-xen" },
  interfaces: ["lo", "eth0", "xenbr0", "xrpark0"],
  commands: {
    xl: { path: "/usr/sbin/xl", via: "system" },
    radvd: { path: "/usr/sbin/radvd", via: "system", version: "Version: 2.19" },
    nft: { path: "/usr/sbin/nft", via: "system", version: "nftables v1.0.6 (Lester Gooch #5)" },
    ip: { path: "/usr/sbin/ip", via: "system" },
  },
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
    commands: { ip: { path: "/usr/sbin/ip", via: "system" } },
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

test("doctor names the path and version of each program, and what it passed over", (t) => {
  const byName = Object.fromEntries(checks(ready, opts).map((c) => [c.name, c]));
  t.is(byName.nft?.detail, "nft at /usr/sbin/nft (nftables v1.0.6 (Lester Gooch #5))");
  t.is(byName.radvd?.detail, "radvd at /usr/sbin/radvd (Version: 2.19)");
  const npm = checks(
    {
      ...ready,
      commands: {
        ...ready.commands,
        nft: {
          envVar: "XENROAM_NFT",
          skipped: [
            {
              path: "/usr/local/bin/nft",
              why: "a JavaScript program (#!/usr/bin/env node), not the system's",
            },
          ],
        },
        radvd: { path: "/opt/radvd", via: "env", envVar: "XENROAM_RADVD", problem: "does not exist" },
      },
    },
    opts,
  );
  const nft = npm.find((c) => c.name === "nft");
  t.false(nft?.ok);
  t.regex(
    nft?.detail ?? "",
    /nft not found in \/usr\/sbin, .*skipped \/usr\/local\/bin\/nft \(a JavaScript program/,
  );
  t.regex(nft?.fix ?? "", /apt-get install nftables, or give its path in XENROAM_NFT/);
  const radvd = npm.find((c) => c.name === "radvd");
  t.false(radvd?.ok, "a path the admin named that does not exist is a failure, not a pass");
  t.regex(radvd?.detail ?? "", /radvd at \/opt\/radvd \(from XENROAM_RADVD: does not exist\)/);
});

test("XAPI hosts: the xapi socket is checked when xenroam would use it, with how to use https instead", (t) => {
  const xapi = { ...opts, toolstack: "xapi" as const };
  const facts = {
    ...ready,
    commands: { ...ready.commands, xe: { path: "/usr/bin/xe", via: "system" as const } },
  };
  const missing = checks(facts, xapi).find((c) => c.name === "xapi socket");
  t.false(missing?.ok);
  t.regex(missing?.fix ?? "", /--xapi-url https:\/\/MASTER with --xapi-ca FILE or --xapi-fingerprint/);
  t.true(
    checks({ ...facts, paths: { ...facts.paths, "/var/lib/xcp/xapi": true } }, xapi).find(
      (c) => c.name === "xapi socket",
    )?.ok,
  );
  t.false(
    checks(facts, { ...xapi, xapiUrl: "https://pool-a" }).some((c) => c.name === "xapi socket"),
    "with an https:// XAPI the socket is not needed",
  );
});

// With the README's `export PATH="$PWD/node_modules/.bin:$PATH"`, `nft` on PATH is @vercel/nft's script: doctor
// and the runner both take the system's nft, and doctor says which one and its version. (The nft adapter
// itself: packages/mobility/test/nft.test.ts.)
test.serial("doctor and the runner resolve the system's nft, not an npm `nft` first on PATH", async (t) => {
  const system = resolveBinary("nft", { env: {} }).path;
  if (system === undefined) {
    t.pass("no nftables on this machine");
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), "xr-doctor-"));
  const bin = join(dir, "node_modules", ".bin");
  mkdirSync(bin, { recursive: true });
  writeFileSync(join(bin, "nft"), "#!/usr/bin/env node\nconsole.log('@vercel/nft')\n");
  chmodSync(join(bin, "nft"), 0o755);
  const saved = { PATH: process.env.PATH, nft: process.env.XENROAM_NFT };
  process.env.PATH = `${bin}:${process.env.PATH ?? ""}`;
  delete process.env.XENROAM_NFT;
  t.teardown(() => {
    process.env.PATH = saved.PATH;
    if (saved.nft !== undefined) process.env.XENROAM_NFT = saved.nft;
    rmSync(dir, { recursive: true, force: true });
  });
  // What every adapter runs (packages/mobility's nft, radvd, ip, xl, xe: binaryPath).
  t.is(binaryPath("nft"), system, "the runner");
  t.is(realpathSync(system), realpathSync("/usr/sbin/nft"));
  const facts = await gatherFacts();
  t.is(facts.commands.nft?.path, system, "doctor");
  t.regex(facts.commands.nft?.version ?? "", /^nftables v\d/);
  t.regex(
    checks(facts, opts).find((c) => c.name === "nft")?.detail ?? "",
    /^nft at \/usr\/sbin\/nft \(nftables v/,
  );
});

test("an npm tool linked into a system directory is passed over, with the reason", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "xr-doctor-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const pkg = join(dir, "lib", "node_modules", "@vercel", "nft");
  mkdirSync(pkg, { recursive: true });
  writeFileSync(join(pkg, "cli.js"), "#!/usr/bin/env node\n");
  chmodSync(join(pkg, "cli.js"), 0o755);
  const usrBin = join(dir, "usr-local-bin");
  mkdirSync(usrBin);
  symlinkSync(join(pkg, "cli.js"), join(usrBin, "nft"));
  const facts = await commandFacts(["nft"], (name) => resolveBinary(name, { env: {}, dirs: [usrBin] }));
  t.is(facts.nft?.path, undefined);
  t.deepEqual(
    facts.nft?.skipped?.map((s) => s.path),
    [join(usrBin, "nft")],
  );
  t.regex(facts.nft?.skipped?.[0]?.why ?? "", /node_modules/);
});

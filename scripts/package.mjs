#!/usr/bin/env node
// Builds xenroam's self-contained bundles into dist-packages/ (and a .tar.gz of each):
//   agent  xenroam-agent-<version>-linux-<arch>: the guest agent for DomU images (install.sh, systemd unit),
//          bundled by Bun and run by Bun's baseline build: it runs in every DomU, and Bun's resident set is
//          ~24 MB where Node.js's is ~39 MB before any code (issue 11: the agent within 40 MB). Its rtnetlink is
//          the netlink package's socket over libc through bun:ffi (packages/netlink/src/bun-native.ts)
//   host   xenroam-host-<version>-linux-<arch>:  the Dom0 side — xenroam, its XAPI hook and host plugin
//   host-xapi  xenroam-host-xapi-<version>-linux-x64: the same three for XAPI hosts (XCP-ng 8.x, XenServer 8),
//          whose CentOS 7 Dom0 has glibc 2.17 and libstdc++ up to GLIBCXX_3.4.19: bundled by Bun and run by
//          Bun's baseline build (npm @oven/bun-linux-x64-baseline: it links nothing above GLIBC_2.17 and no
//          libstdc++), with no native addon (the XAPI path needs no rtnetlink: adapters/dom0-net.ts)
// Bun needs an x86-64 CPU with SSE4.2 and POPCNT (its baseline build targets Nehalem, 2008).
// Node bundles: each entry point is one JavaScript file made by @vercel/ncc (native modules beside it), next
// to this machine's Node.js runtime, so a host or image needs nothing else.
// Usage: node scripts/package.mjs agent|host|host-xapi [--out DIR]
import { execFileSync } from "node:child_process";
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const repo = join(dirname(fileURLToPath(import.meta.url)), "..");
const target = process.argv[2];
const TARGETS = {
  agent: {
    pkg: "guest-agent",
    runtime: "bun",
    rtnetlink: "ffi",
    entries: { agent: "guest-agent/dist/src/main.js" },
    files: {
      "packaging/guest-agent/install.sh": "install.sh",
      "packaging/guest-agent/xenroam-agent.service": "xenroam-agent.service",
      "packaging/guest-agent/xenroam-agent": "bin/xenroam-agent",
    },
  },
  host: {
    pkg: "host-plugin",
    entries: {
      xenroam: "host-plugin/dist/src/main.js",
      "xapi-hook": "host-plugin/dist/src/xapi-hook-main.js",
      "xapi-plugin": "host-plugin/dist/src/xapi-plugin-main.js",
    },
    files: { "packaging/host-plugin/install.sh": "install.sh" },
  },
  "host-xapi": {
    pkg: "host-plugin",
    runtime: "bun",
    rtnetlink: "none",
    entries: {
      xenroam: "host-plugin/dist/src/main.js",
      "xapi-hook": "host-plugin/dist/src/xapi-hook-main.js",
      "xapi-plugin": "host-plugin/dist/src/xapi-plugin-main.js",
    },
    files: { "packaging/host-plugin/install.sh": "install.sh" },
  },
};
const BUN = join(repo, "node_modules", "@oven", "bun-linux-x64-baseline", "bin", "bun");
const usage = () => {
  process.stderr.write(
    `usage: node scripts/package.mjs ${Object.keys(TARGETS).join("|")} [--out DIR] [--runtime node]\n` +
      "  --runtime node  (agent only) the agent on Node.js with the netlink addon, as before 2026-12-04: for a CPU\n" +
      "                  without SSE4.2, which Bun's baseline build needs; it holds ~25 MB more\n",
  );
  process.exit(2);
};
const base = TARGETS[target];
const runtimeArg = process.argv.indexOf("--runtime");
const runtimeOpt = runtimeArg > 0 ? process.argv[runtimeArg + 1] : undefined;
if (!base || (runtimeArg > 0 && !(target === "agent" && runtimeOpt === "node"))) usage();
// The Node.js agent: ncc bundles it with the addon; the same launcher finds bin/node.
const spec = runtimeOpt === "node" ? { ...base, runtime: undefined, rtnetlink: undefined } : base;
const outArg = process.argv.indexOf("--out");
const out = outArg > 0 ? process.argv[outArg + 1] : join(repo, "dist-packages");
const { version } = JSON.parse(readFileSync(join(repo, spec.pkg, "package.json"), "utf8"));
const name = `xenroam-${target}-${version}-linux-${process.arch}`;
const dir = join(out, name);
const log = (line) => process.stderr.write(`package ${target}: ${line}\n`);

rmSync(dir, { recursive: true, force: true });
mkdirSync(join(dir, "bin"), { recursive: true });
const ncc = join(repo, "node_modules", "@vercel", "ncc", "dist", "ncc", "cli.js");
let runtime = `Node.js ${process.version}`;
if (spec.runtime === "bun") {
  if (!existsSync(BUN)) {
    process.stderr.write(`package ${target}: no ${BUN}; run npm ci (it is a devDependency)\n`);
    process.exit(1);
  }
  const bunVersion = execFileSync(BUN, ["--version"], { encoding: "utf8" }).trim();
  runtime = `Bun ${bunVersion} (baseline)`;
  for (const [entry, source] of Object.entries(spec.entries)) {
    log(`bundling ${source} with Bun ${bunVersion} into lib/${entry}/`);
    // The same layout as the Node bundle (lib/<entry>/<entry>.mjs), which install-xapi finds its siblings by.
    // The netlink addon never goes in (scripts/bun-bundle.mjs): Bun cannot run it, nor a XAPI Dom0 load it.
    execFileSync(
      BUN,
      [
        join(repo, "scripts", "bun-bundle.mjs"),
        join(repo, source),
        join(dir, "lib", entry, `${entry}.mjs`),
        "--rtnetlink",
        spec.rtnetlink,
      ],
      { stdio: ["ignore", "ignore", "inherit"] },
    );
  }
  log(`adding the Bun runtime ${bunVersion} (${BUN})`);
  copyFileSync(BUN, join(dir, "bin", "bun"));
  chmodSync(join(dir, "bin", "bun"), 0o755);
} else {
  for (const [entry, source] of Object.entries(spec.entries)) {
    log(`bundling ${source} with ncc into lib/${entry}/`);
    execFileSync(process.execPath, [ncc, "build", join(repo, source), "-o", join(dir, "lib", entry), "-q"], {
      stdio: ["ignore", "ignore", "inherit"],
    });
    // ncc writes index.js beside a package.json saying "module"; name the entry point for what it is.
    renameSync(join(dir, "lib", entry, "index.js"), join(dir, "lib", entry, `${entry}.mjs`));
  }
  log(`adding the Node.js runtime ${process.version} (${process.execPath})`);
  copyFileSync(process.execPath, join(dir, "bin", "node"));
  chmodSync(join(dir, "bin", "node"), 0o755);
}
for (const [from, to] of Object.entries(spec.files)) {
  copyFileSync(join(repo, from), join(dir, to));
  if (to.endsWith(".sh") || to.startsWith("bin/")) chmodSync(join(dir, to), 0o755);
}
writeFileSync(
  join(dir, "VERSION"),
  `xenroam-${target} ${version}, ${runtime}, built ${new Date().toISOString()}\n`,
);
execFileSync("tar", ["-C", out, "-czf", join(out, `${name}.tar.gz`), name]);
log(`wrote ${join(out, `${name}.tar.gz`)}`);
process.stdout.write(`${dir}\n`);

#!/usr/bin/env node
// Builds the guest agent's DomU bundle: dist-packages/xenroam-agent-<version>-linux-x64/ and its .tar.gz —
// the agent bundled into one JavaScript file (@vercel/ncc) with the netlink native module beside it, this
// machine's Node.js runtime (so a bare image needs nothing else), the systemd unit and install.sh.
// Usage: node scripts/package-agent.mjs [--out DIR]
import { execFileSync } from "node:child_process";
import { chmodSync, copyFileSync, cpSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const repo = join(dirname(fileURLToPath(import.meta.url)), "..");
const outArg = process.argv.indexOf("--out");
const out = outArg > 0 ? process.argv[outArg + 1] : join(repo, "dist-packages");
const { version } = JSON.parse(readFileSync(join(repo, "guest-agent", "package.json"), "utf8"));
const arch = process.arch === "x64" ? "x64" : process.arch;
const name = `xenroam-agent-${version}-linux-${arch}`;
const dir = join(out, name);
const log = (line) => process.stderr.write(`package-agent: ${line}\n`);

rmSync(dir, { recursive: true, force: true });
mkdirSync(join(dir, "bin"), { recursive: true });
log(`bundling guest-agent/dist/src/main.js with ncc into ${dir}/lib`);
const ncc = join(repo, "node_modules", "@vercel", "ncc", "dist", "ncc", "cli.js");
execFileSync(
  process.execPath,
  [ncc, "build", join(repo, "guest-agent", "dist", "src", "main.js"), "-o", join(dir, "lib"), "-q"],
  {
    stdio: ["ignore", "ignore", "inherit"],
  },
);
// ncc writes index.js with a package.json saying "module"; give the entry point its own name.
cpSync(join(dir, "lib", "index.js"), join(dir, "lib", "agent.mjs"));
rmSync(join(dir, "lib", "index.js"));
log(`adding the Node.js runtime ${process.version} (${process.execPath})`);
copyFileSync(process.execPath, join(dir, "bin", "node"));
chmodSync(join(dir, "bin", "node"), 0o755);
for (const f of ["install.sh", "xenroam-agent.service"]) {
  copyFileSync(join(repo, "packaging", "guest-agent", f), join(dir, f));
}
chmodSync(join(dir, "install.sh"), 0o755);
writeFileSync(
  join(dir, "VERSION"),
  `xenroam-agent ${version}, Node.js ${process.version}, built ${new Date().toISOString()}\n`,
);
execFileSync("tar", ["-C", out, "-czf", join(out, `${name}.tar.gz`), name]);
log(`wrote ${join(out, `${name}.tar.gz`)}`);
process.stdout.write(`${dir}\n`);

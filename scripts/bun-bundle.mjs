// Run by Bun (scripts/package.mjs host-xapi): bundles one entry point of xenroam's XAPI build into one file.
// The npm `netlink` addon stays out — a XAPI Dom0 (CentOS 7) cannot load it (GLIBCXX_3.4.21) and Bun cannot
// run it (it drives libuv directly) — and in its place goes a module that fails with the reason on first use:
// the XAPI path never opens rtnetlink (XAPI moves the VIFs; host-plugin/src/adapters/dom0-net.ts does the
// rest), so only a bug would reach it.
// Usage: bun scripts/bun-bundle.mjs ENTRY.js OUTFILE.mjs
/* global Bun */
import { basename, dirname } from "node:path";

const [entry, outfile] = process.argv.slice(2);
if (!entry || !outfile || typeof Bun === "undefined") {
  process.stderr.write("usage: bun scripts/bun-bundle.mjs ENTRY.js OUTFILE.mjs (run by Bun)\n");
  process.exit(2);
}
const STUB = `
const reason = "rtnetlink is not part of xenroam's XAPI build (the netlink addon cannot load on a XAPI Dom0); this is a bug: report it";
export default new Proxy({}, { get() { throw new Error(reason); } });
`;
const result = await Bun.build({
  entrypoints: [entry],
  target: "bun",
  format: "esm",
  outdir: dirname(outfile),
  naming: basename(outfile),
  plugins: [
    {
      name: "no-rtnetlink",
      setup(build) {
        build.onResolve({ filter: /^netlink$/ }, () => ({ path: "netlink", namespace: "no-rtnetlink" }));
        build.onLoad({ filter: /.*/, namespace: "no-rtnetlink" }, () => ({ contents: STUB, loader: "js" }));
      },
    },
  ],
});
if (!result.success) {
  for (const log of result.logs) process.stderr.write(`${String(log)}\n`);
  process.exit(1);
}

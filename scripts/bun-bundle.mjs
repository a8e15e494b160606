// Run by Bun (scripts/package.mjs): bundles one entry point of xenroam into one file for Bun's runtime.
// The npm `netlink` package's native addon cannot run under Bun (it drives libuv directly: Bun panics at
// uv_poll_init), so with --rtnetlink:
//   ffi   its `node-gyp-build` (which loads the addon) is replaced by packages/netlink/src/bun-native.ts, the
//         same socket over libc through bun:ffi; netlink's JavaScript and xenroam's adapter stay as they are.
//         The guest agent's build (it needs rtnetlink).
//   none  `netlink` itself is replaced by a module that fails with the reason on first use: xenroam's XAPI build,
//         whose Dom0 (CentOS 7) could not load the addon either (GLIBCXX_3.4.21) and whose path never opens
//         rtnetlink (XAPI moves the VIFs; host-plugin/src/adapters/dom0-net.ts does the rest), so only a bug
//         would reach it.
// Usage: bun scripts/bun-bundle.mjs ENTRY.js OUTFILE.mjs --rtnetlink ffi|none
/* global Bun */
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const [entry, outfile, flag, mode] = process.argv.slice(2);
if (
  !entry ||
  !outfile ||
  flag !== "--rtnetlink" ||
  !["ffi", "none"].includes(mode) ||
  typeof Bun === "undefined"
) {
  process.stderr.write(
    "usage: bun scripts/bun-bundle.mjs ENTRY.js OUTFILE.mjs --rtnetlink ffi|none (run by Bun)\n",
  );
  process.exit(2);
}
const repo = join(dirname(fileURLToPath(import.meta.url)), "..");
const NATIVE = join(repo, "packages", "netlink", "dist", "src", "bun-native.js");
const STUB = `
const reason = "rtnetlink is not part of this xenroam build (the netlink addon cannot load here); this is a bug: report it";
export default new Proxy({}, { get() { throw new Error(reason); } });
`;
// raw.js does require('node-gyp-build')(dir).NativeNetlink: a CommonJS module whose export is that function.
const GYP = `const { NativeNetlink } = require(${JSON.stringify(NATIVE)});
module.exports = () => ({ NativeNetlink });
`;
const plugin =
  mode === "none"
    ? {
        name: "no-rtnetlink",
        setup(build) {
          build.onResolve({ filter: /^netlink(\/.*)?$/ }, () => ({
            path: "netlink",
            namespace: "no-rtnetlink",
          }));
          build.onLoad({ filter: /.*/, namespace: "no-rtnetlink" }, () => ({ contents: STUB, loader: "js" }));
        },
      }
    : {
        name: "rtnetlink-ffi",
        setup(build) {
          build.onResolve({ filter: /^node-gyp-build$/ }, (args) =>
            /[\\/]netlink[\\/]dist[\\/]/.test(args.importer)
              ? { path: "node-gyp-build", namespace: "rtnetlink-ffi" }
              : undefined,
          );
          build.onLoad({ filter: /.*/, namespace: "rtnetlink-ffi" }, () => ({ contents: GYP, loader: "js" }));
        },
      };
const result = await Bun.build({
  entrypoints: [entry],
  target: "bun",
  format: "esm",
  outdir: dirname(outfile),
  naming: basename(outfile),
  plugins: [plugin],
});
if (!result.success) {
  for (const log of result.logs) process.stderr.write(`${String(log)}\n`);
  process.exit(1);
}

// Which program runs for a command name: the admin's XENROAM_<NAME>, else the first fit in the system's
// directories, never PATH; an npm package's program is passed over with the reason.
import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "ava";
import {
  BinaryNotFoundError,
  binaryEnvVar,
  binaryPath,
  binaryVersion,
  notFoundMessage,
  resolveBinary,
  unfit,
} from "../src/index.js";

function dirs(t: { teardown(fn: () => void): void }) {
  const root = mkdtempSync(join(tmpdir(), "xr-bin-"));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const make = (path: string, text: string, mode = 0o755) => {
    mkdirSync(join(root, path, ".."), { recursive: true });
    writeFileSync(join(root, path), text);
    chmodSync(join(root, path), mode);
    return join(root, path);
  };
  return { root, make };
}

test("an ELF program or a shell script fits; a JavaScript program, node_modules and non-executables do not", (t) => {
  const { root, make } = dirs(t);
  t.is(unfit(process.execPath), undefined, "node itself is an ELF program");
  t.is(
    unfit(make("sbin/xl", '#!/bin/sh\nexec /usr/lib/xen/bin/xl "$@"\n')),
    undefined,
    "Debian's xl wrapper",
  );
  t.regex(unfit(make("bin/nft", "#!/usr/bin/env node\n")) ?? "", /JavaScript program/);
  t.regex(unfit(make("bin/tool", "#! /usr/bin/bun\n")) ?? "", /JavaScript program/);
  t.regex(unfit(make("lib/node_modules/x/sh-tool", "#!/bin/sh\n")) ?? "", /under node_modules/);
  t.is(unfit(make("bin/plain", "#!/bin/sh\n", 0o644)), "not executable");
  t.is(unfit(make("bin/data", "just text\n")), "neither an ELF program nor a #! script");
  t.is(unfit(join(root, "nothing")), "does not exist");
  t.is(unfit(root), "not a regular file");
});

test("the first fit in the directories, in order; an npm link before it is skipped and reported", (t) => {
  const { root, make } = dirs(t);
  const cli = make("usr/lib/node_modules/@vercel/nft/out/cli.js", "#!/usr/bin/env node\n");
  mkdirSync(join(root, "usr/local/bin"), { recursive: true });
  symlinkSync(cli, join(root, "usr/local/bin/nft"));
  const real = make("usr/sbin/nft", "#!/bin/sh\necho 'nftables v1.0.6'\n");
  // /sbin -> usr/sbin on a merged-/usr system: the same file is judged once.
  symlinkSync(join(root, "usr/sbin"), join(root, "sbin"));
  const order = [join(root, "usr/local/bin"), join(root, "sbin"), join(root, "usr/sbin")];
  const r = resolveBinary("nft", { env: {}, dirs: order });
  t.is(r.path, join(root, "sbin/nft"));
  t.is(r.via, "system");
  t.deepEqual(
    r.skipped.map((s) => s.path),
    [join(root, "usr/local/bin/nft")],
  );
  t.regex(r.skipped[0]?.why ?? "", /node_modules/);
  t.truthy(real);
});

test("PATH is never searched; XENROAM_<NAME> is taken as given", (t) => {
  const { root, make } = dirs(t);
  make("path/xenroam-no-such-tool", "#!/bin/sh\n");
  const saved = process.env.PATH;
  process.env.PATH = `${join(root, "path")}:${saved ?? ""}`;
  t.teardown(() => (process.env.PATH = saved));
  const none = resolveBinary("xenroam-no-such-tool");
  t.is(none.path, undefined);
  t.throws(() => binaryPath("xenroam-no-such-tool"), {
    instanceOf: BinaryNotFoundError,
    message: /no usable xenroam-no-such-tool in \/usr\/sbin, \/sbin, .*XENROAM_XENROAM_NO_SUCH_TOOL/,
  });
  t.is(binaryEnvVar("ovs-vsctl"), "XENROAM_OVS_VSCTL");
  const fake = join(root, "fake-xe.mjs");
  t.deepEqual(resolveBinary("xe", { env: { XENROAM_XE: fake } }), {
    name: "xe",
    path: fake,
    via: "env",
    envVar: "XENROAM_XE",
    skipped: [],
  });
});

test("the message for nothing found names what was passed over and the variable to set", (t) => {
  const msg = notFoundMessage(
    {
      name: "nft",
      path: undefined,
      via: undefined,
      envVar: "XENROAM_NFT",
      skipped: [
        { path: "/usr/local/bin/nft", why: "a JavaScript program (#!/usr/bin/env node), not the system's" },
      ],
    },
    { dirs: ["/usr/sbin", "/usr/local/bin"] },
  );
  t.is(
    msg,
    "no usable nft in /usr/sbin, /usr/local/bin (skipped /usr/local/bin/nft: a JavaScript program (#!/usr/bin/env node), not the system's); install it, or give its path in XENROAM_NFT",
  );
});

test("a program's version is the first line it prints", async (t) => {
  const { make } = dirs(t);
  t.is(
    await binaryVersion(make("bin/v", "#!/bin/sh\necho\necho 'Version: 2.19'\necho more\n")),
    "Version: 2.19",
  );
  t.is(await binaryVersion(make("bin/quiet", "#!/bin/sh\nexit 3\n")), undefined);
});

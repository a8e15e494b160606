// The ELF version reader against real files of this machine: this Node.js (built for glibc 2.28), the netlink
// addon (GLIBCXX_3.4.21), and — where binutils is installed — the same answer as `readelf -V`.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import test from "ava";
import { beyondLimits, ElfError, isElf, versionNeeds } from "../src/elf.js";

const nodeBinary = readFileSync(process.execPath);
const addonPath = join(
  dirname(createRequire(import.meta.url).resolve("netlink/package.json")),
  "prebuilds/linux-x64/node.napi.node",
);

test("this Node.js needs glibc newer than 2.17: a CentOS 7 Dom0 cannot run it", (t) => {
  const needs = versionNeeds(nodeBinary);
  const libc = needs.find((n) => n.file === "libc.so.6");
  t.truthy(libc);
  t.true(libc?.versions.includes("GLIBC_2.2.5"));
  t.true(
    beyondLimits(needs).some((b) => /^libc\.so\.6: GLIBC_2\.(2[89]|3\d)/.test(b)),
    beyondLimits(needs).join(", "),
  );
});

test("the netlink addon needs GLIBCXX_3.4.21 and CXXABI_1.3.9, above CentOS 7's libstdc++", (t) => {
  const bad = beyondLimits(versionNeeds(readFileSync(addonPath)));
  t.true(bad.includes("libstdc++.so.6: GLIBCXX_3.4.21"), bad.join(", "));
  t.true(bad.includes("libstdc++.so.6: CXXABI_1.3.9"), bad.join(", "));
});

test("limits: at or below passes, above or unknown families fail", (t) => {
  const needs = [
    { file: "libc.so.6", versions: ["GLIBC_2.2.5", "GLIBC_2.17"] },
    { file: "libstdc++.so.6", versions: ["GLIBCXX_3.4.19", "CXXABI_1.3.7"] },
  ];
  t.deepEqual(beyondLimits(needs), []);
  t.deepEqual(beyondLimits([{ file: "libc.so.6", versions: ["GLIBC_2.18", "GLIBC_PRIVATE"] }]), [
    "libc.so.6: GLIBC_2.18",
    "libc.so.6: GLIBC_PRIVATE",
  ]);
});

test("not ELF, or cut short: a clear error, never a wrong answer", (t) => {
  t.false(isElf(Buffer.from("#!/bin/sh\n")));
  t.throws(() => versionNeeds(Buffer.from("#!/bin/sh\n")), { instanceOf: ElfError, message: /not an ELF/ });
  t.throws(() => versionNeeds(nodeBinary.subarray(0, 4096)), { instanceOf: ElfError });
});

test("the same references as readelf -V, where binutils is installed", (t) => {
  let text: string;
  try {
    text = execFileSync("readelf", ["-V", "-W", addonPath], { encoding: "utf8" });
  } catch {
    t.pass("no readelf here");
    return;
  }
  // readelf: "  0x0010: Version: 1  File: libstdc++.so.6  Cnt: 4" then "  0x0020:   Name: GLIBCXX_3.4  Flags: …"
  const theirs: Record<string, string[]> = {};
  let file = "";
  for (const line of text.slice(text.indexOf(".gnu.version_r")).split("\n")) {
    const f = /File: (\S+)/.exec(line);
    if (f?.[1]) file = f[1];
    const n = /Name: (\S+)/.exec(line);
    if (n?.[1] && file) (theirs[file] ??= []).push(n[1]);
  }
  const ours = Object.fromEntries(
    versionNeeds(readFileSync(addonPath)).map((n) => [n.file, [...n.versions]]),
  );
  const sorted = (r: Record<string, string[]>) =>
    Object.fromEntries(Object.entries(r).map(([k, v]) => [k, [...v].sort()]));
  t.deepEqual(sorted(ours), sorted(theirs));
});

// Which program xenroam runs for a command name (nft, radvd, ip, xl, xe, ovs-vsctl), the one answer both the
// adapters that run them and `xenroam doctor` use: an admin's explicit path (XENROAM_<NAME>), else the first
// fit in the system's directories. Never PATH: under npm, node_modules/.bin comes first, and a common package
// (@vercel/nft, pulled in by ava) installs an unrelated `nft` there; `npm install -g` links such tools into
// /usr/local/bin and /usr/bin too, so a candidate that is an npm package's program is skipped, with the reason.

import { execFile } from "node:child_process";
import { closeSync, openSync, readSync, realpathSync, statSync } from "node:fs";

/** Where system packages put their programs, in the order they are searched. */
export const SYSTEM_DIRS: readonly string[] = [
  "/usr/sbin",
  "/sbin",
  "/usr/bin",
  "/bin",
  "/usr/local/sbin",
  "/usr/local/bin",
];

export class BinaryNotFoundError extends Error {
  override readonly name = "BinaryNotFoundError";
}

/** A candidate that was not taken, and why. */
export interface Skipped {
  readonly path: string;
  readonly why: string;
}

export interface Resolution {
  readonly name: string;
  /** The path xenroam runs; undefined when there is none. */
  readonly path: string | undefined;
  /** "env": the admin named it in `envVar`; "system": found in SYSTEM_DIRS. */
  readonly via: "env" | "system" | undefined;
  readonly envVar: string;
  readonly skipped: readonly Skipped[];
}

/** The environment variable that names a command's path explicitly: XENROAM_NFT, XENROAM_OVS_VSCTL, … */
export const binaryEnvVar = (name: string): string =>
  `XENROAM_${name.toUpperCase().replace(/[^A-Z0-9]/g, "_")}`;

/** A JavaScript runtime in a script's `#!` line: what npm's programs start with. */
const JS_INTERPRETER = /(^|[\s/])(node|nodejs|bun|deno)(\s|$)/;

/** Why `path` cannot be run at all (missing, not a regular file, not executable), or undefined. */
export function cannotRun(path: string): string | undefined {
  try {
    const st = statSync(realpathSync(path));
    if (!st.isFile()) return "not a regular file";
    if ((st.mode & 0o111) === 0) return "not executable";
    return undefined;
  } catch {
    return "does not exist";
  }
}

/**
 * Why `path` is not a system program xenroam may run, or undefined when it is: an executable regular file,
 * outside any node_modules directory (after symbolic links), either an ELF program or a `#!` script whose
 * interpreter is not a JavaScript runtime (Debian's /usr/sbin/xl is a shell wrapper).
 */
export function unfit(path: string): string | undefined {
  const cannot = cannotRun(path);
  if (cannot) return cannot;
  const real = realpathSync(path);
  if (real.split("/").includes("node_modules"))
    return `${real === path ? "it" : real} is under node_modules (an npm package's program)`;
  const head = Buffer.alloc(256);
  let n = 0;
  let fd: number | undefined;
  try {
    fd = openSync(real, "r");
    n = readSync(fd, head, 0, head.length, 0);
  } catch (err) {
    return `unreadable (${(err as Error).message})`;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
  if (n >= 4 && head[0] === 0x7f && head[1] === 0x45 && head[2] === 0x4c && head[3] === 0x46)
    return undefined;
  if (n >= 2 && head[0] === 0x23 && head[1] === 0x21) {
    const line = head.toString("latin1", 2, n).split("\n")[0]?.trim() ?? "";
    return JS_INTERPRETER.test(line) ? `a JavaScript program (#!${line}), not the system's` : undefined;
  }
  return "neither an ELF program nor a #! script";
}

/**
 * Which program runs for `name`. `env` and `dirs` are for tests; an explicit path in the environment is taken
 * as the admin gave it (a test's fake, a program outside the system's directories).
 */
export function resolveBinary(
  name: string,
  o: { readonly env?: NodeJS.ProcessEnv; readonly dirs?: readonly string[] } = {},
): Resolution {
  const envVar = binaryEnvVar(name);
  const explicit = (o.env ?? process.env)[envVar];
  if (explicit) return { name, path: explicit, via: "env", envVar, skipped: [] };
  const skipped: Skipped[] = [];
  const seen = new Set<string>();
  for (const dir of o.dirs ?? SYSTEM_DIRS) {
    const path = `${dir}/${name}`;
    let real: string;
    try {
      real = realpathSync(path);
    } catch {
      continue;
    }
    // /sbin → usr/sbin on merged-/usr systems: one file, judged once.
    if (seen.has(real)) continue;
    seen.add(real);
    const why = unfit(path);
    if (why === undefined) return { name, path, via: "system", envVar, skipped };
    skipped.push({ path, why });
  }
  return { name, path: undefined, via: undefined, envVar, skipped };
}

/** What a resolution that found nothing says: where it looked, what it passed over, how to fix it. */
export function notFoundMessage(r: Resolution, o: { readonly dirs?: readonly string[] } = {}): string {
  const passed = r.skipped.map((s) => `${s.path}: ${s.why}`).join("; ");
  return `no usable ${r.name} in ${(o.dirs ?? SYSTEM_DIRS).join(", ")}${passed ? ` (skipped ${passed})` : ""}; install it, or give its path in ${r.envVar}`;
}

/** The path to run for `name`; BinaryNotFoundError (saying where it looked and how to fix it) when none fits. */
export function binaryPath(name: string): string {
  const r = resolveBinary(name);
  if (r.path === undefined) throw new BinaryNotFoundError(notFoundMessage(r));
  return r.path;
}

/** The first line a program prints for `args` (`--version`, `-V`), or undefined when it does not answer. */
export function binaryVersion(
  path: string,
  args: readonly string[] = ["--version"],
): Promise<string | undefined> {
  return new Promise((resolve) => {
    execFile(path, args, { timeout: 5000 }, (err, stdout, stderr) => {
      const line = `${stdout}\n${stderr}`
        .split("\n")
        .map((l) => l.trim())
        .find((l) => l.length > 0);
      resolve(err && !line ? undefined : line);
    });
  });
}

// The Nft port and its adapter: the only code in xenroam that runs `nft`. A script is applied with
// `nft -f -`, which the kernel commits as one transaction: all of it or none of it.

import { spawn } from "node:child_process";
import { existsSync } from "node:fs";

/**
 * The nftables binary. Not a PATH lookup: under npm, node_modules/.bin comes first, and a common package
 * (@vercel/nft, pulled in by ava) installs an unrelated `nft` there.
 */
export function nftBinary(): string {
  const override = process.env.XENROAM_NFT;
  if (override) return override;
  for (const dir of ["/usr/sbin", "/sbin", "/usr/local/sbin", "/usr/bin", "/bin"]) {
    if (existsSync(`${dir}/nft`)) return `${dir}/nft`;
  }
  return "nft";
}

export interface Nft {
  apply(script: string): Promise<void>;
  /** `nft -j list tables` names of the ip6 family. */
  tables(): Promise<string[]>;
}

export class NftError extends Error {
  override readonly name = "NftError";
}

function run(netns: string | undefined, args: string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const nft = nftBinary();
    const [cmd, argv] = netns ? ["ip", ["netns", "exec", netns, nft, ...args]] : [nft, args];
    const child = spawn(cmd, argv, { stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (c) => (out += String(c)));
    child.stderr.on("data", (c) => (err += String(c)));
    child.on("error", (e) =>
      reject(new NftError(`cannot run nft (${e.message}); install nftables: apt-get install nftables`)),
    );
    child.on("close", (code) =>
      code === 0
        ? resolve(out)
        : reject(new NftError(`nft ${args.join(" ")} failed: ${err.trim() || `exit ${code}`}`)),
    );
    child.stdin.end(input ?? "");
  });
}

/** nft in this process's network namespace, or (for the lab and tests) inside a named one. */
export function createNft(options: { readonly netns?: string } = {}): Nft {
  const { netns } = options;
  return {
    apply: async (script) => {
      await run(netns, ["-f", "-"], script);
    },
    tables: async () => {
      const out = (await run(netns, ["-j", "list", "tables"])).trim();
      if (!out) return [];
      const parsed = JSON.parse(out) as { nftables: Array<{ table?: { family: string; name: string } }> };
      return parsed.nftables.flatMap((e) => (e.table?.family === "ip6" ? [e.table.name] : []));
    },
  };
}

/** Records every script; keeps the last one per table name as "applied". */
export class FakeNft implements Nft {
  readonly scripts: string[] = [];
  async apply(script: string) {
    this.scripts.push(script);
  }
  async tables() {
    const last = this.scripts.at(-1) ?? "";
    return /\ntable ip6 (\S+) \{\n/.test(last) ? [/\ntable ip6 (\S+) \{\n/.exec(last)?.[1] ?? ""] : [];
  }
}

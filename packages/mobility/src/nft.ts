// The Nft port and its adapter: the only code in xenroam that runs `nft`. A script is applied with
// `nft -f -`, which the kernel commits as one transaction: all of it or none of it.

import { spawn } from "node:child_process";
import { binaryPath } from "@xenroam/process";

/**
 * The nftables binary: XENROAM_NFT, else the system's `nft` (@xenroam/process's resolver, which `xenroam
 * doctor` reports too). Not a PATH lookup: under npm, node_modules/.bin comes first, and a common package
 * (@vercel/nft, pulled in by ava) installs an unrelated `nft` there. Throws when there is none, saying so.
 */
export function nftBinary(): string {
  return binaryPath("nft");
}

export interface Nft {
  apply(script: string): Promise<void>;
  /** `nft -j list tables` names of the ip6 family. */
  tables(): Promise<string[]>;
  /** The elements of an ip6 map (key → value), or undefined when the table or map does not exist. */
  mapElements(table: string, map: string): Promise<Map<string, string> | undefined>;
}

export class NftError extends Error {
  override readonly name = "NftError";
}

function run(netns: string | undefined, args: string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let cmd: string;
    let argv: string[];
    try {
      const nft = nftBinary();
      [cmd, argv] = netns ? [binaryPath("ip"), ["netns", "exec", netns, nft, ...args]] : [nft, args];
    } catch (err) {
      reject(new NftError(`cannot run nft: ${(err as Error).message}`));
      return;
    }
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
    // nft that exits before reading stdin (a listing, or a failure) closes the pipe: EPIPE here would be an
    // uncaught exception; the outcome comes on "close".
    child.stdin.on("error", () => {});
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
    mapElements: async (table, map) => {
      let out: string;
      try {
        out = await run(netns, ["-j", "list", "map", "ip6", table, map]);
      } catch {
        return undefined; // no such table or map (nft's message varies by version)
      }
      // nftables 1.0.x: {"nftables": [{"metainfo": …}, {"map": {…, "elem": [[key, value], …]}}]}
      const parsed = JSON.parse(out) as { nftables: Array<{ map?: { elem?: Array<[unknown, unknown]> } }> };
      const elements = new Map<string, string>();
      for (const e of parsed.nftables) {
        for (const [k, v] of e.map?.elem ?? []) {
          if (typeof k === "string" && typeof v === "string") elements.set(k, v);
        }
      }
      return elements;
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
  /** Elements as the last script that declared the map wrote them (`elements = { k : v, … }`). */
  async mapElements(table: string, map: string) {
    if (!(await this.tables()).includes(table)) return undefined;
    const last = this.scripts.at(-1) ?? "";
    const body = new RegExp(`map ${map} \\{[^}]*?elements = \\{([^}]*)\\}`).exec(last)?.[1];
    const elements = new Map<string, string>();
    for (const pair of (body ?? "").split(",")) {
      const [k, v] = pair.split(" : ").map((x) => x.trim());
      if (k && v) elements.set(k, v);
    }
    return elements;
  }
}

// The nft adapter runs the system's nftables, never an `nft` that comes first on PATH (under npm,
// node_modules/.bin holds @vercel/nft's), and says so when there is none.
import { chmodSync, mkdirSync, mkdtempSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "ava";
import { resolveBinary } from "@xenroam/process";
import { createNft, nftBinary, NftError } from "../src/nft.js";

function fakeNpmNft(t: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), "xr-nft-"));
  const bin = join(dir, "node_modules", ".bin");
  mkdirSync(bin, { recursive: true });
  writeFileSync(join(bin, "nft"), "#!/usr/bin/env node\nconsole.log('not nftables')\n");
  chmodSync(join(bin, "nft"), 0o755);
  const saved = { PATH: process.env.PATH, nft: process.env.XENROAM_NFT };
  process.env.PATH = `${bin}:${process.env.PATH ?? ""}`;
  delete process.env.XENROAM_NFT;
  t.teardown(() => {
    process.env.PATH = saved.PATH;
    if (saved.nft === undefined) delete process.env.XENROAM_NFT;
    else process.env.XENROAM_NFT = saved.nft;
    rmSync(dir, { recursive: true, force: true });
  });
  return bin;
}

test.serial("with an npm `nft` first on PATH, the adapter runs the system's nft", async (t) => {
  fakeNpmNft(t);
  if (resolveBinary("nft", { env: {} }).path === undefined) {
    t.pass("no nftables on this machine");
    return;
  }
  t.is(realpathSync(nftBinary()), realpathSync("/usr/sbin/nft"));
});

test.serial(
  "an explicit XENROAM_NFT is run as given, and one that is missing fails as an NftError",
  async (t) => {
    const bin = fakeNpmNft(t);
    process.env.XENROAM_NFT = join(bin, "nft");
    t.is(nftBinary(), join(bin, "nft"));
    process.env.XENROAM_NFT = join(bin, "missing-nft");
    await t.throwsAsync(createNft().tables(), { instanceOf: NftError, message: /cannot run nft/ });
  },
);

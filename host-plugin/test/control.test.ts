// `xenroam --control URL`: the host plugin reads the sites document from the control server (validated as
// a file would be) instead of /etc/xenroam/sites.json; a bad token or a server with no sites says so.
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import test from "ava";
import {
  ControlService,
  createControlServer,
  exportPublicKey,
  generateSigningKeys,
  MemoryStore,
} from "@xenroam/control";

const MAIN = fileURLToPath(new URL("../src/main.js", import.meta.url));

function xenroam(args: string[]): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [MAIN, ...args], (err, _stdout, stderr) =>
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stderr }),
    );
  });
}

test("sites come from the control server; bad tokens and missing sites are explained", async (t) => {
  const keys = generateSigningKeys();
  const service = new ControlService({
    store: new MemoryStore(),
    ...keys,
    adminTokens: ["admin-secret-0123"],
  });
  const server = createControlServer(service, exportPublicKey(keys.publicKey));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const dir = mkdtempSync(join(tmpdir(), "xr-hpc-"));
  t.teardown(() => {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const token = join(dir, "host.token");
  const run = () =>
    xenroam([
      "--toolstack",
      "xl",
      "--host",
      "hosta",
      "--state-dir",
      dir,
      "--control",
      url,
      "--control-token-file",
      token,
      "--xenstore",
      join(dir, "no-xenstored.sock"),
      "status",
    ]);

  writeFileSync(token, "wrong-token\n");
  const bad = await run();
  t.is(bad.code, 1);
  t.regex(bad.stderr, /401 unknown bearer token/);

  writeFileSync(token, `${(await service.registerPeer("hosta")).token}\n`);
  t.regex((await run()).stderr, /404 no sites registered yet/);

  await service.putSites({
    sites: [
      { name: "a", prefix: "2001:db8:a::/64", gateway: { linkLocal: "fe80::a:1", mac: "02:00:00:00:0a:01" } },
    ],
    hosts: [{ name: "hosta", site: "a" }],
  });
  const past = await run();
  t.notRegex(past.stderr, /sites|control server/, "the sites were read and accepted");
  t.regex(past.stderr, /no-xenstored\.sock/, "and the next step (xenstore) is what failed");
  t.regex(
    (await xenroam(["--sites", "/x.json", "--control", url, "--toolstack", "xl", "status"])).stderr,
    /either --sites or --control/,
  );
});

// Root-only: a lab whose topology says mtu 1280 comes up with MTU 1280 on every link it makes, and down leaves
// nothing. Its own lab name and state root; scripts/test-root.sh runs it inside a fresh network namespace.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { DEFAULT_TOPOLOGY, labDown, labUp, netnsList, parseTopology } from "@xenroam/lab";
import test from "ava";

const run = promisify(execFile);

async function mtus(netns: string): Promise<Map<string, number>> {
  const { stdout } = await run("ip", ["-n", netns, "-j", "link", "show"]);
  const links = JSON.parse(stdout) as Array<{ ifname: string; mtu: number }>;
  return new Map(links.map((l) => [l.ifname, l.mtu]));
}

test("a topology with mtu 1280 comes up with MTU 1280 on the VM, the hosts' bridges and the router's LANs", async (t) => {
  const name = `m${randomBytes(2).toString("hex")}`;
  const stateRoot = mkdtempSync(join(tmpdir(), "xr-lab-"));
  t.teardown(async () => {
    await labDown(name, { stateRoot, force: true }).catch(() => {});
    rmSync(stateRoot, { recursive: true, force: true });
  });
  const topology = parseTopology({ ...DEFAULT_TOPOLOGY, name, mtu: 1280 });
  t.is((await labUp(topology, { stateRoot })).phase, "up");

  const wrong: string[] = [];
  const expect = async (node: string, links: readonly string[]) => {
    const got = await mtus(`${name}-${node}`);
    for (const l of links) if (got.get(l) !== 1280) wrong.push(`${node}/${l}: ${got.get(l) ?? "missing"}`);
    // Every other link the lab made there too (lo keeps its own).
    for (const [l, mtu] of got) if (l !== "lo" && mtu !== 1280) wrong.push(`${node}/${l}: ${mtu}`);
  };
  await expect("vm", ["eth0", "eth1"]);
  for (const h of topology.hosts) await expect(h.name, ["xenbr0", "xrpark0", "peth0"]);
  await expect(topology.hosts.find((h) => h.name === topology.vm.host)?.name ?? "", ["vif5.0", "vif5.1"]);
  await expect("router", ["lan-a", "lan-b", "lan-cn"]);
  await expect("cn", ["eth0"]);
  t.deepEqual([...new Set(wrong)], []);

  // The MTU holds end to end: 1280 bytes leave the VM unfragmented (-M do), 1281 do not.
  const ping = (size: number) =>
    run("ip", [
      "netns",
      "exec",
      `${name}-vm`,
      "ping",
      "-6",
      "-c",
      "1",
      "-W",
      "2",
      "-M",
      "do",
      "-s",
      String(size),
      topology.correspondent.address,
    ]);
  t.regex((await ping(1280 - 48)).stdout, /1 received/);
  await t.throwsAsync(ping(1280 - 48 + 1), undefined, "a 1281-byte packet does not fit");

  await labDown(name, { stateRoot });
  t.deepEqual(
    (await netnsList()).filter((n) => n.startsWith(`${name}-`)),
    [],
  );
  t.deepEqual(readdirSync(stateRoot), []);
});

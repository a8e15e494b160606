// Root-only: a flood of forged binding datagrams at a real correspondent agent (issue 12 item 3). The
// forgeries are the most expensive kind a stranger can make (the server's key id, a current standby's
// sequence number, a random signature: every cheap check passes, the signature refuses them), sent from 64
// source addresses at 5,000 a second. A real binding sent meanwhile must reach the correspondent's nftables
// maps about as fast as with no flood. The control server, the correspondent agent and nft are the real ones.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import test from "ava";
import { formatIpv6, parsePrefix, slaacAddress } from "@xenroam/core";
import {
  cnLocatorOf,
  controlUrl,
  DEFAULT_TOPOLOGY,
  FILES,
  labDown,
  labUp,
  parseTopology,
} from "@xenroam/lab";

const run = promisify(execFile);
const SENDER = join(dirname(fileURLToPath(import.meta.url)), "flood-sender.js");

test("a flood of forged datagrams leaves the correspondent applying a real binding in its usual time", async (t) => {
  const name = `f${randomBytes(2).toString("hex")}`;
  const stateRoot = mkdtempSync(join(tmpdir(), "xr-flood-"));
  const topology = parseTopology({ ...DEFAULT_TOPOLOGY, name });
  const m = topology.mobility;
  if (!m) throw new Error("the default topology has no mobility section");
  t.teardown(async () => {
    await labDown(name, { stateRoot, force: true }).catch(() => {});
    rmSync(stateRoot, { recursive: true, force: true });
  });
  await labUp(topology, { stateRoot });
  const stateDir = join(stateRoot, name);
  const router = `${name}-${topology.router.name}`;
  const cn = topology.correspondent.address;
  const inRouter = async (args: string[]) =>
    (await run("ip", ["netns", "exec", router, process.execPath, SENDER, ...args])).stdout.trim();
  const site = topology.sites[1];
  if (!site) throw new Error("the default topology has a second site");
  // Locators the VM's own MACs make in site b (EUI-64): proven by its registration, no attestation needed.
  const locators = [topology.vm.secondaryMac, topology.vm.primaryMac].map((mac) =>
    formatIpv6(slaacAddress(parsePrefix(site.prefix), mac)),
  );
  const register = async (locator: string) =>
    inRouter([
      "register",
      controlUrl(topology, m),
      join(stateDir, FILES.ca),
      join(stateDir, FILES.vmToken),
      topology.vm.name,
      locator,
    ]);
  /**
   * The CN's egress sends the HoA to `locator`: the fast switch's override rule (at once) or the map (the
   * whole table, rendered a second later).
   */
  const cnSendsTo = async (locator: string) => {
    const { stdout } = await run("ip", [
      "netns",
      "exec",
      `${name}-${topology.correspondent.name}`,
      "/usr/sbin/nft",
      "list",
      "table",
      "ip6",
      "xenroam",
    ]);
    return stdout.includes(`daddr set ${locator}`) || stdout.includes(`${m.hoa} : ${locator}`);
  };
  /** Sends `binding` to the CN and waits for its egress to send to `locator`: ms from the first copy. */
  const applied = async (binding: string, locator: string) => {
    const sending = inRouter(["send", cn, String(m.bindingPort), binding]);
    const deadline = Date.now() + 10_000;
    let seenAt: number | undefined;
    while (Date.now() < deadline) {
      if (await cnSendsTo(locator)) {
        seenAt = Date.now();
        break;
      }
      await new Promise((r) => setTimeout(r, 2));
    }
    const { sentAt } = JSON.parse(await sending) as { sentAt: number };
    if (seenAt === undefined) throw new Error(`the correspondent never applied ${locator}`);
    return seenAt - sentAt;
  };
  /** Waits until the CN could have learnt the standby from the watch stream (long poll: at once). */
  const learnt = () => new Promise((r) => setTimeout(r, 1500));

  // Baseline: no flood.
  const first = await register(locators[0] as string);
  await learnt();
  const quiet = await applied(first, locators[0] as string);

  // 64 extra source addresses on the router, outside every lab prefix (fd00:f100::/64).
  const sources = Array.from({ length: 64 }, (_, i) => `fd00:f100::${(i + 1).toString(16)}`);
  for (const a of sources)
    await run("ip", ["-n", router, "-6", "addr", "add", `${a}/128`, "dev", "lo", "nodad"]);
  const second = await register(locators[1] as string);
  await learnt();
  const template = { ...(JSON.parse(second) as Record<string, unknown>) };
  const flooding = inRouter([
    "flood",
    cn,
    String(m.bindingPort),
    JSON.stringify(template),
    sources.join(","),
    "5000",
    "4",
  ]);
  await new Promise((r) => setTimeout(r, 1500)); // the flood is under way
  const loud = await applied(second, locators[1] as string);
  const { sent } = JSON.parse(await flooding) as { sent: number };
  t.log(
    `real binding applied in ${quiet} ms without a flood, ${loud} ms under ${sent} forged datagrams in 4 s`,
  );
  t.is(await cnLocatorOf(topology, m), locators[1], "and the whole table follows");
  t.true(sent > 10_000, `the flood was a flood (${sent} datagrams)`);
  // Its usual time: a poll of the maps takes a few ms; allow the CPU the flood takes on a 2-core machine.
  t.true(loud <= Math.max(3 * quiet, quiet + 150), `under the flood ${loud} ms, without ${quiet} ms`);
});

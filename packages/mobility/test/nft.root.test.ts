// Root-only: the HoA↔MoA rewrite against the real kernel in two namespaces (a mobile node and a
// correspondent on one link): ping and TCP to the HoA, NDP untouched, nothing left after removal.
import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { promisify } from "node:util";
import test from "ava";
import { createNft, renderCorrespondent, renderMobileNode, renderRemoval } from "../src/index.js";

const run = promisify(execFile);
const HOA = "fd00:1::5";
const MOA = "2001:db8:c::2";
const CN = "2001:db8:c::1";

test("the CN reaches the VM's HoA through both rewrites; NDP is never rewritten; removal leaves nothing", async (t) => {
  const id = randomBytes(2).toString("hex");
  const [mn, cn] = [`xmn-${id}`, `xcn-${id}`];
  for (const ns of [mn, cn]) await run("ip", ["netns", "add", ns]);
  t.teardown(async () => {
    for (const ns of [mn, cn]) await run("ip", ["netns", "del", ns]).catch(() => {});
  });
  const sh = (ns: string, cmd: string) => run("ip", ["netns", "exec", ns, "sh", "-c", cmd]);
  await run("ip", ["link", "add", "eth0", "netns", mn, "type", "veth", "peer", "name", "eth0", "netns", cn]);
  await sh(
    mn,
    `ip link set lo up && ip link set eth0 up && ip addr add ${MOA}/64 dev eth0 nodad && ip addr add ${HOA}/128 dev lo`,
  );
  await sh(
    cn,
    `ip link set lo up && ip link set eth0 up && ip addr add ${CN}/64 dev eth0 nodad && ip route add fd00:1::/64 dev eth0`,
  );

  const [nftMn, nftCn] = [createNft({ netns: mn }), createNft({ netns: cn })];
  const state = { hoa: HOA, locators: [{ ifname: "eth0", moa: MOA }] };
  await nftMn.apply(renderMobileNode(state));
  await nftMn.apply(renderMobileNode(state)); // idempotent
  await nftCn.apply(renderCorrespondent([{ hoa: HOA, active: MOA, locators: [MOA] }]));
  t.deepEqual(await nftMn.tables(), ["xenroam"]);
  t.deepEqual(await nftCn.mapElements("xenroam", "hoa_to_locator"), new Map([[HOA, MOA]]));
  t.is(await nftCn.mapElements("xenroam", "no_such_map"), undefined);

  const ping = await sh(cn, `ping -6 -c 2 -i 0.2 -W 2 ${HOA}`);
  t.regex(ping.stdout, /2 received/);
  t.regex(ping.stdout, new RegExp(`from ${HOA}`), "replies appear to come from the HoA");

  // TCP through the rewrite: checksums must come out right in both directions.
  const server = spawn("ip", [
    "netns",
    "exec",
    mn,
    process.execPath,
    "-e",
    `require("net").createServer((s) => s.pipe(s)).listen(9000, "${HOA}", () => console.log("ready"))`,
  ]);
  t.teardown(() => server.kill());
  await new Promise<void>((resolve) => server.stdout.once("data", () => resolve()));
  const client = await run("ip", [
    "netns",
    "exec",
    cn,
    process.execPath,
    "-e",
    `const s = require("net").connect(9000, "${HOA}", () => s.write("hello via the HoA")); s.on("data", (d) => { console.log(String(d)); s.end(); });`,
  ]);
  t.is(client.stdout.trim(), "hello via the HoA");

  // Address resolution happened for the MoA, never for the HoA: NDP was left alone.
  const neigh = JSON.parse(
    (await run("ip", ["-n", cn, "-j", "-6", "neigh", "show", "dev", "eth0"])).stdout,
  ) as Array<{ dst: string }>;
  t.true(neigh.some((n) => n.dst === MOA));
  t.false(neigh.some((n) => n.dst === HOA));

  await nftMn.apply(renderRemoval());
  await nftCn.apply(renderRemoval());
  await nftMn.apply(renderRemoval()); // removing twice is fine
  t.deepEqual(await nftMn.tables(), []);
  t.deepEqual(await nftCn.tables(), []);
});

// The agents over control server replicas (two servers in this process on one shared store, each stopped
// outright: its listener closed and every connection cut, long polls included), with the real client given
// both, fakes for nftables and netlink. A correspondent whose replica dies goes on at the other and misses no
// change; with every replica down it says so once and resumes when one is back; a mobile node registers and
// activates through whichever replica answers. And the command line takes several --control URLs.
import { execFile } from "node:child_process";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import test, { type ExecutionContext } from "ava";
import { formatIpv6, parsePrefix, slaacAddress } from "@xenroam/core";
import {
  ControlClient,
  ControlService,
  createControlServer,
  exportPublicKey,
  generateSigningKeys,
  MemoryStore,
  type SignedBinding,
} from "@xenroam/control";
import { FakeNft } from "@xenroam/mobility";
import { guestNetlink } from "./support.js";
import { Correspondent, MobileNode, type MobileState } from "../src/index.js";

const ADMIN = "admin-secret-0123456789";
const SITES = {
  sites: [
    { name: "a", prefix: "2001:db8:a::/64", gateway: { linkLocal: "fe80::a:1", mac: "02:00:00:00:0a:01" } },
    { name: "b", prefix: "2001:db8:b::/64", gateway: { linkLocal: "fe80::b:1", mac: "02:00:00:00:0b:01" } },
  ],
  hosts: [
    { name: "hosta", site: "a" },
    { name: "hostb", site: "b" },
  ],
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** The SLAAC address a MAC makes in a site's prefix: a locator its MAC proves. */
const slaac = (prefix: string, mac: string) => formatIpv6(slaacAddress(parsePrefix(prefix), mac));

interface Logged {
  readonly event: string;
  readonly fields: Record<string, unknown>;
}

/**
 * `n` control servers in this process, each its own ControlService over one store (as replicas share etcd:
 * one registry, one revision sequence, every server's long polls woken by any server's write).
 */
async function replicas(t: ExecutionContext, n = 2) {
  const keys = generateSigningKeys();
  const store = new MemoryStore();
  const services = Array.from(
    { length: n },
    () => new ControlService({ store, ...keys, adminTokens: [ADMIN] }),
  );
  const servers: Array<ReturnType<typeof createControlServer> | undefined> = [];
  const ports: number[] = [];
  const listen = async (i: number, port = 0) => {
    const server = createControlServer(services[i] as ControlService, exportPublicKey(keys.publicKey));
    await new Promise<void>((r) => server.listen(port, "::1", () => r()));
    servers[i] = server;
    ports[i] = (server.address() as AddressInfo).port;
  };
  for (let i = 0; i < n; i++) await listen(i);
  const kill = (i: number) => {
    const server = servers[i];
    servers[i] = undefined;
    server?.close();
    server?.closeAllConnections();
  };
  t.teardown(() => {
    for (let i = 0; i < n; i++) kill(i);
    for (const s of services) s.wakeWatchers();
  });
  const urls = ports.map((p) => `http://[::1]:${p}`);
  const admin = new ControlClient(urls, { token: ADMIN });
  await admin.putSites(SITES);
  return {
    urls,
    publicKey: keys.publicKey,
    admin,
    /** Stopped outright: no new connection, every open one cut. */
    kill,
    /** Back on its port. */
    revive: (i: number) => listen(i, ports[i]),
  };
}

/** VM `i` (HoA 2001:db8:f::1xx) with a proven standby in site a, its activation, and a client of `url`. */
async function vm(admin: ControlClient, url: string, i: number) {
  const mac = `00:16:3e:00:01:${i.toString(16).padStart(2, "0")}`;
  const hoa = `2001:db8:f::${(0x100 + i).toString(16)}`;
  const { token } = await admin.registerVm(`vm${i}`, hoa, [mac]);
  const client = new ControlClient(url, { token });
  const activation = await client.registerStandby(`vm${i}`, slaac("2001:db8:a::/64", mac));
  return { hoa, activation, activate: () => client.activate(activation) };
}

/**
 * A correspondent following every replica, its watch loop started. As main.ts wires it, the client logs to the
 * agent's log (here with the time of each line).
 */
async function correspondent(t: ExecutionContext, r: Awaited<ReturnType<typeof replicas>>) {
  const nft = new FakeNft();
  const logged: Logged[] = [];
  const log = (event: string, fields: Record<string, unknown> = {}) =>
    logged.push({ event, fields: { ...fields, at: Date.now() } });
  const watch = new ControlClient(r.urls, { token: (await r.admin.registerPeer("cn")).token, log });
  const cn = new Correspondent({ nft, watch, publicKey: r.publicKey, log, pollMs: 2000, retryMs: 20 });
  const stop = new AbortController();
  t.teardown(() => stop.abort());
  const following = cn.follow(stop.signal);
  await until("the stream's first page", () => cn.lastRevision > 0);
  const done = async () => {
    stop.abort();
    await following;
  };
  return { nft, cn, logged, watch, done };
}

async function until(what: string, ok: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
    await sleep(10);
  }
}

test("correspondent: the replica it watches dies while activations go on through the other — every change, in order", async (t) => {
  const r = await replicas(t);
  const [one, two] = r.urls as [string, string];
  const vms = [];
  for (let i = 0; i < 20; i++) vms.push(await vm(r.admin, two, i));
  const { nft, cn, logged, done } = await correspondent(t, r);
  let last = 0;
  let killedAt = 0;
  for (const [i, v] of vms.entries()) {
    if (i === 8) {
      killedAt = Date.now();
      r.kill(0);
    }
    last = (await v.activate()).revision;
    await sleep(15);
  }
  await until("the last activation", () => cn.lastRevision >= last);
  await done();

  const learned = logged.filter((l) => l.event === "binding_learned");
  t.deepEqual(
    learned.map((l) => [l.fields.hoa, l.fields.locator, l.fields.seq]),
    vms.map((v) => [v.hoa, v.activation.locator, v.activation.seq]),
  );
  const failover = logged.filter((l) => l.event === "control_failover");
  t.deepEqual(
    failover.map((l) => [l.fields.from, l.fields.to]),
    [[one, two]],
  );
  t.false(
    logged.some((l) => l.event === "watch_lost"),
    "the loop never lost the watch: the client went on at the other replica",
  );
  const maps = await nft.mapElements("xenroam", "hoa_to_locator");
  t.deepEqual([...(maps ?? [])].sort(), vms.map((v) => [v.hoa, v.activation.locator]).sort());
  const learnedAfter = learned.find((l) => Number(l.fields.at) >= killedAt);
  t.log(
    `the watched replica stopped -> control_failover: ${Number(failover[0]?.fields.at) - killedAt} ms; -> next change learned: ${Number(learnedAfter?.fields.at) - killedAt} ms`,
  );
});

test("correspondent: every replica down — one watch_lost, no failover logged at each retry — and back at the first to return", async (t) => {
  const r = await replicas(t);
  const two = r.urls[1] as string;
  const v = await vm(r.admin, two, 1);
  const { cn, logged, watch, done } = await correspondent(t, r);
  r.kill(0);
  r.kill(1);
  await sleep(1500); // retries, backing off: 40, 80, 160, 320, 640 ms
  const lost = logged.filter((l) => l.event === "watch_lost");
  t.is(lost.length, 1);
  t.regex(
    String(lost[0]?.fields.error),
    /^no control server answered GET \/v1\/bindings \(control server http:\/\/\[::1\]:\d+: .*; control server http:\/\/\[::1\]:\d+: .*ECONNREFUSED.*\)$/,
  );
  t.is(logged.filter((l) => l.event === "control_failover").length, 1, "once, when the watched one died");

  await r.revive(1);
  const { revision } = await v.activate();
  await until("the activation", () => cn.lastRevision >= revision);
  await done();
  const resumed = logged.find((l) => l.event === "watch_resumed");
  t.true(
    typeof resumed?.fields.downMs === "number" && resumed.fields.downMs >= 1500,
    JSON.stringify(resumed),
  );
  t.like(
    logged.find((l) => l.event === "binding_learned"),
    {
      fields: { hoa: v.hoa, locator: v.activation.locator, via: "watch" },
    },
  );
  t.is(watch.base, two);
});

test("mobile node: registration and activation go to whichever replica answers, at start and at a move", async (t) => {
  const r = await replicas(t);
  const [one, two] = r.urls as [string, string];
  const macA = "00:16:3e:00:00:01"; // eth0's (guestNetlink)
  const macB = "00:16:3e:00:00:02"; // eth1's
  const hoa = "2001:db8:f::5";
  const { token } = await r.admin.registerVm("vm", hoa, [macA, macB]);
  const logged: Logged[] = [];
  const log = (event: string, fields: Record<string, unknown> = {}) => logged.push({ event, fields });
  const netlink = guestNetlink();
  const moaA = slaac("2001:db8:a::/64", macA);
  const moaB = slaac("2001:db8:b::/64", macB);
  netlink.seedAddress("eth0", `${moaA}/64`);
  let saved: MobileState | undefined;
  const announced: SignedBinding[] = [];
  const mobile = new MobileNode(
    { vm: "vm", hoa },
    {
      netlink,
      nft: new FakeNft(),
      control: new ControlClient([one, two], { token, log }),
      announce: async (b) => void announced.push(b),
      state: { load: () => saved, save: (s) => (saved = s), remove: () => (saved = undefined) },
      log,
      retryMs: [20, 20, 20],
      carrierWaitMs: 50,
    },
  );
  // Boot with the first replica down: the first locator registered and activated through the second.
  r.kill(0);
  await mobile.start(async () => "eth0");
  await mobile.settled();
  t.like(await r.admin.binding(hoa), { active: moaA, seq: 1 });
  // A move with the second down and the first back: step 2 and step 4 go to the first.
  await r.revive(0);
  r.kill(1);
  const standby = await mobile.prepared("m1", "eth0", { ifname: "eth1", moa: moaB });
  t.is(standby?.locator, moaB);
  netlink.setCarrier("eth1", true);
  await mobile.switched("m1", "eth1");
  await mobile.settled();
  t.like(await r.admin.binding(hoa), { active: moaB, seq: standby?.seq });
  t.deepEqual(
    logged
      .filter((l) => l.event === "control_failover")
      .map((l) => [l.fields.from, l.fields.to, l.fields.path]),
    [
      [one, two, "/v1/vms/vm/standby"],
      [two, one, "/v1/vms/vm/standby"],
    ],
  );
  t.deepEqual(
    logged.filter((l) => l.event === "binding_activated").map((l) => l.fields.seq),
    [1, standby?.seq],
  );
  t.false(logged.some((l) => l.event === "activation_retry" || l.event === "standby_unregistered"));
});

const MAIN = fileURLToPath(new URL("../src/main.js", import.meta.url));

function agent(...args: string[]): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [MAIN, ...args], { timeout: 10_000 }, (err, _stdout, stderr) =>
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stderr }),
    );
  });
}

test("--control: repeatable, or URLs separated by commas, each checked before anything else", async (t) => {
  const several = await agent(
    "--correspondent",
    "--control",
    "https://[2001:db8:c::1]:7360,https://[2001:db8:c::2]:7360",
    "--control",
    "https://[2001:db8:c::3]:7360",
  );
  t.is(several.code, 2);
  t.regex(several.stderr, /--correspondent needs --public-key FILE/, "the URLs were taken");
  const bad = await agent(
    "--correspondent",
    "--control",
    "https://[2001:db8:c::1]:7360,ftp://[2001:db8:c::2]",
  );
  t.is(bad.code, 1, "as any option's bad argument (--peer, --hoa)");
  t.regex(
    bad.stderr,
    /--control <url>.*"ftp:\/\/\[2001:db8:c::2\]": the control server is reached over http:\/\/ or https:\/\//s,
  );
});

// The mobility layer in the agents, with fakes: the mobile node through steps 2 and 4 (driven by the agent
// core), and the correspondent's two feeds (watch stream, signed bindings) and its refusals.
import test from "ava";
import {
  type BindingRecord,
  type Change,
  type Standby,
  generateSigningKeys,
  type SignedBinding,
  signBinding,
} from "@xenroam/control";
import { FakeNft } from "@xenroam/mobility";
import { encodeMessage } from "@xenroam/protocol";
import { guestNetlink, MemoryChannel, request } from "./support.js";
import {
  Agent,
  type ControlApi,
  Correspondent,
  MobileNode,
  type MobilePorts,
  type MobileState,
} from "../src/index.js";

const HOA = "2001:db8:f::5";
const MOA_A = "2001:db8:a::5";
const MOA_B = "2001:db8:b:0:216:3eff:fe00:2";
const keys = generateSigningKeys();
const intruder = generateSigningKeys();

class FakeControl implements ControlApi {
  seq = 0;
  readonly calls: string[] = [];
  down = false;
  /** What the server answers the next activation or withdrawal with instead (409s, with their code). */
  activateFails: (Error & { status?: number; code?: string }) | undefined;
  withdrawFails: (Error & { status?: number }) | undefined;
  async registerStandby(vm: string, locator: string): Promise<SignedBinding> {
    this.calls.push(`standby ${locator}`);
    if (this.down) throw new Error("control server unreachable");
    return signBinding(keys.privateKey, {
      vm,
      hoa: HOA,
      locator,
      seq: this.seq + 1,
      expiresAt: Date.now() + 60_000,
    });
  }
  async withdrawStandby(_vm: string, locator: string) {
    this.calls.push(`withdraw ${locator}`);
    if (this.down) throw new Error("control server unreachable");
    if (this.withdrawFails) throw this.withdrawFails;
    return { withdrawn: true };
  }
  sitesRead = 0;
  async sites() {
    this.sitesRead += 1;
    return {
      sites: [
        { name: "a", prefix: "2001:db8:a::/64", gateway: { linkLocal: "fe80::a:1" } },
        { name: "b", prefix: "2001:db8:b::/64", gateway: { linkLocal: "fe80::b:1" } },
      ],
    };
  }
  async activate(b: SignedBinding) {
    this.calls.push(`activate ${b.locator} ${b.seq}`);
    if (this.activateFails) throw this.activateFails;
    this.seq = b.seq;
    return { revision: b.seq };
  }
}

function mobileGuest(state?: MobileState, extra: Partial<MobilePorts> = {}) {
  const netlink = guestNetlink();
  netlink.seedAddress("eth0", `${MOA_A}/64`);
  const nft = new FakeNft();
  const control = new FakeControl();
  const announced: SignedBinding[] = [];
  const announcedAt: number[] = [];
  const order: string[] = [];
  let saved = state;
  const events: string[] = [];
  const logged: { event: string; fields?: Record<string, unknown> }[] = [];
  const log = (e: string, f?: Record<string, unknown>) => {
    logged.push({ event: e, ...(f ? { fields: f } : {}) });
    events.push(typeof f?.reason === "string" ? `${e}: ${f.reason}` : e);
  };
  const mobile = new MobileNode(
    { vm: "vm", hoa: HOA },
    {
      netlink,
      nft,
      control,
      announce: async (b) => {
        order.push(`announce ${b.seq}`);
        announced.push(b);
        announcedAt.push(Date.now());
      },
      state: { load: () => saved, save: (s) => (saved = s), remove: () => (saved = undefined) },
      log,
      retryMs: [1, 1],
      ...extra,
    },
  );
  const channel = new MemoryChannel();
  const agent = new Agent({ netlink, channel, log, mobility: mobile });
  return {
    netlink,
    nft,
    control,
    announced,
    announcedAt,
    order,
    mobile,
    agent,
    channel,
    events,
    logged,
    saved: () => saved,
  };
}

/** A mobile guest whose node has started (HoA on lo, first locator activated). */
async function startedGuest() {
  const g = mobileGuest();
  await g.mobile.start(() => g.agent.adoptPrimary());
  await g.mobile.settled();
  return g;
}

/** Step 2 for `request`: eth1 takes MOA_B by SLAAC shortly after it comes up. */
async function prepareStandby(g: ReturnType<typeof mobileGuest>) {
  g.channel.keys.set("request", encodeMessage(request));
  setTimeout(() => g.netlink.seedAddress("eth1", `${MOA_B}/64`), 5);
  await g.agent.converge("test");
}

test("a prepare reads the sites document again, at a random point of the spread after it, not at once", async (t) => {
  const g = mobileGuest(undefined, { sitesRefreshSpreadMs: 200, random: () => 0.5 });
  await g.mobile.start(() => g.agent.adoptPrimary());
  await g.mobile.settled();
  await new Promise((r) => setTimeout(r, 20));
  const atStart = g.control.sitesRead;
  await prepareStandby(g);
  t.is(g.saved()?.pending?.migration, request.id, "prepared");
  t.is(g.control.sitesRead, atStart, "not in the prepare's burst");
  await new Promise((r) => setTimeout(r, 150));
  t.is(g.control.sitesRead, atStart + 1, "100 ms in (half the spread): read once");
});

test("mobile node: the HoA on lo, the primary adopted with the HoA as source, the first locator activated", async (t) => {
  const g = mobileGuest();
  await g.mobile.start(() => g.agent.adoptPrimary());
  await g.mobile.settled();
  const hoaAt = g.netlink.effects.indexOf(`addr add ${HOA}/128 dev lo nodad`);
  const routeAt = g.netlink.effects.indexOf(`route add default via fe80::a:1 dev eth0 src ${HOA} metric 64`);
  t.true(hoaAt >= 0 && routeAt > hoaAt, "the HoA is local before a route prefers it");
  t.true(g.netlink.effects.includes("route del default dev eth0 metric 1024"));
  t.true(g.nft.scripts.at(-1)?.includes(`oifname map { "eth0" : ${MOA_A} }`));
  t.deepEqual(g.control.calls, [`standby ${MOA_A}`, `activate ${MOA_A} 1`]);
  t.is(g.announced.length, 1);
  // A restart converges: no new registration, the same table.
  const again = mobileGuest(g.saved());
  await again.mobile.start(() => again.agent.adoptPrimary());
  t.deepEqual(again.control.calls, []);
  t.is(again.nft.scripts.at(-1), g.nft.scripts.at(-1));
});

test("mobile node: step 2 registers the standby; step 4 announces to correspondents before the server, once", async (t) => {
  const g = await startedGuest();
  g.control.calls.length = 0;
  await prepareStandby(g);
  t.true(g.netlink.effects.includes(`route add default via fe80::b:1 dev eth1 src ${HOA} metric 2100`));
  t.true(
    g.nft.scripts.at(-1)?.includes(`ip6 daddr { ${MOA_A}, ${MOA_B} } notrack`),
    "the standby locator is accepted on ingress before the switch",
  );
  t.deepEqual(g.control.calls, [`standby ${MOA_B}`]);
  t.is(g.saved()?.pending?.binding.seq, 2);

  const scriptsBefore = g.nft.scripts.length;
  g.channel.keys.set("arrived", encodeMessage({ v: 1, id: "m1", host: "hostb" }));
  await g.agent.converge("test");
  t.is(g.nft.scripts.length, scriptsBefore, "no nftables change on the switch's critical path");
  t.deepEqual(
    g.announced.map((b) => [b.locator, b.seq]),
    [
      [MOA_A, 1],
      [MOA_B, 2],
    ],
  );
  await g.mobile.settled();
  t.deepEqual(g.control.calls, [`standby ${MOA_B}`, `activate ${MOA_B} 2`]);
  await g.agent.converge("again");
  await g.mobile.switched("m1", "eth1");
  await g.mobile.settled();
  t.is(g.announced.length, 2, "handed out once per migration");
});

test("mobile node: step 4 announces once the new primary has a carrier (a Xen frontend reconnects after resume)", async (t) => {
  const g = await startedGuest();
  await prepareStandby(g);
  g.netlink.setCarrier("eth1", false);
  let carrierAt = 0;
  setTimeout(() => {
    carrierAt = Date.now();
    g.netlink.setCarrier("eth1", true);
  }, 80);
  g.channel.keys.set("arrived", encodeMessage({ v: 1, id: "m1", host: "hostb" }));
  await g.agent.converge("test");
  t.is(g.announced.at(-1)?.locator, MOA_B);
  const at = g.announcedAt.at(-1) ?? 0;
  t.true(carrierAt > 0 && at >= carrierAt, "nothing sent into a link without carrier");
  // The agent's reflex waited for it (before the rest of the switch), so the mobility layer need not.
  const down = g.logged.find((l) => l.event === "old_primary_down");
  t.true(typeof down?.fields?.carrierMs === "number" && down.fields.carrierMs >= 50, "the reflex waited");
});

test("mobile node: with the server down at step 2 the prepare still succeeds; the switch activates late", async (t) => {
  const g = await startedGuest();
  g.control.down = true;
  await prepareStandby(g);
  t.like(JSON.parse(g.channel.keys.get("answer") ?? "{}"), { status: "prepared" });
  t.true(g.events.includes("standby_unregistered"));
  g.control.down = false;
  g.channel.keys.set("arrived", encodeMessage({ v: 1, id: "m1", host: "hostb" }));
  await g.agent.converge("test");
  await g.mobile.settled();
  t.is(g.announced.at(-1)?.locator, MOA_B);
  t.true(g.control.calls.includes(`activate ${MOA_B} 2`));
  await g.mobile.stop();
  t.is(g.nft.scripts.at(-1), "table ip6 xenroam {}\ndelete table ip6 xenroam\n");
});

function record(partial: Partial<BindingRecord> & { hoa: string }): BindingRecord {
  return { vm: "vm", active: undefined, seq: 0, issued: 0, locators: [], standbys: [], ...partial };
}

function correspondent() {
  const nft = new FakeNft();
  const refused: string[] = [];
  const cn = new Correspondent({
    nft,
    publicKey: keys.publicKey,
    watch: { changes: async () => ({ revision: 0, changes: [] }) },
    canonicalDelayMs: 20,
    // Every refusal logged one by one here, to read each reason (the default window logs a few and counts).
    refusalLogMs: 0,
    log: (e, f) => {
      if (e === "binding_refused") refused.push(String(f?.reason));
    },
  });
  return { nft, cn, refused };
}

const signed = (o: Partial<SignedBinding> = {}, key = keys.privateKey) =>
  signBinding(key, { vm: "vm", hoa: HOA, locator: MOA_B, seq: 2, expiresAt: Date.now() + 60_000, ...o });

test("correspondent: the stream feeds the maps; a signed binding switches at once; refusals name the rule", async (t) => {
  const { nft, cn, refused } = correspondent();
  const changes: Change[] = [
    // MOA_B is a proven standby, its activation issued at sequence 2: the only direct binding taken.
    {
      revision: 3,
      binding: record({
        hoa: HOA,
        active: MOA_A,
        seq: 1,
        issued: 2,
        locators: [MOA_A, MOA_B],
        standbys: [{ locator: MOA_B, seq: 2, proven: true }],
      }),
    },
    {
      revision: 4,
      binding: record({
        hoa: "2001:db8:f::6",
        vm: "other",
        active: "2001:db8:a::6",
        seq: 1,
        locators: ["2001:db8:a::6"],
      }),
    },
  ];
  await cn.onChanges(changes);
  t.is(cn.lastRevision, 4);
  t.true(nft.scripts.at(-1)?.includes(`${HOA} : ${MOA_A}`));

  t.false((await cn.onSigned(signed({}, intruder.privateKey))).ok);
  t.false((await cn.onSigned(signed({ seq: 1 }))).ok);
  t.false((await cn.onSigned(signed({ expiresAt: Date.now() - 1 }))).ok);
  t.false((await cn.onSigned(signed({ vm: "other" }))).ok);
  t.false((await cn.onSigned(signed({ hoa: "2001:db8:f::6" }))).ok, "vm may not bind other's HoA");
  t.false((await cn.onSigned(signed({ locator: "2001:db8:b::99" }))).ok, "not a standby");
  t.false((await cn.onSigned(signed({ seq: 3 }))).ok, "not the sequence issued for it");
  t.is(refused.length, 7);
  t.regex(refused[0] ?? "", /not the server's key/);
  t.regex(refused[5] ?? "", /not a current standby/);
  t.regex(refused[6] ?? "", /issued sequence 2, not 3/);
  t.regex(refused[1] ?? "", /replayed or stale/);
  t.regex(refused[2] ?? "", /expired/);
  t.regex(refused[3] ?? "", /belongs to vm, not other/);
  t.regex(refused[4] ?? "", /belongs to other, not vm/);
  t.true(nft.scripts.at(-1)?.includes(`${HOA} : ${MOA_A}`), "nothing refused reached the maps");

  const ok = signed();
  t.true((await cn.onSigned(ok)).ok);
  t.is(
    nft.scripts.at(-1),
    `insert rule ip6 xenroam egress ip6 daddr ${HOA} notrack ip6 daddr set ${MOA_B}\n`,
    "the switch itself only adds an override rule (the standby was accepted on ingress already)",
  );
  await new Promise((r) => setTimeout(r, 60)); // the canonical table follows (canonicalDelayMs)
  const script = nft.scripts.at(-1) ?? "";
  t.true(script.includes(`${HOA} : ${MOA_B}`), "egress to the new locator");
  t.true(
    script.includes(`${MOA_A} : ${HOA}`) && script.includes(`${MOA_B} : ${HOA}`),
    "both accepted on ingress",
  );
  const count = nft.scripts.length;
  t.true((await cn.onSigned(ok)).ok, "a repeated copy of the active binding is accepted quietly");
  t.is(nft.scripts.length, count, "and changes nothing");
  t.false(
    (await cn.onSigned(signed({ locator: "2001:db8:d::1" }))).ok,
    "another locator at that seq is a replay",
  );

  // The stream's older view (the server had not heard of seq 2 yet) does not undo the direct binding.
  await cn.onChanges([
    { revision: 5, binding: record({ hoa: HOA, active: MOA_A, seq: 1, locators: [MOA_A, "2001:db8:c::5"] }) },
  ]);
  t.true((nft.scripts.at(-1) ?? "").includes(`${HOA} : ${MOA_B}`));
  t.true((nft.scripts.at(-1) ?? "").includes(`2001:db8:c::5 : ${HOA}`), "but learns the new standby");
  await cn.stop();
  t.is(nft.scripts.at(-1), "table ip6 xenroam {}\ndelete table ip6 xenroam\n");
});

test("correspondent: the watch resumes after the last revision across failures", async (t) => {
  const seen: number[] = [];
  let calls = 0;
  const stop = new AbortController();
  const cn = new Correspondent({
    nft: new FakeNft(),
    publicKey: keys.publicKey,
    log: () => {},
    retryMs: 1,
    watch: {
      changes: async (since) => {
        seen.push(since);
        calls += 1;
        if (calls === 1)
          return {
            revision: 7,
            changes: [
              { revision: 7, binding: record({ hoa: HOA, active: MOA_A, seq: 1, locators: [MOA_A] }) },
            ],
          };
        if (calls === 2) throw new Error("server restarting");
        stop.abort();
        return { revision: 7, changes: [] };
      },
    },
  });
  await cn.follow(stop.signal);
  t.deepEqual(seen, [0, 7, 7]);
});

test("mobile node: an abort drops the standby locator from the rewrite and forgets its activation", async (t) => {
  const g = await startedGuest();
  await prepareStandby(g);
  t.true(g.nft.scripts.at(-1)?.includes(MOA_B));
  g.channel.keys.set("request", encodeMessage({ v: 1, kind: "abort", id: "m1" }));
  await g.agent.converge("abort");
  const last = g.nft.scripts.at(-1) ?? "";
  t.true(last.includes(`oifname map { "eth0" : ${MOA_A} }`), last);
  t.false(last.includes(MOA_B));
  t.is(g.saved()?.pending, undefined);
  // The server forgets the standby too (in the background), so correspondents stop accepting packets from it.
  await g.mobile.settled();
  t.is(g.control.calls.at(-1), `withdraw ${MOA_B}`);
});

test("mobile node: an abort with the control server down still undoes the prepare", async (t) => {
  const g = await startedGuest();
  await prepareStandby(g);
  g.control.down = true;
  g.channel.keys.set("request", encodeMessage({ v: 1, kind: "abort", id: "m1" }));
  await g.agent.converge("abort");
  t.like(g.channel.json("answer"), { id: "m1", status: "aborted" });
  t.false((g.nft.scripts.at(-1) ?? "").includes(MOA_B));
  await g.mobile.settled();
  t.true(g.events.includes("standby_withdraw_failed"));
});

const conflict = (message: string, code?: string) =>
  Object.assign(new Error(message), { status: 409, ...(code ? { code } : {}) });

test("mobile node: step 2's answer hands Dom0 the pre-signed activation; Dom0's relay of it counts as activated", async (t) => {
  const g = await startedGuest();
  await prepareStandby(g);
  const answer = g.channel.json("answer") as { activation?: SignedBinding; moa?: string };
  t.like(answer, {
    status: "prepared",
    moa: MOA_B,
    activation: { locator: MOA_B, seq: 2, vm: "vm", hoa: HOA },
  });
  t.deepEqual(answer.activation, g.saved()?.pending?.binding, "exactly as the server returned it");
  // Dom0 relayed it while the VM was paused: the server answers the guest's own copy "already active".
  g.control.activateFails = conflict("replayed or stale: sequence 2 is not after 2", "already-active");
  g.channel.keys.set("arrived", encodeMessage({ v: 1, id: "m1", host: "hostb" }));
  await g.agent.converge("test");
  await g.mobile.settled();
  t.is(g.announced.at(-1)?.seq, 2, "correspondents still get the datagrams");
  t.true(g.events.includes("binding_activated"));
  t.false(g.events.some((e) => e.startsWith("binding_refused")));
});

test("mobile node: a standby still active at the abort (relayed, never rolled back) — the guest takes its locator back", async (t) => {
  const g = await startedGuest();
  await prepareStandby(g);
  g.control.calls.length = 0;
  g.control.withdrawFails = conflict(`${MOA_B} is the active locator of vm; only standbys can be withdrawn`);
  g.channel.keys.set("request", encodeMessage({ v: 1, kind: "abort", id: "m1" }));
  await g.agent.converge("abort");
  await g.mobile.settled();
  t.deepEqual(g.control.calls, [`withdraw ${MOA_B}`, `standby ${MOA_A}`, `activate ${MOA_A} 2`]);
  t.deepEqual(
    g.announced.map((b) => [b.locator, b.seq]).at(-1),
    [MOA_A, 2],
    "correspondents are sent the primary's locator again",
  );
  // A plain failure to reach the server is not that: nothing is re-activated.
  const h = await startedGuest();
  await prepareStandby(h);
  h.control.calls.length = 0;
  h.control.withdrawFails = new Error("control server unreachable");
  h.channel.keys.set("request", encodeMessage({ v: 1, kind: "abort", id: "m1" }));
  await h.agent.converge("abort");
  await h.mobile.settled();
  t.deepEqual(h.control.calls, [`withdraw ${MOA_B}`]);
});

test("correspondent: a rollback from the stream beats the VM's late datagram for the failed move, in either order", async (t) => {
  const stream = (seq: number, active: string, locators: string[], standbys: Standby[] = []): Change[] => [
    { revision: seq + 10, binding: record({ hoa: HOA, active, seq, issued: seq, locators, standbys }) },
  ];
  const relayed = signed({ locator: MOA_B, seq: 2 });
  const standby = [{ locator: MOA_B, seq: 2, proven: true }];
  // The stream brings the relay (seq 2) and then the rollback (seq 3); the datagram comes last.
  const late = correspondent();
  await late.cn.onChanges(stream(1, MOA_A, [MOA_A, MOA_B], standby));
  await late.cn.onChanges(stream(2, MOA_B, [MOA_B, MOA_A]));
  await late.cn.onChanges(stream(3, MOA_A, [MOA_A, MOA_B]));
  t.false((await late.cn.onSigned(relayed)).ok);
  t.regex(late.refused.at(-1) ?? "", /replayed or stale: sequence 2 is not after 3/);
  t.true((late.nft.scripts.at(-1) ?? "").includes(`${HOA} : ${MOA_A}`));
  // The datagram comes first (applied at once), then the stream's rollback.
  const early = correspondent();
  await early.cn.onChanges(stream(1, MOA_A, [MOA_A, MOA_B], standby));
  t.true((await early.cn.onSigned(relayed)).ok);
  await early.cn.onChanges(stream(3, MOA_A, [MOA_A, MOA_B]));
  t.deepEqual(early.cn.bindings(), [{ hoa: HOA, active: MOA_A, locators: [MOA_A, MOA_B] }]);
  t.true((early.nft.scripts.at(-1) ?? "").includes(`${HOA} : ${MOA_A}`));
  await late.cn.stop();
  await early.cn.stop();
});

test("roam: after a move without the method, the primary's newest address becomes the locator and is bound", async (t) => {
  const g = await startedGuest();
  g.control.calls.length = 0;
  const before = g.announced.length;
  // Nothing moved: the locator's own address is the newest.
  await g.agent.roam("test");
  t.deepEqual(g.control.calls, [], "no roam while the locator is what the RAs refresh");
  // A plain migration to site b: its router's RA makes an address there (newer than site a's last RA);
  // site a's address stays, no longer refreshed.
  const MOVED = "2001:db8:b:0:5e1:9a2c:7b30:44d1";
  g.netlink.seedAddress("eth0", `${MOVED}/64`, { refreshedCs: Math.floor(Date.now() / 10) + 400 });
  await g.agent.roam("test");
  await g.mobile.settled();
  t.true(
    g.netlink.effects.includes(`route add default via fe80::b:1 dev eth0 src ${HOA} metric 64`),
    "the default route goes to site b's gateway (the sites document)",
  );
  t.true(g.netlink.effects.includes("neigh flush dev eth0"), "no MAC cached at the old site is used");
  t.true(g.nft.scripts.at(-1)?.includes(`oifname map { "eth0" : ${MOVED} }`), "egress rewritten to it");
  t.deepEqual(g.control.calls, [`standby ${MOVED}`, `activate ${MOVED} 2`]);
  t.is(g.announced.length, before + 1, "correspondents are told directly");
  t.true(g.events.includes("roamed"));
  // Converged: once more changes nothing.
  g.control.calls.length = 0;
  await g.agent.roam("test");
  await g.mobile.settled();
  t.deepEqual(g.control.calls, []);
});

test("roam: the control server down when the guest moved: the rewrite at once, the binding when it is back", async (t) => {
  const g = await startedGuest();
  g.control.calls.length = 0;
  const MOVED = "2001:db8:b:0:216:3eff:fe00:1";
  await g.mobile.locate("eth0"); // the sites document is read while the server answers
  g.control.down = true;
  g.netlink.seedAddress("eth0", `${MOVED}/64`, { refreshedCs: Math.floor(Date.now() / 10) + 400 });
  await g.agent.roam("test");
  await g.mobile.settled();
  t.true(g.nft.scripts.at(-1)?.includes(`oifname map { "eth0" : ${MOVED} }`));
  t.is(g.saved()?.unbound, MOVED, "kept to be bound later");
  g.control.down = false;
  await g.agent.roam("timer");
  await g.mobile.settled();
  t.is(g.saved()?.unbound, undefined);
  t.deepEqual(g.control.calls.slice(-2), [`standby ${MOVED}`, `activate ${MOVED} 2`]);
});

test("roam: an address in no site of the control server is not taken", async (t) => {
  const g = await startedGuest();
  g.control.calls.length = 0;
  g.netlink.seedAddress("eth0", "2001:db8:99:0:216:3eff:fe00:1/64", {
    refreshedCs: Math.floor(Date.now() / 10) + 400,
  });
  await g.agent.roam("test");
  t.deepEqual(g.control.calls, []);
  t.true(g.events.some((e) => e.startsWith("roam_unknown_site")));
});

test("roam: one RA refreshing two prefixes is no move; a temporary address is never taken", async (t) => {
  const g = await startedGuest();
  g.control.calls.length = 0;
  const now = Math.floor(Date.now() / 10) + 100;
  g.netlink.seedAddress("eth0", `${MOA_A}/64`, { refreshedCs: now });
  g.netlink.seedAddress("eth0", "2001:db8:7:0:216:3eff:fe00:1/64", { refreshedCs: now + 1 });
  g.netlink.seedAddress("eth0", "2001:db8:b:0:9c1e:2b77:d01:5a3f/64", {
    temporary: true,
    refreshedCs: now + 500,
  });
  await g.agent.roam("test");
  t.deepEqual(g.control.calls, []);
});

test("roam: never while a method migration is being prepared", async (t) => {
  const g = await startedGuest();
  g.control.calls.length = 0;
  g.netlink.seedAddress("eth0", "2001:db8:b:0:216:3eff:fe00:1/64", {
    refreshedCs: Math.floor(Date.now() / 10) + 400,
  });
  // A prepare whose RA never comes: the agent is "preparing" until it gives up (request.timeoutMs).
  g.channel.keys.set("request", encodeMessage({ ...request, timeoutMs: 800 }));
  const preparing = g.agent.converge("test");
  await new Promise((r) => setTimeout(r, 50));
  await g.agent.roam("test");
  t.deepEqual(g.control.calls, [], "no roam while preparing");
  await preparing;
  t.like(g.channel.json("answer"), { status: "error" });
  await g.agent.roam("test");
  await g.mobile.settled();
  t.true(g.control.calls.includes("standby 2001:db8:b:0:216:3eff:fe00:1"), "once the prepare is over");
});

test("roam while prepared: the periodic look waits for the arrival; an address another site's RA made is still taken", async (t) => {
  const g = await startedGuest();
  await prepareStandby(g);
  await g.mobile.settled();
  g.control.calls.length = 0;
  const MOVED = "2001:db8:b:0:5e1:9a2c:7b30:44d1";
  g.netlink.seedAddress("eth0", `${MOVED}/64`, { refreshedCs: Math.floor(Date.now() / 10) + 400 });
  const effects = g.netlink.effects.length;
  await g.agent.roam("timer");
  await g.mobile.settled();
  t.is(g.netlink.effects.length, effects, "the timer's look did nothing while armed");
  t.deepEqual(g.control.calls, []);
  const before = (await g.netlink.addresses("eth0")).map((a) => a.address);
  await g.agent.roam("address");
  await g.mobile.settled();
  t.true(g.events.includes("roamed"), "a move without the method is still converged on");
  const after = (await g.netlink.addresses("eth0")).map((a) => a.address);
  t.true(before.includes(MOA_A) && !after.includes(MOA_A), "the old site's address goes from the primary");
  t.true(after.includes(MOVED), "the new one stays");
});

test("correspondent under a flood of forged datagrams: cheap refusals first, few log lines, copies of the active binding not verified again, and the real binding still applied", async (t) => {
  const nft = new FakeNft();
  const logged: Array<[string, Record<string, unknown> | undefined]> = [];
  const cn = new Correspondent({
    nft,
    publicKey: keys.publicKey,
    watch: { changes: async () => ({ revision: 0, changes: [] }) },
    canonicalDelayMs: 20,
    log: (e, f) => logged.push([e, f]),
  });
  await cn.onChanges([
    {
      revision: 3,
      binding: record({
        hoa: HOA,
        active: MOA_A,
        seq: 1,
        issued: 2,
        locators: [MOA_A, MOA_B],
        standbys: [{ locator: MOA_B, seq: 2, proven: true }],
      }),
    },
  ]);
  const forged = { ...signed({ seq: 99 }), sig: "A".repeat(86) };
  const junk: unknown[] = [
    undefined,
    7,
    "x",
    [],
    { sig: 1 },
    { ...forged, seq: -1 },
    { ...forged, sig: "A".repeat(85) },
  ];
  const started = Date.now();
  for (let i = 0; i < 2000; i++) {
    const v = await cn.onSigned(
      (i % 10 === 0 ? junk[i % junk.length] : { ...forged, seq: 2 + i }) as SignedBinding,
      "2001:db8:66::1",
    );
    if (v.ok) return t.fail(`a forgery was taken: ${i}`);
  }
  const floodMs = Date.now() - started;
  const lines = logged.filter(([e]) => e === "binding_refused").length;
  t.is(lines, 1, "one line for the window, not one per datagram");
  cn.flushRefusals();
  const summary = logged.find(([e]) => e === "bindings_refused")?.[1];
  t.is(summary?.count, 1999);
  // The real binding goes through at once, then its copies cost no verification.
  const real = signed({ seq: 2 });
  t.true((await cn.onSigned(real)).ok);
  t.true(nft.scripts.some((s) => s.includes(`ip6 daddr ${HOA} notrack ip6 daddr set ${MOA_B}`)));
  const applied = nft.scripts.length;
  const copies = Date.now();
  for (let i = 0; i < 2000; i++) t.true((await cn.onSigned({ ...real }, "2001:db8:b::5")).ok);
  t.is(nft.scripts.length, applied, "the copies changed nothing");
  t.log(
    `2000 forgeries refused in ${floodMs} ms; 2000 copies of the active binding in ${Date.now() - copies} ms`,
  );
});

test("correspondent: the server's record supersedes a direct binding it no longer lists, or for a HoA that changed hands", async (t) => {
  const { cn, nft } = correspondent();
  const standby = (locator: string, seq: number) => ({ locator, seq, proven: true });
  await cn.onChanges([
    {
      revision: 1,
      binding: record({
        hoa: HOA,
        active: MOA_A,
        seq: 1,
        issued: 2,
        locators: [MOA_A, MOA_B],
        standbys: [standby(MOA_B, 2)],
      }),
    },
  ]);
  t.true((await cn.onSigned(signed({ locator: MOA_B, seq: 2 }))).ok, "the fast path");
  // The guest withdrew MOA_B (an abort) before the server heard of the direct binding: the server never
  // activated it, and no longer lists it.
  await cn.onChanges([
    { revision: 2, binding: record({ hoa: HOA, active: MOA_A, seq: 1, issued: 3, locators: [MOA_A] }) },
  ]);
  t.deepEqual(cn.bindings(), [{ hoa: HOA, active: MOA_A, locators: [MOA_A] }]);
  await new Promise((r) => setTimeout(r, 40));
  t.true((nft.scripts.at(-1) ?? "").includes(`${HOA} : ${MOA_A}`));
  t.false((await cn.onSigned(signed({ locator: MOA_B, seq: 2 }))).ok, "its copy is no longer taken");
  // The HoA re-registered to another VM: the new owner's record wins at once.
  await cn.onChanges([
    {
      revision: 3,
      binding: record({ hoa: HOA, vm: "newvm", active: undefined, seq: 4, issued: 4, locators: [] }),
    },
  ]);
  t.deepEqual(cn.bindings(), []);
  await cn.stop();
});

import test from "ava";
import { FakeNetlink } from "@xenroam/netlink";
import { LinuxStaging } from "../src/adapters/linux-staging.js";
import { encodeMessage, parseRequest, parseSites, type SignedActivation } from "@xenroam/protocol";
import {
  BusyError,
  Engine,
  FakeControl,
  FakeDom0Channel,
  FakeRadvd,
  FakeToolstack,
  type Journal,
  MemoryLocks,
  MemoryState,
  PrepareError,
  boundedAll,
  downtimeOf,
  planEvacuation,
  renderEvacuation,
} from "../src/index.js";

const SITES = parseSites({
  sites: [
    { name: "a", prefix: "2001:db8:a::/64", gateway: { linkLocal: "fe80::a:1", mac: "02:00:00:00:0a:01" } },
    { name: "b", prefix: "2001:db8:b::/64", gateway: { linkLocal: "fe80::b:1", mac: "02:00:00:00:0b:01" } },
  ],
  hosts: [
    { name: "hosta", site: "a" },
    { name: "hosta2", site: "a" },
    { name: "hostb", site: "b" },
  ],
});

type GuestMode = "answers" | "silent" | "malformed" | "refuses" | "mobile" | "escapes" | "elsewhere";

const MOA = "2001:db8:b:0:216:3eff:fe00:502";
/** What a mobile guest hands Dom0 with its answer: its pre-signed activation (the engine never verifies it). */
const ACTIVATION = {
  vm: "vm",
  hoa: "2001:db8:f::5",
  locator: MOA,
  seq: 7,
  expiresAt: 1e13,
  kid: "AAAAAAAAAAA",
  sig: "A".repeat(86),
};

function host(
  mode: GuestMode = "answers",
  options: {
    control?: boolean;
    activation?: Partial<typeof ACTIVATION>;
    /** Domids whose guest agent never answers, whatever `mode` says. */
    silent?: readonly number[];
  } = {},
) {
  const journal: Journal = [];
  const netlink = new FakeNetlink(["lo"]);
  netlink.seedLink("xenbr0", { kind: "bridge", up: true });
  netlink.seedLink("xrpark0", { kind: "bridge", up: true });
  const toolstack = new FakeToolstack(journal);
  for (const [vm, domid] of [
    ["vm", 5],
    ["vm2", 8],
  ] as const) {
    netlink.seedLink(`vif${domid}.0`, { kind: "veth", up: true, master: "xenbr0" });
    netlink.seedLink(`vif${domid}.1`, { kind: "veth", up: true, master: "xrpark0" });
    toolstack.addVm(vm, "hosta", domid, [
      { devid: 0, mac: `00:16:3e:00:0${domid}:01`, ifname: `vif${domid}.0`, bridge: "xenbr0" },
      { devid: 1, mac: `00:16:3e:00:0${domid}:02`, ifname: `vif${domid}.1`, bridge: "xrpark0" },
    ]);
  }
  const channel = new FakeDom0Channel(journal);
  channel.guest = (domid, key, value) => {
    if (key !== "request" || mode === "silent" || options.silent?.includes(domid)) return;
    const r = parseRequest(value);
    if (!r.ok || r.value.kind !== "prepare") return;
    const id = r.value.id;
    const answer =
      mode === "malformed"
        ? '{"v":1,"status":"prepared","moa":"not-an-address"}'
        : mode === "refuses"
          ? encodeMessage({ v: 1, id, status: "error", reason: "no interface has MAC x" })
          : mode === "escapes"
            ? encodeMessage({
                v: 1,
                id,
                status: "error",
                reason: "\u001b[2J\u001b[31mowned\nxenroam: all good\u202e",
              })
            : encodeMessage({
                v: 1,
                id,
                status: "prepared",
                moa: mode === "elsewhere" ? "2001:db8:a::502" : MOA,
                ifname: "eth1",
                ...(mode === "mobile" ? { activation: { ...ACTIVATION, ...options.activation } } : {}),
              });
    setTimeout(() => channel.guestWrite(domid, "answer", answer), 5);
  };
  const radvd = new FakeRadvd(journal);
  const state = new MemoryState();
  const control = new FakeControl(journal);
  const logged: string[] = [];
  const staging = new LinuxStaging(netlink, "xrpark0");
  // Shared by every engine of this host, as the kernel's locks are by every xenroam process of a Dom0.
  const locks = new MemoryLocks();
  const another = () =>
    new Engine({
      host: "hosta",
      bridges: { real: "xenbr0", parking: "xrpark0" },
      staging,
      radvd,
      channel,
      toolstack,
      sites: SITES,
      state,
      locks,
      log: (event) => logged.push(event),
      now: () => Date.now(),
      ...(options.control ? { control } : {}),
    });
  const engine = another();
  return { engine, another, locks, netlink, toolstack, channel, radvd, state, journal, control, logged };
}

test("migrate with the method: staging bridge impersonates the gateway, vifs swapped, cleanup after the move", async (t) => {
  const h = host();
  // radvd starts on a bridge that already has the vif as a port (a carrier), never on an empty one.
  const start = h.radvd.start.bind(h.radvd);
  let vifOnBridgeAtRadvdStart = false;
  h.radvd.start = async (name, config) => {
    vifOnBridgeAtRadvdStart =
      (await h.netlink.link("vif5.1"))?.master === (await h.netlink.link(name))?.index;
    return start(name, config);
  };
  const report = await h.engine.migrate("vm", "hostb", { migrationId: "m1" });
  t.true(vifOnBridgeAtRadvdStart);
  t.is(report.method, "dual-interface");
  t.is(report.moa, "2001:db8:b:0:216:3eff:fe00:502");
  t.is(report.pausedMs, 50);
  t.deepEqual(h.netlink.effects, [
    "link add xr-b address 02:00:00:00:0b:01 type bridge mcast_snooping 0",
    "sysctl -w net.ipv6.conf.xr-b.addr_gen_mode=1",
    "sysctl -w net.ipv6.conf.xr-b.accept_dad=0",
    "sysctl -w net.ipv6.conf.xr-b.accept_ra=0",
    "link set xr-b up",
    "addr add fe80::b:1/64 dev xr-b nodad",
    "link set vif5.1 master xr-b up",
    "link set dev vif5.1 type bridge_slave isolated on",
    "link del xr-b",
  ]);
  const conf = h.radvd.configs.get(1000) ?? "";
  t.regex(conf, /interface xr-b/);
  t.regex(conf, /prefix 2001:db8:b::\/64/);
  t.regex(conf, /AdvRASrcAddress \{\n {4}fe80::b:1;/);
  const req = h.toolstack.requests[0];
  t.deepEqual(
    req?.bridges,
    { 0: "xrpark0", 1: "xenbr0" },
    "step 3: secondary on the real bridge, primary parked",
  );
  // xl does not carry the guest's data/ directory: the request and the guest's answer go along with the arrival.
  t.deepEqual(req?.guestWrites, {
    request: (await h.channel.read(5, "request")) ?? "missing",
    answer: (await h.channel.read(5, "answer")) ?? "missing",
    arrived: encodeMessage({ v: 1, id: "m1", host: "hostb" }),
  });
  // The old primary stays unplugged at the destination until the guest reports the switch for this migration.
  t.deepEqual(req?.hold?.devids, [0]);
  t.is(req?.hold?.key, "status");
  t.true(req?.hold?.released(encodeMessage({ v: 1, phase: "switched", id: "m1", primary: "eth1" })));
  t.false(req?.hold?.released(encodeMessage({ v: 1, phase: "switched", id: "older", primary: "eth1" })));
  t.false(req?.hold?.released(encodeMessage({ v: 1, phase: "prepared", id: "m1" })));
  // The destination announces the new primary's address (the MoA the guest answered with) to the site's router.
  const answered = JSON.parse((await h.channel.read(5, "answer")) ?? "{}") as { moa?: string };
  t.deepEqual(req?.announce, { moa: answered.moa ?? "missing", mac: "00:16:3e:00:05:02", bridge: "xenbr0" });
  // radvd's goodbye RA must not reach the guest: it stops only after the VM (and its vif) left.
  const migrated = h.journal.findIndex((j) => j.startsWith("toolstack migrate"));
  const stopped = h.journal.findIndex((j) => j.startsWith("radvd stop"));
  t.true(migrated >= 0 && stopped > migrated, h.journal.join("\n"));
  t.deepEqual(h.state.state, { staging: {}, vms: {} }, "no prepare state left");
  t.is(h.radvd.count, 0);
});

test("a prepare that fails while the staging radvd is gone says so", async (t) => {
  const h = host("silent");
  setTimeout(() => h.radvd.crashAll(), 50);
  const report = await h.engine.migrate("vm", "hostb", { migrationId: "m3", timeoutMs: 300 });
  t.is(report.method, "plain");
  t.regex(report.fallback ?? "", /did not answer within 300 ms.* \(radvd on xr-b had exited: its log stays/);
  t.deepEqual(h.state.state, { staging: {}, vms: {} }, "still nothing of the prepare left");
});

test("xenstore failing after the prepare, before the move: the prepare is undone, nothing migrates", async (t) => {
  const h = host();
  await h.engine.prepare("vm", "hostb", { migrationId: "m4" });
  const read = h.channel.read.bind(h.channel);
  h.channel.read = async (domid, key) => {
    if (key === "status") throw new Error("xenstore READ status: EIO");
    return read(domid, key);
  };
  await t.throwsAsync(h.engine.migrate("vm", "hostb"), { message: /EIO/ });
  t.is(h.toolstack.requests.length, 0);
  t.deepEqual(h.state.state, { staging: {}, vms: {} });
  t.is(await h.netlink.link("xr-b"), undefined);
  t.is(h.radvd.count, 0);
});

test("a silent guest: plain migration within the deadline, nothing of the prepare left", async (t) => {
  const h = host("silent");
  const started = Date.now();
  const report = await h.engine.migrate("vm", "hostb", { migrationId: "m2", timeoutMs: 300 });
  t.true(Date.now() - started < 300 + 3000);
  t.is(report.method, "plain");
  t.regex(report.fallback ?? "", /did not answer within 300 ms/);
  t.deepEqual(h.toolstack.requests[0]?.bridges, { 0: "xenbr0", 1: "xrpark0" });
  t.deepEqual(h.toolstack.requests[0]?.guestWrites, {});
  t.is(h.toolstack.requests[0]?.hold, undefined, "a plain migration holds nothing back");
  t.is(h.toolstack.requests[0]?.announce, undefined, "nor announces anything");
  t.deepEqual(h.state.state, { staging: {}, vms: {} });
  t.is(h.radvd.count, 0);
  t.is(await h.netlink.link("xr-b"), undefined);
  t.is(
    (await h.netlink.link("vif5.1"))?.master,
    (await h.netlink.link("xrpark0"))?.index,
    "secondary parked again",
  );
  const abort = parseRequest((await h.channel.read(5, "request")) ?? "");
  t.like(abort.ok ? abort.value : {}, { kind: "abort", id: "m2" }, "a late agent is told to stand down");
});

test("a malformed or refusing answer is refused with the reason, then plain migration", async (t) => {
  const bad = host("malformed");
  const r1 = await bad.engine.migrate("vm", "hostb", { migrationId: "m3", timeoutMs: 1000 });
  t.is(r1.method, "plain");
  t.regex(r1.fallback ?? "", /refused the guest's answer: answer is malformed/);
  const no = host("refuses");
  await t.throwsAsync(no.engine.prepare("vm", "hostb", { migrationId: "m4" }), {
    instanceOf: PrepareError,
    message: /vm could not prepare: no interface has MAC x/,
  });
  t.deepEqual(no.state.state, { staging: {}, vms: {} });
});

test("same site: nothing to stage, a plain migration", async (t) => {
  const h = host();
  const r = await h.engine.migrate("vm", "hosta2");
  t.is(r.method, "plain");
  t.is(r.fallback, undefined);
  t.deepEqual(h.netlink.effects, []);
});

test("one staging bridge per site, shared and reference-counted; prepare is reused, abort is idempotent", async (t) => {
  const h = host();
  const p1 = await h.engine.prepare("vm", "hostb");
  await h.engine.prepare("vm2", "hostb");
  t.is(h.netlink.effects.filter((e) => e.startsWith("link add xr-b")).length, 1);
  t.is(h.radvd.count, 1);
  t.deepEqual(h.state.state.staging.b?.users, ["vm", "vm2"]);
  const again = await h.engine.prepare("vm", "hostb");
  t.like(again, {
    kind: "prepared",
    reused: true,
    migrationId: p1.kind === "prepared" ? p1.migrationId : "",
  });
  t.true(await h.engine.abort("vm"));
  t.truthy(await h.netlink.link("xr-b"), "still used by vm2");
  t.true(await h.engine.abort("vm2"));
  t.is(await h.netlink.link("xr-b"), undefined);
  t.is(h.radvd.count, 0);
  t.false(await h.engine.abort("vm2"), "nothing to undo the second time");
});

test("a VM without a parked second vif is refused with what to write in xl.cfg", async (t) => {
  const h = host();
  h.toolstack.addVm("solo", "hosta", 9, [
    { devid: 0, mac: "00:16:3e:00:09:01", ifname: "vif9.0", bridge: "xenbr0" },
  ]);
  await t.throwsAsync(h.engine.prepare("solo", "hostb"), {
    message: /needs two vifs.*vif = \[ 'mac=…,bridge=xenbr0', 'mac=…,bridge=xrpark0' \]/,
  });
});

test("mobility: the guest's activation is relayed when the VM is paused, without delaying the pause", async (t) => {
  const h = host("mobile", { control: true });
  h.control.delayMs = 40;
  const migrate = h.toolstack.migrate.bind(h.toolstack);
  let callMs = -1;
  h.toolstack.migrate = async (vm, destination, request) => {
    const relay = request.onPaused;
    return migrate(vm, destination, {
      ...request,
      onPaused: () => {
        const started = Date.now();
        relay?.();
        callMs = Date.now() - started;
      },
    });
  };
  const report = await h.engine.migrate("vm", "hostb", { migrationId: "m1" });
  t.is(report.method, "dual-interface");
  t.true(callMs >= 0 && callMs < 20, `onPaused returned in ${callMs} ms; the POST takes 40`);
  const at = (entry: string) => h.journal.indexOf(entry);
  t.true(at("control health") < at('toolstack migrate vm hostb {"0":"xrpark0","1":"xenbr0"}'));
  t.true(at("toolstack pause vm") < at(`control activate ${MOA} 7`), h.journal.join("\n"));
  t.true(at(`control activated ${MOA} 7`) > 0, "the engine waited for the answer before it returned");
  t.true(report.timeline.some((m) => m.phase === "binding-relayed"));
  t.true(h.logged.includes("binding_relayed"));
  t.false(h.journal.some((j) => j.startsWith("control rollback")));
});

test("mobility: a relay the control client can make ready ahead is made ready before the pause and sent at it", async (t) => {
  const h = host("mobile", { control: true });
  const control = h.control as FakeControl & {
    prepareActivate?: (b: SignedActivation) => () => Promise<{ revision: number }>;
  };
  control.prepareActivate = (b) => {
    h.journal.push(`control prepared ${b.locator} ${b.seq}`);
    return () => {
      h.journal.push(`control sent ${b.locator} ${b.seq}`);
      return Promise.resolve({ revision: b.seq });
    };
  };
  const report = await h.engine.migrate("vm", "hostb", { migrationId: "m1" });
  const at = (entry: string) => h.journal.indexOf(entry);
  t.true(
    at(`control prepared ${MOA} 7`) >= 0 && at(`control prepared ${MOA} 7`) < at("toolstack pause vm"),
    h.journal.join("\n"),
  );
  t.true(at(`control sent ${MOA} 7`) > at("toolstack pause vm"));
  t.false(h.journal.includes(`control activate ${MOA} 7`), "not the ordinary call");
  t.true(report.timeline.some((m) => m.phase === "binding-relayed"));
});

test("mobility: a move that fails after the pause rolls the relayed binding back before the guest hears of the abort", async (t) => {
  const h = host("mobile", { control: true });
  h.toolstack.failAfterPause = "resumed-here";
  await t.throwsAsync(h.engine.migrate("vm", "hostb", { migrationId: "m1" }), { message: /restore failed/ });
  const rollback = h.journal.indexOf(`control rollback vm ${MOA} 7`);
  const activated = h.journal.indexOf(`control activated ${MOA} 7`);
  const abort = h.journal.lastIndexOf("xenstore write 5/request");
  t.true(activated >= 0 && rollback > activated, h.journal.join("\n"));
  t.true(abort > rollback, "the guest withdraws its standby only once it is no longer active");
  t.true(h.logged.includes("binding_rolled_back"));
  const req = parseRequest((await h.channel.read(5, "request")) ?? "");
  t.like(req.ok ? req.value : {}, { kind: "abort", id: "m1" });
  t.deepEqual(h.state.state, { staging: {}, vms: {} });
});

test("a toolstack that cannot swap before resume: the method is refused with its reason, nothing touched", async (t) => {
  const h = host("answers");
  h.toolstack.refusal = "inside one XAPI pool the VIFs cannot be swapped before the VM resumes";
  const err = await t.throwsAsync(h.engine.migrate("vm", "hostb", { migrationId: "m1" }));
  t.regex(err?.message ?? "", /cannot move vm to hostb here: inside one XAPI pool .*--no-method/);
  t.is(h.toolstack.requests.length, 0, "nothing migrated");
  t.deepEqual(h.state.state, { staging: {}, vms: {} });
  t.false(
    h.journal.some((j) => j.startsWith("xenstore write")),
    "the guest was never asked",
  );
  // A plain migration is the admin's to choose.
  await h.engine.migrate("vm", "hostb", { migrationId: "m2", method: false });
  t.is(h.toolstack.requests.length, 1);
});

test("mobility, xl: the destination relayed unseen; a move that fails after it is rolled back all the same", async (t) => {
  const h = host("mobile", { control: true });
  h.toolstack.atDestinationPause = () => h.control.activate({ ...ACTIVATION, seq: 7 });
  h.toolstack.failAfterPause = "resumed-here";
  await t.throwsAsync(h.engine.migrate("vm", "hostb", { migrationId: "m1" }), { message: /restore failed/ });
  const rollback = h.journal.indexOf(`control rollback vm ${MOA} 7`);
  t.true(rollback > h.journal.indexOf(`control activated ${MOA} 7`), h.journal.join("\n"));
  t.true(h.logged.includes("binding_rolled_back"));

  // Failed after xl renamed its copy away (the VM is not found here under its name): most likely it runs at
  // the destination, so the binding stays.
  const away = host("mobile", { control: true });
  away.toolstack.atDestinationPause = async () => {
    await away.control.activate({ ...ACTIVATION, seq: 7 });
    away.toolstack.domains.delete("vm");
  };
  away.toolstack.failAfterPause = "resumed-here";
  await t.throwsAsync(away.engine.migrate("vm", "hostb", { migrationId: "m3" }));
  t.false(
    away.journal.some((j) => j.startsWith("control rollback")),
    away.journal.join("\n"),
  );
  t.true(away.logged.includes("binding_kept"));

  // Failed before the destination relayed anything: the server has nothing to undo, and says so.
  const early = host("mobile", { control: true });
  early.toolstack.atDestinationPause = async () => {};
  early.toolstack.failAfterPause = "resumed-here";
  await t.throwsAsync(early.engine.migrate("vm", "hostb", { migrationId: "m2" }));
  t.true(early.logged.includes("binding_not_relayed"));
  t.false(early.logged.includes("binding_rollback_failed"));
});

test("mobility: no rollback when the VM runs at the destination after all, or when the server refused the relay; one when a replica said already-active", async (t) => {
  const moved = host("mobile", { control: true });
  moved.toolstack.failAfterPause = "moved";
  await t.throwsAsync(moved.engine.migrate("vm", "hostb", { migrationId: "m1" }));
  t.false(moved.journal.some((j) => j.startsWith("control rollback")));
  t.true(moved.logged.includes("binding_kept"));

  const refused = host("mobile", { control: true });
  refused.control.refuse = true;
  refused.toolstack.failAfterPause = "resumed-here";
  await t.throwsAsync(refused.engine.migrate("vm", "hostb", { migrationId: "m2" }));
  t.true(refused.logged.includes("binding_relay_failed"));
  t.false(
    refused.journal.some((j) => j.startsWith("control rollback")),
    "a refusal changed nothing",
  );

  // Sent again to another replica after the first took it: "already-active" is taken, so a failed move
  // rolls it back.
  const again = host("mobile", { control: true });
  again.control.alreadyActive = true;
  again.toolstack.failAfterPause = "resumed-here";
  await t.throwsAsync(again.engine.migrate("vm", "hostb", { migrationId: "m4" }));
  t.true(again.logged.includes("binding_relayed"));
  t.true(
    again.journal.some((j) => j.startsWith("control rollback")),
    "an activation in effect is rolled back",
  );

  // Without a control server, or without an activation in the answer, nothing is relayed.
  for (const h of [host("mobile"), host("answers", { control: true })]) {
    await h.engine.migrate("vm", "hostb", { migrationId: "m3" });
    t.is(h.toolstack.requests[0]?.onPaused, undefined);
    t.false(h.journal.some((j) => j.startsWith("control activate")));
  }
});

test("mobility: Dom0 relays only an activation of this VM, for a MoA in the destination site", async (t) => {
  // A guest can hand Dom0 anything: a host's token may relay any VM's binding, the guest's only its own.
  for (const activation of [{ vm: "vm2" }, { locator: "2001:db8:a::66", hoa: "2001:db8:f::5" }]) {
    const h = host("mobile", { control: true, activation });
    // The guest's answer must name the same locator as its MoA (the protocol checks): keep them equal.
    if (activation.locator) {
      const write = h.channel.guestWrite.bind(h.channel);
      h.channel.guestWrite = (domid, key, value) =>
        write(domid, key, key === "answer" ? value.replace(MOA, activation.locator) : value);
    }
    const report = await h.engine.migrate("vm", "hostb", { migrationId: "m1" });
    if (activation.locator) {
      // A MoA outside the destination's prefix is not even a prepare since issue 12: plain, with the reason.
      t.is(report.method, "plain");
      t.regex(report.fallback ?? "", /answered MoA 2001:db8:a::66, which is not in site b's prefix/);
    } else {
      t.is(report.method, "dual-interface");
      t.true(h.logged.includes("binding_relay_refused"));
    }
    t.is(h.toolstack.requests[0]?.onPaused, undefined);
    t.false(h.journal.some((j) => j.startsWith("control activate")));
  }
});

test("two VMs prepared to one site at once (two xenroam processes): both with the method, one staging bridge and one radvd for both", async (t) => {
  const h = host();
  const [a, b] = await Promise.all([h.engine.prepare("vm", "hostb"), h.another().prepare("vm2", "hostb")]);
  t.is(a.kind, "prepared");
  t.is(b.kind, "prepared");
  t.is(h.netlink.effects.filter((e) => e.startsWith("link add xr-b")).length, 1, "one staging bridge");
  t.is(h.radvd.configs.size, 1, "one radvd");
  t.deepEqual([...(h.state.state.staging.b?.users ?? [])].sort(), ["vm", "vm2"]);
  // The first one out leaves the bridge and radvd to the other; the last one out removes them.
  await h.engine.abort("vm");
  t.false(h.netlink.effects.includes("link del xr-b"));
  await h.another().abort("vm2");
  t.true(h.netlink.effects.includes("link del xr-b"));
});

test("the same VM migrated twice at once: one migrates, the other is refused saying who holds it, and undoes nothing of the first", async (t) => {
  const h = host();
  const [first, second] = await Promise.allSettled([
    h.engine.migrate("vm", "hostb", { migrationId: "m1" }),
    h.another().migrate("vm", "hostb", { migrationId: "m2" }),
  ]);
  t.is(first.status, "fulfilled");
  t.is(first.status === "fulfilled" ? first.value.method : undefined, "dual-interface");
  t.is(second.status, "rejected");
  const err = second.status === "rejected" ? (second.reason as Error) : undefined;
  t.true(err instanceof BusyError);
  t.regex(
    err?.message ?? "",
    /another xenroam operation is at work on vm \(migrate to hostb vm, since .*\): nothing was changed/,
  );
  t.is(
    h.netlink.effects.filter(
      (e) => e === "link add xr-b address 02:00:00:00:0b:01 type bridge mcast_snooping 0",
    ).length,
    1,
  );
  t.is(
    h.netlink.effects.filter((e) => e === "link del xr-b").length,
    1,
    "removed once, by the migration that made it",
  );
  t.is(h.toolstack.requests.length, 1, "one migration reached the toolstack");
  // And once the first is over, the VM is free again.
  t.is((await h.another().prepare("vm", "hosta2")).kind, "same-site");
});

test("reconcile undoes what a crashed xenroam left (a prepare cut short, a VM no longer here, a staging bridge with no user) and leaves alone what a live one is at", async (t) => {
  const h = host();
  // A prepare cut short: the process died while the guest was being asked (its record says preparing).
  await h.engine.prepare("vm", "hostb");
  const rec = h.state.state.vms.vm;
  if (!rec) return t.fail("no record");
  h.state.state = { ...h.state.state, vms: { ...h.state.state.vms, vm: { ...rec, phase: "preparing" } } };
  // While another process is at work on the VM, nothing is touched.
  const busy = await h.locks.tryAcquire("vm:vm", "migrate to hostb vm");
  t.deepEqual(await h.another().reconcile(), []);
  t.truthy(h.state.state.vms.vm);
  if ("held" in busy) await busy.held.release();
  const repairs = await h.another().reconcile();
  t.deepEqual(
    repairs.map((r) => [r.vm, r.repaired]),
    [["vm", "undid the prepare of vm"]],
  );
  t.regex(repairs[0]?.why ?? "", /its prepare \(migration .*\) ended with the process that ran it/);
  t.falsy(h.state.state.vms.vm);
  t.true(h.netlink.effects.includes("link del xr-b"), "its staging bridge went with it");
  t.is(
    (await h.netlink.link("vif5.1"))?.master,
    (await h.netlink.link("xrpark0"))?.index,
    "the vif parked again",
  );

  // A migration cut short is left alone (xl may still be copying the VM), and so is a prepared VM the
  // toolstack cannot answer for.
  await h.engine.prepare("vm", "hostb");
  const prepared = h.state.state.vms.vm;
  if (!prepared) return t.fail("no record");
  h.state.state = { ...h.state.state, vms: { vm: { ...prepared, phase: "migrating" } } };
  t.deepEqual(await h.engine.reconcile(), []);
  h.state.state = { ...h.state.state, vms: { vm: prepared } };
  const domain = h.toolstack.domain.bind(h.toolstack);
  h.toolstack.domain = () => Promise.reject(new Error("xl list: timed out"));
  t.deepEqual(await h.engine.reconcile(), []);
  h.toolstack.domain = domain;
  await h.engine.abort("vm");

  // A prepared VM that still runs here is kept; one that is now another domain is undone.
  await h.engine.prepare("vm", "hostb");
  await h.engine.prepare("vm2", "hostb");
  t.deepEqual(await h.engine.reconcile(), []);
  const vm2 = h.toolstack.domains.get("vm2");
  const vm2Migration = h.state.state.vms.vm2?.migrationId;
  if (vm2) h.toolstack.domains.set("vm2", { ...vm2, domid: 9 });
  t.deepEqual(
    (await h.engine.reconcile()).map((r) => [r.vm, r.why]),
    [["vm2", `prepared as domid 8 here (migration ${vm2Migration}), it is domid 9 now`]],
  );
  t.truthy(h.state.state.vms.vm, "the other VM's prepare stays");
  t.deepEqual(h.state.state.staging.b?.users, ["vm"], "and so does the staging bridge it uses");

  // A user recorded on a staging bridge without a prepared VM behind it is dropped; with none left, the
  // bridge and its radvd go.
  const st = h.state.state.staging.b;
  if (!st) return t.fail("no staging");
  const { vm: _vm, ...others } = h.state.state.vms;
  h.state.state = { ...h.state.state, vms: others };
  const dels = h.netlink.effects.filter((e) => e === "link del xr-b").length;
  t.deepEqual(
    (await h.engine.reconcile()).map((r) => [r.site, r.repaired]),
    [["b", "removed staging bridge xr-b and its radvd"]],
  );
  t.is(h.netlink.effects.filter((e) => e === "link del xr-b").length, dels + 1);
  t.deepEqual(h.state.state.staging, {});
});

test("what the guest says reaches the admin without its control characters, and a MoA outside the destination's prefix is refused", async (t) => {
  const esc = host("escapes");
  const err = await t.throwsAsync(esc.engine.prepare("vm", "hostb"), { instanceOf: PrepareError });
  t.is(err?.message, "vm could not prepare: \\x1b[2J\\x1b[31mowned\\x0axenroam: all good\\u202e");
  const away = host("elsewhere");
  const r = await away.engine.migrate("vm", "hostb", { migrationId: "m5" });
  t.is(r.method, "plain");
  t.regex(r.fallback ?? "", /answered MoA 2001:db8:a::502, which is not in site b's prefix 2001:db8:b::\/64/);
  t.deepEqual(away.state.state, { staging: {}, vms: {} }, "and nothing of the prepare is left");
});

test("evacuate: every VM of the host to a site's hosts with the method, one staging bridge, a row each", async (t) => {
  const h = host();
  h.toolstack.copyMs = 40;
  const lines: string[] = [];
  const s = await h.engine.evacuate({ site: "b", parallel: 2, onProgress: (l) => lines.push(l) });
  t.deepEqual(
    s.rows.map((r) => [r.vm, r.to, r.outcome, r.downtimeMs]),
    [
      ["vm", "hostb", "method", 50],
      ["vm2", "hostb", "method", 50],
    ],
  );
  t.deepEqual(s.destinations, ["hostb"]);
  t.is(h.toolstack.mostAtOnce, 2, "both under way at once");
  t.is((await h.toolstack.residents("hosta")).length, 0);
  // One staging bridge for the site, made once and gone once its last user left.
  t.is(h.netlink.effects.filter((e) => e.startsWith("link add xr-b")).length, 1);
  t.is(await h.netlink.link("xr-b"), undefined);
  t.deepEqual((await h.state.read()).staging, {});
  t.regex(lines[0] ?? "", /evacuating 2 VMs from hosta to site b \(hostb\), 2 at a time/);
  t.true(
    lines.some((l) => /^\[2\/2\] vm2? -> hostb: method, paused 50 ms$/.test(l)),
    lines.join("\n"),
  );
  const table = renderEvacuation(s);
  t.regex(table, /^VM\s+to\s+outcome\s+downtime\s+took\s+why \/ MoA$/m);
  t.regex(table, /^vm2\s+hostb\s+method\s+50 ms\s+[\d.]+ s\s+2001:db8:b:/m);
  t.regex(table, /hosta -> site b \(hostb\), 2 at a time: 2 VMs in [\d.]+ s; 2 with the method$/);
});

test("evacuate: a silent guest falls back and is reported, the others are not held up; one that cannot go stays", async (t) => {
  const h = host("answers", { silent: [5] });
  h.toolstack.unreachable.add("vm3");
  h.toolstack.addVm("vm3", "hosta", 11, [
    { devid: 0, mac: "00:16:3e:00:0b:01", ifname: "vif11.0", bridge: "xenbr0" },
    { devid: 1, mac: "00:16:3e:00:0b:02", ifname: "vif11.1", bridge: "xrpark0" },
  ]);
  h.netlink.seedLink("vif11.0", { kind: "veth", up: true, master: "xenbr0" });
  h.netlink.seedLink("vif11.1", { kind: "veth", up: true, master: "xrpark0" });
  const s = await h.engine.evacuate({ site: "b", parallel: 3, timeoutMs: 300 });
  const byVm = new Map(s.rows.map((r) => [r.vm, r]));
  t.is(byVm.get("vm")?.outcome, "fallback");
  t.regex(byVm.get("vm")?.why ?? "", /did not answer within 300 ms/);
  t.is(byVm.get("vm2")?.outcome, "method");
  t.true((byVm.get("vm2")?.elapsedMs ?? Infinity) < 300, "vm2 did not wait for vm's silent guest");
  t.is(byVm.get("vm3")?.outcome, "failed");
  t.true(byVm.get("vm3")?.stayed);
  t.regex(byVm.get("vm3")?.why ?? "", /cannot reach hostb/);
  t.is((await h.toolstack.domain("vm3")).host, "hosta");
  t.deepEqual((await h.state.read()).staging, {}, "nothing staged is left");
  t.regex(renderEvacuation(s), /1 with the method, 1 fell back to a plain migration, 1 could not go$/);
});

test("evacuate refuses what it cannot do, saying what to do instead", async (t) => {
  const h = host();
  await t.throwsAsync(h.engine.evacuate({ site: "z" }), { message: /no site named "z" .*sites: a, b/ });
  await t.throwsAsync(h.engine.evacuate({ site: "b", hosts: ["hosta2"] }), {
    message: /hosta2 is in site a, not b/,
  });
  await t.throwsAsync(h.engine.evacuate({ site: "a", hosts: ["hosta"] }), {
    message: /site a has no host to take the VMs but this one \(hosta\)/,
  });
  const bare = host();
  (bare.toolstack as { residents?: unknown }).residents = undefined;
  await t.throwsAsync(bare.engine.evacuate({ site: "b" }), { message: /cannot list the VMs/ });
});

test("planEvacuation deals VMs round-robin over the hosts, by name; downtimeOf reads the toolstack or the timeline", (t) => {
  t.deepEqual(planEvacuation(["c", "a", "b", "a"], ["h2", "h1"]), [
    { vm: "a", to: "h1" },
    { vm: "b", to: "h2" },
    { vm: "c", to: "h1" },
  ]);
  t.throws(() => planEvacuation(["a"], []));
  t.is(downtimeOf({ pausedMs: 12, timeline: [] }), 12);
  t.is(
    downtimeOf({
      timeline: [
        { phase: "start", atMs: 0 },
        { phase: "suspended", atMs: 900 },
        { phase: "running-on-destination", atMs: 1130 },
      ],
    }),
    230,
  );
  t.is(downtimeOf({ timeline: [{ phase: "pool-migrate", atMs: 5 }] }), undefined);
});

test("boundedAll: never more than N at once, results in order", async (t) => {
  let now = 0;
  let most = 0;
  const out = await boundedAll([5, 1, 3, 2, 4], 2, async (ms, i) => {
    now += 1;
    most = Math.max(most, now);
    await new Promise((r) => setTimeout(r, ms));
    now -= 1;
    return i * 10;
  });
  t.deepEqual(out, [0, 10, 20, 30, 40]);
  t.is(most, 2);
});

// EtcdStore and several control servers on one real etcd cluster (three members on loopback): the write lock
// keeps two servers racing on one HoA consistent, a long poll on one server wakes for a write on another, a
// watcher resumes on any server, compaction hides no change, a server that lost the lock writes nothing, and
// writes and the watch go on while the leader is down.
import test, { type ExecutionContext } from "ava";
import { EtcdCluster } from "@xenroam/process/etcd-cluster";
import { EtcdStore, type EtcdStoreOptions, parseEtcdUrl } from "../src/etcd.js";
import {
  type Change,
  ControlError,
  ControlService,
  exportPublicKey,
  generateSigningKeys,
  type Store,
  StoreError,
} from "../src/index.js";
import { Recorder } from "./store-contract.js";

const keys = generateSigningKeys();
const SITES = {
  sites: [
    { name: "a", prefix: "2001:db8:a::/64", gateway: { linkLocal: "fe80::a:1", mac: "02:00:00:00:0a:01" } },
  ],
  hosts: [{ name: "hosta", site: "a" }],
};
const HOA = "2001:db8:f::10";

let cluster: EtcdCluster | undefined;
test.before(async () => {
  cluster = await EtcdCluster.start(3);
});
test.after.always(() => cluster?.stop());

let prefixes = 0;

/** `n` control servers sharing one fresh prefix of `on`, each with its own etcd client (as on its own host). */
async function servers(
  t: ExecutionContext,
  n = 2,
  options: Partial<EtcdStoreOptions> = {},
  on: EtcdCluster | undefined = cluster,
) {
  if (!on) throw new Error("the etcd cluster did not start");
  const prefix = `/xr-etcd-${++prefixes}/`;
  const stores = await Promise.all(
    Array.from({ length: n }, () =>
      EtcdStore.open({ endpoints: on.endpoints, tls: false, prefix, ...options }),
    ),
  );
  t.teardown(() => Promise.all(stores.map((s) => s.close())));
  const services = stores.map((store) => new ControlService({ store, ...keys }));
  return { prefix, stores, services, a: services[0] as ControlService, b: services[1] as ControlService };
}

/** Waits (bounded) until `condition` holds. */
async function until(condition: () => Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test("etcd URLs: endpoints, the default port, IPv6, TLS and a key prefix; anything else is refused with the form", (t) => {
  t.deepEqual(parseEtcdUrl("etcd://10.0.0.1:2379,10.0.0.2"), {
    endpoints: ["10.0.0.1:2379", "10.0.0.2:2379"],
    tls: false,
    prefix: "/xenroam/",
  });
  t.deepEqual(parseEtcdUrl("etcds://[2001:db8::1]:2379,etcd-b.example:12379/prod/xenroam"), {
    endpoints: ["[2001:db8::1]:2379", "etcd-b.example:12379"],
    tls: true,
    prefix: "/prod/xenroam/",
  });
  for (const bad of [
    "http://10.0.0.1:2379",
    "etcd://",
    "etcd://a:99999",
    "etcd://a b:1",
    "etcd://a:1/x y",
    "etcd://a:1,,b:2",
  ]) {
    t.throws(() => parseEtcdUrl(bad), { instanceOf: StoreError, message: /etcd:\/\/HOST:PORT|port/ }, bad);
  }
});

test("a cluster that does not answer fails the open within its timeout, saying what to check", async (t) => {
  const started = Date.now();
  const err = await t.throwsAsync(
    EtcdStore.open({ endpoints: ["127.0.0.1:1"], tls: false, prefix: "/x/", timeoutMs: 1500 }),
    { instanceOf: StoreError },
  );
  t.regex(err?.message ?? "", /etcd cluster 127\.0\.0\.1:1 cannot be used: .*endpoint health/);
  t.true(Date.now() - started < 6000, `${Date.now() - started} ms`);
});

test("a prefix that holds another schema is refused, named", async (t) => {
  await cluster?.put("/xr-schema/schema", "2");
  await t.throwsAsync(
    EtcdStore.open({ endpoints: cluster?.endpoints ?? [], tls: false, prefix: "/xr-schema/" }),
    {
      instanceOf: StoreError,
      message: /prefix \/xr-schema\/ holds xenroam schema 2; this xenroam-control understands 1/,
    },
  );
});

test("every server on one prefix signs with one key: a server with another is refused", async (t) => {
  const { stores } = await servers(t);
  const [first, second] = stores as [EtcdStore, EtcdStore];
  const pem = exportPublicKey(keys.publicKey);
  await first.pinSigningKey(pem);
  await second.pinSigningKey(pem);
  await t.throwsAsync(second.pinSigningKey(exportPublicKey(generateSigningKeys().publicKey)), {
    instanceOf: StoreError,
    message: /signing key is not the one the other servers .* sign with .*copy of the same key file/,
  });
});

test("two servers racing on one HoA issue each sequence number once, in order", async (t) => {
  const { a, b } = await servers(t);
  await a.putSites(SITES);
  await a.registerVm("web", HOA);
  const n = 24;
  const issued = await Promise.all(
    Array.from({ length: n }, (_, i) =>
      (i % 2 ? b : a).registerStandby("web", `2001:db8:a::${(i + 1).toString(16)}`),
    ),
  );
  t.deepEqual(
    issued.map((s) => s.seq).sort((x, y) => x - y),
    Array.from({ length: n }, (_, i) => i + 1),
  );
  const binding = await b.binding(HOA);
  t.is(binding.issued, n);
  t.deepEqual(
    binding.standbys.map((s) => s.seq),
    [n - 3, n - 2, n - 1, n],
    "the newest four standbys, in the order they were issued",
  );
});

test("two servers registering two VMs with one HoA at once: one has it, the other is told whose it is", async (t) => {
  const { a, b } = await servers(t);
  const results = await Promise.allSettled([a.registerVm("one", HOA), b.registerVm("two", HOA)]);
  const won = results.filter((r) => r.status === "fulfilled");
  const lost = results.flatMap((r) => (r.status === "rejected" ? [r.reason as unknown] : []));
  t.is(won.length, 1);
  t.true(lost[0] instanceof ControlError && lost[0].status === 409, String(lost[0]));
  t.regex((lost[0] as Error).message, /already belongs to (one|two)/);
  t.is((await b.vms()).length, 1);
});

test("a long poll on one server answers a write on another at once", async (t) => {
  const { stores, a } = await servers(t);
  await a.putSites(SITES);
  await a.registerVm("web", HOA);
  // Server b, told when its long poll has read (and found nothing): only then does a write.
  let read = () => {};
  const reading = new Promise<void>((resolve) => (read = resolve));
  const storeB = stores[1] as EtcdStore;
  const observed = new Proxy<Store>(storeB, {
    get(target, prop) {
      const value: unknown = Reflect.get(target, prop, target);
      if (typeof value !== "function") return value;
      const method = (value as (...args: unknown[]) => unknown).bind(target);
      if (prop !== "changesSince") return method;
      return async (...args: unknown[]) => {
        const changes = await method(...args);
        read();
        return changes;
      };
    },
  });
  const b = new ControlService({ store: observed, ...keys });
  const { revision } = await a.changes(0);
  const poll = b.changes(revision, 20_000);
  await reading;
  const wrote = Date.now();
  await a.registerStandby("web", "2001:db8:a::5");
  const answer = await poll;
  t.true(Date.now() - wrote < 5000, `answered ${Date.now() - wrote} ms after the write, not at its timeout`);
  t.deepEqual(
    answer.changes.map((c) => c.binding.standbys.map((s) => s.locator)),
    [["2001:db8:a::5"]],
  );
  t.is(answer.revision, answer.changes.at(-1)?.revision ?? -1);
});

test("a watcher resumes on either server from the revision the other gave it, and misses no change", async (t) => {
  const { a, b } = await servers(t);
  await a.putSites(SITES);
  const hoas = ["2001:db8:f::1", "2001:db8:f::2", "2001:db8:f::3"];
  for (const [i, hoa] of hoas.entries()) await (i % 2 ? b : a).registerVm(`vm${i}`, hoa);
  const first = await a.changes(0);
  t.is((await b.changes(0)).revision, first.revision, "one revision, whichever server answers");
  t.deepEqual(first.changes.map((c) => c.binding.hoa).sort(), hoas);

  // Both servers write while the watcher goes from one to the other, each time from where it was.
  const seen = new Map<string, Change>();
  let since = first.revision;
  let polls = 0;
  let writing = true;
  const watch = (async () => {
    for (;;) {
      const done = !writing;
      const res = await (polls++ % 2 ? b : a).changes(since, done ? 0 : 500);
      for (const c of res.changes) {
        if (c.revision <= since) t.fail(`change ${c.revision} again, after ${since}`);
        seen.set(c.binding.hoa, c);
      }
      t.true(res.revision >= since);
      since = res.revision;
      if (done && res.changes.length === 0) return;
    }
  })();
  await Promise.all(
    Array.from({ length: 30 }, (_, i) =>
      (i % 2 ? a : b).registerStandby(`vm${i % 3}`, `2001:db8:a::${(i + 1).toString(16)}`),
    ),
  );
  writing = false;
  await watch;
  for (const hoa of hoas) t.deepEqual(seen.get(hoa)?.binding, await b.binding(hoa), hoa);
  t.true(polls > 2);
});

test("after etcd compacts its history, a watcher from before still gets each HoA's newest record", async (t) => {
  const { stores, a } = await servers(t, 1);
  const store = stores[0] as EtcdStore;
  await a.putSites(SITES);
  await a.registerVm("web", HOA);
  await a.registerVm("db", "2001:db8:f::20");
  const before = await store.revision();
  for (let i = 1; i <= 5; i++) await a.registerStandby("web", `2001:db8:a::${i}`);
  await cluster?.compact(await store.revision());
  t.deepEqual(
    (await a.changes(0)).changes.map((c) => [c.binding.hoa, c.binding.issued]),
    [
      ["2001:db8:f::20", 0],
      [HOA, 5],
    ],
  );
  t.deepEqual(
    (await a.changes(before)).changes.map((c) => c.binding.hoa),
    [HOA],
  );
  const told = new Recorder(store);
  await a.registerStandby("web", "2001:db8:a::9");
  await told.until(await store.revision());
  told.stop();
  t.pass("and changes after the compaction are still told");
});

test("a server that lost the write lock (its lease gone, as when it stalls past it) writes nothing; the next takes over", async (t) => {
  const { prefix, stores, a, b } = await servers(t);
  const storeA = stores[0] as EtcdStore;
  await a.putSites(SITES);
  await a.registerVm("web", HOA);
  const before = await a.binding(HOA);
  let resume = () => {};
  const stalled = new Promise<void>((resolve) => (resume = resolve));
  let entered = () => {};
  const inside = new Promise<void>((resolve) => (entered = resolve));
  const late = storeA.exclusive(async () => {
    entered();
    await stalled;
    await storeA.putBinding({ ...before, issued: 99 });
  });
  await inside;
  const [lock] = await (cluster as EtcdCluster).keys(`${prefix}lock/`);
  const next = b.registerStandby("web", "2001:db8:a::5");
  await cluster?.revokeLease(BigInt(`0x${lock?.split("/").at(-1)}`).toString());
  t.is((await next).seq, 1, "b took the lock once a's lease was gone");
  resume();
  await t.throwsAsync(late, { instanceOf: StoreError, message: /lost the etcd write lock/ });
  t.is((await b.binding(HOA)).issued, 1, "a's late write did not land");
  t.is((await a.registerStandby("web", "2001:db8:a::6")).seq, 2, "a writes again under a new lease");
});

test("a server whose etcd watch went down with its member logs it, and its long polls still get others' writes at once", async (t) => {
  // The lab's failover bench twice saw a correspondent get an activation 2 s late after an etcd member died;
  // the suspect is the watching replica's etcd watch, down until etcd3 reconnects it. Here etcd3 reconnects
  // in ~100 ms (the 2 s is not reproduced: this passes with or without the looks every 250 ms meanwhile);
  // what it does show is the outage logged, and no change lost around it.
  const own = await EtcdCluster.start(3);
  t.teardown(() => own.stop());
  const endpoints = own.endpoints;
  // A follower dies (a's writes go on at once through the leader); b reaches it and the leader, a does not.
  const leader = await own.leader();
  const k = (leader + 1) % 3;
  const other = 3 - leader - k;
  const at = (i: number) => endpoints[i] ?? "";
  const prefix = "/xr-looks/";
  const storeA = await EtcdStore.open({ endpoints: [at(leader), at(other)], tls: false, prefix });
  t.teardown(() => storeA.close());
  const a = new ControlService({ store: storeA, ...keys });
  await a.putSites(SITES);
  await a.registerVm("web", HOA);
  // b's watch sits on one of its two members (the client's choice): tried until it is the follower's.
  for (let attempt = 1; attempt <= 10; attempt++) {
    const events: string[] = [];
    const store = await EtcdStore.open({
      endpoints: [at(k), at(leader)],
      tls: false,
      prefix,
      log: (e) => events.push(e),
    });
    const b = new ControlService({ store, ...keys });
    const since = (await b.changes(0)).revision;
    const poll = b.changes(since, 15_000);
    await own.kill(k);
    await new Promise((r) => setTimeout(r, 30));
    await a.registerStandby("web", `2001:db8:a::${attempt + 10}`);
    const written = Date.now();
    const answer = await poll;
    const ms = Date.now() - written;
    const down = events.includes("etcd_watch_down");
    await store.close();
    await own.restart(k);
    if (!down) continue; // its watch was on the leader: nothing to see; again with a new client
    t.log(
      `attempt ${attempt}: b's watch went down with member ${k}; b's poll answered ${ms} ms after a's write`,
    );
    t.is(answer.changes.length, 1);
    t.true(ms < 600, `answered ${ms} ms after the write`);
    return;
  }
  t.fail("in 10 tries b's watch never sat on the member that was killed");
});

test("writes and the watch go on while the leader is down, and the member restarted catches up", async (t) => {
  const own = await EtcdCluster.start(3);
  t.teardown(() => own.stop());
  const { stores, a, b } = await servers(t, 2, { timeoutMs: 2000 }, own);
  await a.putSites(SITES);
  await a.registerVm("web", HOA);
  const leader = await own.leader();
  const poll = b.changes((await b.changes(0)).revision, 20_000);
  await own.kill(leader);
  const killed = Date.now();
  t.is((await a.registerStandby("web", "2001:db8:a::5")).seq, 1, "a write with two members of three");
  const answer = await poll;
  t.true(Date.now() - killed < 15_000, "the long poll on the other server was woken");
  t.deepEqual(
    answer.changes.map((c) => c.binding.issued),
    [1],
  );
  t.is((await b.registerStandby("web", "2001:db8:a::6")).seq, 2);
  await own.restart(leader);
  const revision = await (stores[0] as EtcdStore).revision();
  await until(
    async () => (await own.appliedRevision(leader)) >= revision,
    "the restarted member catching up",
  );
  t.is((await b.registerStandby("web", "2001:db8:a::7")).seq, 3, "and all three write on");
});

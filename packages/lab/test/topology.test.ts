import test from "ava";
import {
  controlUrls,
  DEFAULT_TOPOLOGY,
  hoaOf,
  labVms,
  parseTopology,
  TopologyError,
  type TopologyInput,
  vmOf,
  withVmCount,
} from "../src/index.js";

const clone = (): TopologyInput => structuredClone(DEFAULT_TOPOLOGY);

function problems(value: unknown): string[] {
  try {
    parseTopology(value, "t.json");
  } catch (err) {
    if (err instanceof TopologyError) return [...err.problems];
    throw err;
  }
  return [];
}

test("the default topology is valid and canonical", (t) => {
  const topo = parseTopology(DEFAULT_TOPOLOGY);
  t.is(topo.sites.length, 2);
  t.is(topo.sites[0]?.gateway.mac, "02:00:00:00:0a:01");
  t.is(topo.bridges.real, "xenbr0");
});

test("schema errors name the field and say what is expected", (t) => {
  const bad = clone() as unknown as { sites: Array<Record<string, unknown>>; vm: Record<string, unknown> };
  (bad.sites[1] as { prefix: string }).prefix = "2001:db8:b::1/64";
  (bad.sites[0] as { gateway: { mac: string } }).gateway.mac = "01:00:5e:00:00:01";
  bad.vm.domid = 0;
  const p = problems(bad);
  t.true(
    p.some((x) => x.startsWith("sites[1].prefix:") && x.includes("host bits set")),
    p.join("\n"),
  );
  t.true(
    p.some((x) => x.startsWith("sites[0].gateway.mac:") && x.includes("multicast")),
    p.join("\n"),
  );
  t.true(
    p.some((x) => x.startsWith("vm.domid:")),
    p.join("\n"),
  );
  t.true(problems({ ...clone(), extra: 1 }).some((x) => x.includes("extra")));
});

test("cross-field rules: references, prefixes, addresses, names", (t) => {
  const c = clone() as unknown as {
    hosts: Array<{ name: string; site: string; address: string }>;
    sites: Array<{ name: string; prefix: string; ra: { minIntervalMs: number; maxIntervalMs: number } }>;
    vm: { host: string; secondaryMac: string; primaryMac: string };
  };
  c.hosts[0] = { name: "hosta", site: "z", address: "2001:db8:a::a" };
  c.hosts[1] = { name: "hostb", site: "a", address: "2001:db8:b::9" };
  c.vm.host = "nowhere";
  c.vm.secondaryMac = c.vm.primaryMac;
  c.sites[1] = {
    ...c.sites[1],
    name: "b",
    prefix: "2001:db8:a::/64",
    ra: { minIntervalMs: 10, maxIntervalMs: 70 },
  };
  const p = problems(c);
  const has = (re: RegExp) =>
    t.true(
      p.some((x) => re.test(x)),
      `${re} in:\n${p.join("\n")}`,
    );
  has(/^sites\[1\]\.ra: minimum interval 10 ms is below radvd's floor of 30 ms/);
  // Schema problems stop before semantic checks; fix the interval and look again.
  (c.sites[1] as { ra: { minIntervalMs: number } }).ra.minIntervalMs = 30;
  const q = problems(c);
  const has2 = (re: RegExp) =>
    t.true(
      q.some((x) => re.test(x)),
      `${re} in:\n${q.join("\n")}`,
    );
  has2(/node name "hostb" is used twice/);
  has2(/hosts\[0\]\.site: no site named "z" \(sites: a, b\)/);
  has2(/hosts\[1\]\.address 2001:db8:b::9 is not inside site a's prefix/);
  has2(/sites\.a\.prefix 2001:db8:a::\/64 overlaps sites\.b\.prefix/);
  has2(/vm\.host: no host named "nowhere"/);
  has2(/primaryMac and vm\.secondaryMac must differ/);
});

test("a host may not take the router's ::1", (t) => {
  const c = clone() as unknown as { hosts: Array<{ address: string }> };
  (c.hosts[0] as { address: string }).address = "2001:db8:a::1";
  t.true(problems(c).some((x) => x.includes("is the router's")));
});

test("the error message lists every problem under the source name", (t) => {
  const err = t.throws(() => parseTopology({ name: "X" }, "my.json"), { instanceOf: TopologyError });
  t.regex(err.message, /^my\.json is not a valid lab topology:\n {2}- name: /);
});

test("--vms: more VMs beside the first, each with its own domid, MACs and home address", (t) => {
  const topo = parseTopology(withVmCount(DEFAULT_TOPOLOGY, 3));
  t.deepEqual(
    labVms(topo).map((v) => [v.name, v.domid, v.host, v.primaryMac, v.secondaryMac, hoaOf(topo, v)]),
    [
      ["vm", 5, "hosta", "00:16:3e:00:00:01", "00:16:3e:00:00:02", "2001:db8:f::5"],
      ["vm2", 6, "hosta", "00:16:3e:00:02:01", "00:16:3e:00:02:02", "2001:db8:f::6"],
      ["vm3", 7, "hosta", "00:16:3e:00:03:01", "00:16:3e:00:03:02", "2001:db8:f::7"],
    ],
  );
  t.is(vmOf(topo, "vm3").domid, 7);
  t.throws(() => vmOf(topo, "vm9"), { message: /no VM named "vm9" .*its VMs: vm, vm2, vm3/ });
  t.deepEqual(parseTopology(withVmCount(DEFAULT_TOPOLOGY, 1)).extraVms, []);
  t.throws(() => withVmCount(DEFAULT_TOPOLOGY, 0), { instanceOf: TopologyError });
  t.throws(() => withVmCount(DEFAULT_TOPOLOGY, 129), { instanceOf: TopologyError });
  t.is(parseTopology(withVmCount(DEFAULT_TOPOLOGY, 128)).extraVms.at(-1)?.primaryMac, "00:16:3e:00:80:01");
});

test("extra VMs: names, domids, MACs and home addresses unique; every one with a HoA; not on the lab's XAPI", (t) => {
  const base = withVmCount(DEFAULT_TOPOLOGY, 2);
  const vm2 = base.extraVms?.[0];
  if (!vm2) throw new Error("no vm2");
  const p = problems({
    ...base,
    extraVms: [
      { ...vm2, name: "vm", domid: 5, primaryMac: "00:16:3e:00:00:01", hoa: "2001:db8:f:0::5" },
      {
        ...vm2,
        name: "vm3",
        domid: 9,
        primaryMac: "00:16:3e:00:09:01",
        secondaryMac: "00:16:3e:00:09:02",
        hoa: undefined,
      },
      {
        ...vm2,
        name: "vm4",
        domid: 10,
        primaryMac: "00:16:3e:00:0a:01",
        secondaryMac: "00:16:3e:00:0a:02",
        hoa: "2001:db8:b::77",
      },
    ],
  });
  const has = (re: RegExp) =>
    t.true(
      p.some((x) => re.test(x)),
      `${re} in:\n${p.join("\n")}`,
    );
  has(/node name "vm" is used twice/);
  has(/domid 5 is used by two VMs/);
  has(/MAC 00:16:3e:00:00:01 is used by two VMs/);
  has(/home address 2001:db8:f::5 is used by two VMs/);
  has(/extraVms\[1\]\.hoa: every VM needs its own home address/);
  has(/home address 2001:db8:b::77 is inside sites\.b\.prefix/);
  t.true(
    problems({ ...base, toolstack: { restore: "xapi" } }).some((x) =>
      x.includes("the lab's XAPI models a pool with one VM"),
    ),
  );
});

test("control server replicas share an etcd cluster: more than one on SQLite is refused, with the reason", (t) => {
  const withMobility = (extra: Record<string, unknown>) => {
    const topo = clone();
    return { ...topo, mobility: { ...topo.mobility, ...extra } };
  };
  t.deepEqual(problems(withMobility({ store: "etcd", replicas: 2 })), []);
  const p = problems(withMobility({ replicas: 2 }));
  t.true(
    p.some((x) => x.includes('mobility.replicas 2 needs mobility.store "etcd"')),
    p.join("\n"),
  );
  t.true(
    problems(withMobility({ store: "etcd", replicas: 4 })).some((x) => x.startsWith("mobility.replicas")),
  );
  const urls = controlUrls(parseTopology(withMobility({ store: "etcd", replicas: 3 })), {
    hoa: "2001:db8:f::5",
    controlPort: 7360,
    bindingPort: 7361,
    store: "etcd",
    replicas: 3,
  });
  t.deepEqual(urls, [
    "https://[2001:db8:c::1]:7360",
    "https://[2001:db8:c::1]:7370",
    "https://[2001:db8:c::1]:7380",
  ]);
});

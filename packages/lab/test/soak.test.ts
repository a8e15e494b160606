// The soak's pure parts: the fault schedule, the leak rules against a baseline, tracking leaks across
// migrations (found, repaired), the per-fault table and the exit status.
import test from "ava";
import {
  FAULTS,
  type FinalCheck,
  faultRows,
  faultSchedule,
  type LeakContext,
  leakLines,
  leaksOf,
  type MigrationRecord,
  type Observation,
  soakExitCode,
  soakTable,
  trackLeaks,
} from "../src/soak.js";

const ctx: LeakContext = {
  hoa: "2001:db8:f::5",
  sites: { a: "2001:db8:a::/64", b: "2001:db8:b::/64" },
  hostSite: { hosta: "a", hostb: "b" },
  locatorsPerHoa: 2,
};

const emptyHost = {
  stagingBridges: [],
  radvd: [],
  routes: 4,
  state: { vms: {}, staging: {} },
  processes: { node: 1 },
};

/** A fresh lab: the VM on hosta, eth0 its primary with its site-a address. */
const baseline: Observation = {
  vmHost: "hosta",
  hosts: { hosta: emptyHost, hostb: emptyHost },
  vm: {
    processes: { node: 1 },
    tables: ["xenroam"],
    maps: {},
    addresses: [{ ifname: "eth0", address: "2001:db8:a::216:3eff:fe00:1" }],
    defaultRoutes: [{ dev: "eth0", metric: 64 }],
    paused: false,
  },
  cn: { processes: { node: 1 }, tables: ["xenroam"], maps: { hoa_to_locator: 1, locator_to_hoa: 1 } },
  router: { processes: { node: 1, radvd: 1 } },
  servicesDown: {},
};

const keys = (o: Observation) => leaksOf(o, baseline, ctx).map((l) => l.key);

test("the schedule: a clean first migration, then each fault followed by a clean one", (t) => {
  const s = faultSchedule(13, FAULTS);
  t.deepEqual(s, [
    "none",
    "agent-killed",
    "none",
    "radvd-killed",
    "none",
    "xenroam-killed",
    "none",
    "control-down",
    "none",
    "xenstored-restarted",
    "none",
    "fail-after-pause",
    "none",
  ]);
  t.deepEqual(faultSchedule(3, []), ["none", "none", "none"]);
  t.deepEqual(faultSchedule(6, ["control-down"]), [
    "none",
    "control-down",
    "none",
    "control-down",
    "none",
    "control-down",
  ]);
  // 100 migrations: half clean, every fault 8 or 9 times.
  const many = faultSchedule(100, FAULTS);
  t.is(many.filter((f) => f === "none").length, 50);
  for (const f of FAULTS) t.true([8, 9].includes(many.filter((x) => x === f).length), f);
});

test("a lab like its baseline has no leaks", (t) => {
  t.deepEqual(keys(baseline), []);
});

test("a staging bridge and radvd with no prepared VM leak; a prepared VM's are in use, its record is reported", (t) => {
  const orphan: Observation = {
    ...baseline,
    hosts: {
      ...baseline.hosts,
      hosta: {
        ...emptyHost,
        stagingBridges: ["xr-b"],
        radvd: [
          { pid: 4242, ppid: 1 },
          { pid: 4243, ppid: 4242 },
        ],
        processes: { node: 1, radvd: 1 },
        state: { vms: {}, staging: { b: { bridge: "xr-b", users: ["vm"], radvd: { pid: 4242 } } } },
      },
    },
  };
  t.deepEqual(keys(orphan), [
    "hosta: bridge xr-b",
    "hosta: radvd 4242",
    "hosta: radvd 4243",
    "hosta: state staging b",
  ]);

  const prepared: Observation = {
    ...orphan,
    hosts: {
      ...orphan.hosts,
      hosta: {
        ...(orphan.hosts.hosta ?? emptyHost),
        state: {
          vms: { vm: { phase: "prepared", site: "b", migrationId: "m1" } },
          staging: { b: { bridge: "xr-b", users: ["vm"], radvd: { pid: 4242 } } },
        },
      },
    },
    // The guest holds its MoA on the secondary and a standby route while prepared: expected.
    vm: {
      ...baseline.vm,
      addresses: [...baseline.vm.addresses, { ifname: "eth1", address: "2001:db8:b::216:3eff:fe00:2" }],
      defaultRoutes: [...baseline.vm.defaultRoutes, { dev: "eth1", metric: 2100 }],
    },
  };
  // radvd's privilege-separated child (4243) belongs to the recorded one.
  t.deepEqual(keys(prepared), ["hosta: state vm m1"]);
  t.is(leaksOf(prepared, baseline, ctx)[0]?.label, "state record (prepared)");
});

test("the VM's addresses: the current site's on the primary only; the HoA is never a leak", (t) => {
  const moved: Observation = {
    ...baseline,
    vmHost: "hostb",
    vm: {
      ...baseline.vm,
      addresses: [
        { ifname: "eth1", address: "2001:db8:b::216:3eff:fe00:2" },
        { ifname: "eth1", address: "2001:db8:f::5" },
        // The old site's address, still on the old primary after the move.
        { ifname: "eth0", address: "2001:db8:a::216:3eff:fe00:1" },
      ],
      defaultRoutes: [
        { dev: "eth1", metric: 64 },
        { dev: "eth0", metric: 1024 },
      ],
    },
  };
  t.deepEqual(keys(moved), ["vm: address 2001:db8:a::216:3eff:fe00:1 on eth0", "vm: default routes"]);
});

test("nftables: tables beyond or missing from the baseline, maps beyond their bound", (t) => {
  const o: Observation = {
    ...baseline,
    vm: { ...baseline.vm, tables: [] },
    cn: { ...baseline.cn, tables: ["xenroam", "other"], maps: { hoa_to_locator: 1, locator_to_hoa: 3 } },
  };
  t.deepEqual(keys(o), [
    "vm: nft table xenroam missing",
    "cn: nft table other",
    "cn: nft map locator_to_hoa",
  ]);
  // Current and previous locator: within the bound.
  t.deepEqual(
    keys({ ...baseline, cn: { ...baseline.cn, maps: { hoa_to_locator: 1, locator_to_hoa: 2 } } }),
    [],
  );
});

test("processes beyond the baseline, host routes and services down are reported", (t) => {
  const o: Observation = {
    ...baseline,
    hosts: { ...baseline.hosts, hostb: { ...emptyHost, routes: 6, processes: { node: 2 } } },
    router: { processes: { node: 1, radvd: 1 } },
    servicesDown: { "xenroam-agent": "failed" },
  };
  t.deepEqual(keys(o), ["hostb: routes", "hostb: process node", "service xenroam-agent"]);
});

test("tracking: a leak is found once, kept while it stays, and closed by what took it away", (t) => {
  const item = (key: string) => ({ key, kind: "state" as const, label: "x", detail: key });
  let step = trackLeaks([], [item("a")], 2, "xenroam-killed", "migration");
  t.deepEqual(
    step.found.map((f) => [f.key, f.foundAfter, f.fault]),
    [["a", 2, "xenroam-killed"]],
  );
  step = trackLeaks(step.records, [item("a"), item("b")], 3, "none", "migration");
  t.deepEqual(
    step.found.map((f) => f.key),
    ["b"],
  );
  t.deepEqual(step.repaired, []);
  // The next migration cleared "a"; then xenroam status's reconcile repaired "b".
  step = trackLeaks(step.records, [item("b")], 4, "radvd-killed", "migration");
  t.deepEqual(
    step.repaired.map((r) => [r.key, r.fault, r.repairedAfter, r.repairedBy]),
    [["a", "xenroam-killed", 4, "migration"]],
  );
  step = trackLeaks(step.records, [], 4, "radvd-killed", "reconcile");
  t.deepEqual(
    step.repaired.map((r) => [r.key, r.fault, r.repairedBy]),
    [["b", "none", "reconcile"]],
  );
  // The same key again later is a new leak.
  step = trackLeaks(step.records, [item("a")], 6, "control-down", "migration");
  t.deepEqual(
    step.found.map((f) => [f.key, f.fault]),
    [["a", "control-down"]],
  );
  t.is(step.records.length, 3);
});

const migration = (over: Partial<MigrationRecord>): MigrationRecord => ({
  index: 1,
  fault: "none",
  from: "hosta",
  to: "hostb",
  outcome: "migrated",
  method: "dual-interface",
  durationMs: 2000,
  completed: true,
  pausedAfter: false,
  hoaReachable: true,
  cnReachable: true,
  settleMs: 100,
  leaksFound: [],
  leaksCleared: [],
  leaksRepaired: [],
  reconciled: [],
  ...over,
});

const fine: FinalCheck = {
  host: "hostb",
  paused: false,
  hoaReachable: true,
  cnReachable: true,
  repairs: {},
};

test("the table: one row per fault that ran, and the totals; the exit status", (t) => {
  const ms = [
    migration({ index: 1 }),
    migration({
      index: 2,
      fault: "radvd-killed",
      injected: { ok: true, detail: "" },
      method: "plain",
      fallback: "silent",
    }),
    migration({
      index: 3,
      fault: "xenroam-killed",
      injected: { ok: true, detail: "" },
      outcome: "killed",
      completed: false,
    }),
    migration({ index: 4 }),
  ];
  const { records } = trackLeaks(
    trackLeaks(
      [],
      [{ key: "k", kind: "state", label: "state record (prepared)", detail: "d" }],
      3,
      "xenroam-killed",
      "migration",
    ).records,
    [],
    4,
    "none",
    "migration",
  );
  const rows = faultRows(ms, records);
  t.deepEqual(
    rows.map((r) => [
      r.fault,
      r.migrations,
      r.injected,
      r.completed,
      r.fallbacks,
      r.leaks,
      r.repaired,
      r.cleared,
    ]),
    [
      ["none", 2, 0, 2, 0, 0, 0, 0],
      ["radvd-killed", 1, 1, 1, 1, 0, 0, 0],
      ["xenroam-killed", 1, 1, 0, 0, 0, 0, 1],
      ["total", 4, 2, 3, 1, 0, 0, 1],
    ],
  );
  const table = soakTable(rows);
  t.regex(
    table,
    /^\| fault \| migrations \| injected \| completed \| fallbacks \| leaks \| repaired by reconcile \| cleared by next migration \| paused after \| unreachable after \|/,
  );
  t.regex(table, /\| xenroam-killed \| 1 \| 1 \| 0 \| 0 \| 0 \| 0 \| 1 \| 0 \| 0 \|/);
  t.regex(table, /\| \*\*total\*\* \| 4 \| {2}\| 3 \| 1 \| 0 \| 0 \| 1 \| 0 \| 0 \|/);
  t.deepEqual(leakLines(records), [
    "- xenroam-killed: state record (prepared): none left; repaired by reconcile 0, cleared by the next migration 1 (e.g. d)",
  ]);
  t.is(soakExitCode(rows, fine), 0);
  t.is(soakExitCode(rows, { ...fine, hoaReachable: false }), 1);
  t.is(soakExitCode(faultRows([...ms, migration({ index: 5, pausedAfter: true })], records), fine), 1);
  const leaked = trackLeaks(
    [],
    [{ key: "k", kind: "bridge", label: "b", detail: "d" }],
    2,
    "agent-killed",
    "reconcile",
  ).records;
  t.is(soakExitCode(faultRows(ms, leaked), fine), 1);
});

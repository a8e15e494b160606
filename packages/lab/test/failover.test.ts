// The failover measurement's pure parts: its fault schedule, reading the services' JSON lines out of the
// supervisor's log, each activation's lag to the correspondent, and the figure.
import test from "ava";
import {
  activationLags,
  failoverMarkdown,
  failoverSchedule,
  figureOf,
  type FailoverMigration,
  replicaStartsIn,
  serviceEvents,
} from "../src/failover.js";

const HOA = "2001:db8:f::5";

/** A supervisor log line carrying a service's own JSON line, as runSupervisor writes them. */
function out(service: string, ts: number, event: string, fields: Record<string, unknown> = {}): string {
  const line = JSON.stringify({ ts: new Date(ts).toISOString(), component: "x", event, ...fields });
  return JSON.stringify({
    ts: new Date(ts).toISOString(),
    component: "lab-supervisor",
    event: "service_output",
    service,
    stream: "stdout",
    line,
  });
}

test("the schedule kills a replica every fourth migration and keeps a member down for three", (t) => {
  const s = failoverSchedule(16);
  t.deepEqual(s.slice(0, 8), [
    "kill-watched-replica",
    "none",
    "kill-etcd-leader",
    "none",
    "kill-watched-replica",
    "none",
    "restart-etcd",
    "none",
  ]);
  t.is(s[10], "kill-etcd-follower", "the second cycle kills a follower");
  t.is(failoverSchedule(3).length, 3);
  // Each replica is killed at most every eighth migration (the two alternate): far from the supervisor's
  // five restarts a minute.
  t.is(s.filter((f) => f === "kill-watched-replica").length, 4);
});

test("service events are the services' own JSON lines; other lines and torn ones are skipped", (t) => {
  const log = [
    out("xenroam-control", 1000, "activated", { hoa: HOA, seq: 2 }),
    JSON.stringify({
      ts: new Date(1001).toISOString(),
      component: "lab-supervisor",
      event: "service_started",
      service: "xenroam-control",
    }),
    JSON.stringify({ event: "service_output", service: "radvd", line: "radvd: not json" }),
    '{"event":"service_output", torn',
    "",
  ].join("\n");
  const events = serviceEvents(log);
  t.is(events.length, 1);
  t.is(events[0]?.service, "xenroam-control");
  t.is(events[0]?.ts, 1000);
  t.is(events[0]?.fields.seq, 2);
  t.is(replicaStartsIn(log, 1000), 1);
  t.is(replicaStartsIn(log, 2000), 0);
});

test("an activation's lag runs from its first acceptance to the correspondent learning it from the stream", (t) => {
  const events = serviceEvents(
    [
      out("xenroam-control", 900, "activated", { hoa: HOA, seq: 1, locator: "2001:db8:a::1" }), // before the run
      out("xenroam-control-2", 1000, "activated", { hoa: HOA, seq: 2, locator: "2001:db8:b::1" }),
      out("xenroam-control", 1010, "activated", { hoa: HOA, seq: 2, locator: "2001:db8:b::1" }), // relayed again
      out("xenroam-correspondent", 1040, "binding_learned", { hoa: HOA, seq: 2, via: "watch" }),
      out("xenroam-control", 2000, "activated", { hoa: HOA, seq: 3, locator: "2001:db8:a::2" }),
      out("xenroam-control", 2100, "activated", { hoa: "2001:db8:f::6", seq: 3, locator: "2001:db8:a::3" }),
      out("xenroam-control", 3000, "activated", { hoa: HOA, seq: 4, locator: "2001:db8:b::2" }),
      out("xenroam-correspondent", 3500, "binding_learned", { hoa: HOA, seq: 4, via: "watch" }),
    ].join("\n"),
  );
  const lags = activationLags(events, HOA, 950);
  t.deepEqual(
    lags.map((l) => [l.seq, l.replica, l.lagMs]),
    [
      [2, "xenroam-control-2", 40],
      // seq 3 was never learned as itself; seq 4, learned later, counts for it (the stream gives the latest).
      [3, "xenroam-control", 1500],
      [4, "xenroam-control", 500],
    ],
  );
  const none = activationLags(
    serviceEvents(out("xenroam-control", 1000, "activated", { hoa: HOA, seq: 5, locator: "2001:db8:a::9" })),
    HOA,
  );
  t.is(none[0]?.lagMs, undefined, "never learned: missed");
});

test("the figure: lags per migration, the longest with and without a fault, missed activations", (t) => {
  const mig = (index: number, fault: FailoverMigration["fault"], moa: string): FailoverMigration => ({
    index,
    startedAt: index * 1000 + 500,
    from: "hosta",
    to: "hostb",
    fault,
    target: undefined,
    faultAtMs: fault === "none" ? undefined : 780,
    method: "dual-interface",
    fallback: undefined,
    moa,
    mappedAfterMs: 100,
    activationAfterMs: 90,
    lagMs: undefined,
    watchMovedAfterMs: undefined,
    error: undefined,
  });
  const events = serviceEvents(
    [
      out("xenroam-control", 1000, "activated", { hoa: HOA, seq: 2, locator: "2001:db8:b::1" }),
      out("xenroam-correspondent", 1300, "control_failover", { to: "https://[2001:db8:c::1]:7370" }),
      out("xenroam-control-2", 1310, "etcd_watch_down", { lookMs: 250 }),
      out("xenroam-control-2", 1500, "etcd_watch_resumed", { downMs: 190 }),
      out("xenroam-correspondent", 1400, "binding_learned", { hoa: HOA, seq: 2, via: "watch" }),
      out("xenroam-control", 2000, "activated", { hoa: HOA, seq: 3, locator: "2001:db8:a::2" }),
      out("xenroam-correspondent", 2020, "binding_learned", { hoa: HOA, seq: 3, via: "watch" }),
      out("xenroam-control", 3000, "activated", { hoa: HOA, seq: 4, locator: "2001:db8:b::2" }),
      // Back to the first MoA: its own activation, its own lag.
      out("xenroam-control", 4000, "activated", { hoa: HOA, seq: 5, locator: "2001:db8:b::1" }),
      out("xenroam-correspondent", 4007, "binding_learned", { hoa: HOA, seq: 5, via: "watch" }),
    ].join("\n"),
  );
  const f = figureOf(
    [
      mig(0, "kill-watched-replica", "2001:db8:b::1"),
      mig(1, "none", "2001:db8:a::2"),
      mig(2, "none", "2001:db8:b::2"),
      mig(3, "none", "2001:db8:b::1"),
    ],
    [],
    events,
    HOA,
    0,
    1,
  );
  t.deepEqual(
    f.migrations.map((m) => m.lagMs),
    [400, 20, 1007, 7],
    "seq 4 reached the correspondent only as part of seq 5, a second later",
  );
  t.is(f.activations, 4);
  t.deepEqual(f.missed, []);
  t.is(f.longestInterruptionMs, 1007);
  t.is(f.longestWithoutFaultMs, 1007);
  t.deepEqual(
    f.lags.map((l) => [l.seq, l.at]),
    [
      [2, 1000],
      [3, 2000],
      [4, 3000],
      [5, 4000],
    ],
  );
  t.is(f.watchFailovers, 1);
  t.deepEqual(
    f.migrations.map((m) => m.watchMovedAfterMs),
    [20, undefined, undefined, undefined],
    "killed at 500 + 780 ms, moved at 1300",
  );
  t.is(f.longestWatchMoveMs, 20);
  t.is(f.etcdWatchDowns, 1);
  t.is(f.etcdWatchDownMs, 190);
  t.is(f.replicaStarts, 1);
});

test("the failover table: a row per fault, and the line that says what was missed and the longest wait", (t) => {
  const row = (
    index: number,
    fault: FailoverMigration["fault"],
    lagMs: number | undefined,
  ): FailoverMigration => ({
    index,
    startedAt: 0,
    from: "hosta",
    to: "hostb",
    fault,
    target: undefined,
    faultAtMs: 10,
    method: "dual-interface",
    fallback: undefined,
    moa: "2001:db8:b::1",
    mappedAfterMs: 2000,
    activationAfterMs: 1500,
    lagMs,
    watchMovedAfterMs: fault === "none" ? undefined : 9,
    error: undefined,
  });
  const md = failoverMarkdown({
    migrations: [row(0, "kill-watched-replica", 40), row(1, "none", 3), row(2, "none", 5)],
    activations: 3,
    missed: [],
    lag: { p50Ms: 5, p95Ms: 40, maxMs: 40 },
    longestInterruptionMs: 40,
    longestWithoutFaultMs: 5,
    watchFailovers: 1,
    longestWatchMoveMs: 9,
    etcdWatchDowns: 0,
    etcdWatchDownMs: 0,
    watchDownMs: 0,
    catchUps: [{ member: "etcd-1", downForMs: 9000, caughtUpMs: 180, behindBy: 0 }],
    replicaStarts: 1,
    lags: [],
  });
  t.regex(
    md,
    /\| the replica the correspondent watches SIGKILLed \| 1 \| 1 of 1 \| 1\.50 s \| 1 of 1 \| 40 ms \| 40 ms \|/,
  );
  t.regex(
    md,
    /\| none \(right after a fault, or between two\) \| 2 \| 2 of 2 \| 1\.50 s \| 2 of 2 \| 3 ms \| 5 ms \|/,
  );
  t.regex(
    md,
    /none missed; the longest a correspondent waited for one 40 ms \(5 ms in migrations without a fault\)/,
  );
  t.regex(md, /etcd-1 caught up 180 ms after its restart \(down 9\.0 s\)/);
});

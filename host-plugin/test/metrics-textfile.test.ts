// Each migration's record for node_exporter's textfile collector: rendered, written atomically one file per VM
// with its counters carried over, read back with a Prometheus text-format parser; and the engine's side:
// every migration recorded (method, fallback, failure), a recorder that fails never failing the migration.
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "ava";
import { FakeNetlink } from "@xenroam/netlink";
import { encodeMessage, parseRequest, parseSites } from "@xenroam/protocol";
import { createTextfileMetrics, textfileName } from "../src/adapters/textfile.js";
import { LinuxStaging } from "../src/adapters/linux-staging.js";
import {
  counted,
  downtimeMs,
  Engine,
  escapeLabelValue,
  FakeDom0Channel,
  FakeMigrationMetrics,
  FakeRadvd,
  FakeToolstack,
  type Journal,
  MemoryState,
  type MigrationRecord,
  readCounters,
  renderMigrationTextfile,
} from "../src/index.js";

/** A family as parse-prometheus-text-format (prom2json's shape) gives it. */
interface Family {
  readonly name: string;
  readonly help: string;
  readonly type: string;
  readonly metrics: ReadonlyArray<{ readonly value?: string; readonly labels?: Record<string, string> }>;
}
const parsePrometheusText = createRequire(import.meta.url)("parse-prometheus-text-format") as (
  text: string,
) => Family[];

const sample = (families: readonly Family[], name: string, labels: Record<string, string>) => {
  const s = families
    .find((f) => f.name === name)
    ?.metrics.find((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v));
  return s?.value === undefined ? undefined : Number(s.value);
};

const T0 = Date.UTC(2026, 11, 5, 10, 0, 0);
/** An xl migration with the method: the pause seen on xenstore, no pause figure from the toolstack. */
const XL_MOVE: MigrationRecord = {
  migrationId: "m20261205T100000-00abcd",
  vm: "web1",
  outcome: "dual-interface",
  startedAt: T0,
  endedAt: T0 + 5230,
  timeline: [
    { phase: "start", atMs: 0 },
    { phase: "guest-prepared", atMs: 820 },
    { phase: "xl-migrate", atMs: 840 },
    { phase: "suspended", atMs: 4100 },
    { phase: "binding-relayed", atMs: 4112 },
    { phase: "running-on-destination", atMs: 4310 },
    { phase: "source-cleaned", atMs: 5230 },
  ],
};

test("a migration's record, rendered and parsed: phases, outcome, downtime, when, counters", (t) => {
  const text = renderMigrationTextfile(XL_MOVE, counted(readCounters(undefined, "web1"), XL_MOVE));
  const families = parsePrometheusText(text);
  const vm = { vm: "web1" };
  t.deepEqual(
    families.map((f) => [f.name, f.type]),
    [
      ["xenroam_migration_last_outcome", "GAUGE"],
      ["xenroam_migration_timestamp_seconds", "GAUGE"],
      ["xenroam_migration_duration_seconds", "GAUGE"],
      ["xenroam_migration_downtime_seconds", "GAUGE"],
      ["xenroam_migration_phase_seconds", "GAUGE"],
      ["xenroam_migrations_total", "COUNTER"],
      ["xenroam_migration_fallbacks_total", "COUNTER"],
    ],
  );
  for (const f of families) t.true(f.help.length > 10, f.name);
  t.deepEqual(
    ["dual-interface", "plain", "fallback", "failed"].map((outcome) =>
      sample(families, "xenroam_migration_last_outcome", { ...vm, outcome }),
    ),
    [1, 0, 0, 0],
  );
  t.is(sample(families, "xenroam_migration_timestamp_seconds", vm), (T0 + 5230) / 1000);
  t.is(sample(families, "xenroam_migration_duration_seconds", vm), 5.23);
  t.is(sample(families, "xenroam_migration_downtime_seconds", vm), 0.21, "suspended to running on xl");
  t.is(sample(families, "xenroam_migration_phase_seconds", { ...vm, phase: "suspended" }), 4.1);
  t.is(sample(families, "xenroam_migration_phase_seconds", { ...vm, phase: "source-cleaned" }), 5.23);
  t.is(families.find((f) => f.name === "xenroam_migration_phase_seconds")?.metrics.length, 7);
  t.is(sample(families, "xenroam_migrations_total", { ...vm, outcome: "dual-interface" }), 1);
  t.is(sample(families, "xenroam_migrations_total", { ...vm, outcome: "failed" }), 0);
  t.is(sample(families, "xenroam_migration_fallbacks_total", { ...vm, reason: "silent" }), 0);
  t.notRegex(
    text,
    /^[^#].* \d+ \d+$/m,
    "no sample carries a timestamp (the textfile collector refuses them)",
  );
});

test("downtime: the toolstack's pause when it says, else suspend to running, else none", (t) => {
  t.is(downtimeMs(XL_MOVE), 210);
  t.is(downtimeMs({ ...XL_MOVE, pausedMs: 50 }), 50);
  t.is(
    downtimeMs({ ...XL_MOVE, timeline: XL_MOVE.timeline.filter((m) => m.phase !== "suspended") }),
    undefined,
  );
  const failed: MigrationRecord = { ...XL_MOVE, outcome: "failed", timeline: XL_MOVE.timeline.slice(0, 4) };
  const text = renderMigrationTextfile(failed, counted(readCounters(undefined, "web1"), failed));
  t.notRegex(text, /downtime_seconds\{/, "a failed move has no downtime sample");
  t.is(
    sample(parsePrometheusText(text), "xenroam_migration_last_outcome", { vm: "web1", outcome: "failed" }),
    1,
  );
});

test("label values are escaped per the exposition format; the parser reads the VM's name back", (t) => {
  t.is(escapeLabelValue('a\\b"c\nd'), 'a\\\\b\\"c\\nd');
  const vm = 'odd "vm"\\ name\nline two';
  const r = { ...XL_MOVE, vm, migrationId: "m1\n# TYPE injected gauge" };
  const text = renderMigrationTextfile(r, counted(readCounters(undefined, vm), r));
  t.is(text.split("\n").filter((l) => l.startsWith("#") && !/^# (HELP|TYPE) xenroam_/.test(l)).length, 1);
  const families = parsePrometheusText(text);
  t.is(sample(families, "xenroam_migration_last_outcome", { vm, outcome: "dual-interface" }), 1);
  t.deepEqual(readCounters(text, vm).outcomes, { "dual-interface": 1, plain: 0, fallback: 0, failed: 0 });
  t.deepEqual(readCounters(text, "web1").outcomes, { "dual-interface": 0, plain: 0, fallback: 0, failed: 0 });
});

test("file names: the VM's name when safe, escaped otherwise, never a path", (t) => {
  t.is(textfileName("web1"), "xenroam-web1.prom");
  t.is(textfileName("db.example-2_x"), "xenroam-db.example-2_x.prom");
  t.is(textfileName("../../etc/passwd"), "xenroam-%2E%2E%2F%2E%2E%2Fetc%2Fpasswd.prom");
  t.is(textfileName(".hidden"), "xenroam-%2Ehidden.prom");
  t.not(textfileName("a/b"), textfileName("a_b"));
  const long = textfileName("v".repeat(300));
  t.true(long.length < 160);
  t.not(long, textfileName(`${"v".repeat(299)}w`));
});

test("the textfile collector's files: one a VM, replaced atomically, counters carried over", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "xenroam-textfile-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const metrics = createTextfileMetrics(dir, 4242);
  await metrics.record(XL_MOVE);
  await metrics.record({ ...XL_MOVE, outcome: "fallback", fallback: "silent", endedAt: T0 + 9000 });
  await metrics.record({ ...XL_MOVE, outcome: "failed", timeline: XL_MOVE.timeline.slice(0, 3) });
  await metrics.record({ ...XL_MOVE, vm: "db1", outcome: "plain", pausedMs: 120 });
  t.deepEqual(readdirSync(dir).sort(), ["xenroam-db1.prom", "xenroam-web1.prom"], "no .prom.4242 left");
  const web1 = parsePrometheusText(readFileSync(join(dir, "xenroam-web1.prom"), "utf8"));
  const vm = { vm: "web1" };
  t.deepEqual(
    ["dual-interface", "plain", "fallback", "failed"].map((outcome) =>
      sample(web1, "xenroam_migrations_total", { ...vm, outcome }),
    ),
    [1, 0, 1, 1],
  );
  t.is(sample(web1, "xenroam_migration_fallbacks_total", { ...vm, reason: "silent" }), 1);
  t.is(sample(web1, "xenroam_migration_last_outcome", { ...vm, outcome: "failed" }), 1);
  t.is(sample(web1, "xenroam_migration_last_outcome", { ...vm, outcome: "fallback" }), 0);
  t.is(web1.find((f) => f.name === "xenroam_migration_phase_seconds")?.metrics.length, 3);
  const db1 = parsePrometheusText(readFileSync(join(dir, "xenroam-db1.prom"), "utf8"));
  t.is(sample(db1, "xenroam_migrations_total", { vm: "db1", outcome: "plain" }), 1);
  t.is(sample(db1, "xenroam_migration_downtime_seconds", { vm: "db1" }), 0.12);
  // Concatenated, as node_exporter merges the directory: every family once, HELP and TYPE the same.
  const both = parsePrometheusText(
    [
      readFileSync(join(dir, "xenroam-db1.prom"), "utf8"),
      readFileSync(join(dir, "xenroam-web1.prom"), "utf8"),
    ].join(""),
  );
  t.true(both.every((f) => f.type !== "UNTYPED"));

  const missing = createTextfileMetrics(join(dir, "no-such-dir"));
  await t.throwsAsync(() => missing.record(XL_MOVE), {
    message: /cannot write .*no-such-dir.*xenroam-web1\.prom/,
  });
});

const SITES = parseSites({
  sites: [
    { name: "a", prefix: "2001:db8:a::/64", gateway: { linkLocal: "fe80::a:1", mac: "02:00:00:00:0a:01" } },
    { name: "b", prefix: "2001:db8:b::/64", gateway: { linkLocal: "fe80::b:1", mac: "02:00:00:00:0b:01" } },
  ],
  hosts: [
    { name: "hosta", site: "a" },
    { name: "hostb", site: "b" },
  ],
});

/** A host with one VM whose guest answers the prepare (or stays silent), and metrics kept in memory. */
function host(guest: "answers" | "silent") {
  const journal: Journal = [];
  const netlink = new FakeNetlink(["lo"]);
  netlink.seedLink("xenbr0", { kind: "bridge", up: true });
  netlink.seedLink("xrpark0", { kind: "bridge", up: true });
  netlink.seedLink("vif5.0", { kind: "veth", up: true, master: "xenbr0" });
  netlink.seedLink("vif5.1", { kind: "veth", up: true, master: "xrpark0" });
  const toolstack = new FakeToolstack(journal);
  toolstack.addVm("vm", "hosta", 5, [
    { devid: 0, mac: "00:16:3e:00:05:01", ifname: "vif5.0", bridge: "xenbr0" },
    { devid: 1, mac: "00:16:3e:00:05:02", ifname: "vif5.1", bridge: "xrpark0" },
  ]);
  const channel = new FakeDom0Channel(journal);
  channel.guest = (domid, key, value) => {
    const r = parseRequest(value);
    if (key !== "request" || guest === "silent" || !r.ok || r.value.kind !== "prepare") return;
    const answer = encodeMessage({
      v: 1,
      id: r.value.id,
      status: "prepared",
      moa: "2001:db8:b:0:216:3eff:fe00:502",
      ifname: "eth1",
    });
    setTimeout(() => channel.guestWrite(domid, "answer", answer), 5);
  };
  const metrics = new FakeMigrationMetrics(journal);
  const logged: Array<{ event: string; fields: Record<string, unknown> }> = [];
  const engine = new Engine({
    host: "hosta",
    bridges: { real: "xenbr0", parking: "xrpark0" },
    staging: new LinuxStaging(netlink, "xrpark0"),
    radvd: new FakeRadvd(journal),
    channel,
    toolstack,
    sites: SITES,
    state: new MemoryState(),
    log: (event, fields = {}) => logged.push({ event, fields }),
    now: () => Date.now(),
    metrics,
  });
  return { engine, toolstack, metrics, journal, logged };
}

test("the engine records every migration it starts: with the method, after a fallback, and a failed one", async (t) => {
  const h = host("answers");
  const report = await h.engine.migrate("vm", "hostb", { migrationId: "m1" });
  t.is(h.journal.at(-1), "metrics record vm dual-interface", "recorded once the move is over");
  const [moved] = h.metrics.records;
  t.like(moved, { migrationId: "m1", vm: "vm", outcome: "dual-interface", pausedMs: 50 });
  t.deepEqual(moved?.timeline, report.timeline);
  t.true((moved?.endedAt ?? 0) >= (moved?.startedAt ?? Infinity));

  const silent = host("silent");
  const plain = await silent.engine.migrate("vm", "hostb", { migrationId: "m2", timeoutMs: 30 });
  t.is(plain.fallbackKind, "silent");
  t.like(silent.metrics.records[0], { outcome: "fallback", fallback: "silent" });
  t.true(silent.metrics.records[0]?.timeline.some((m) => m.phase === "fallback"));

  const same = host("answers");
  await same.engine.migrate("vm", "hostb", { method: false });
  t.like(same.metrics.records[0], { outcome: "plain" });

  const failing = host("answers");
  failing.toolstack.failAfterPause = "resumed-here";
  await t.throwsAsync(() => failing.engine.migrate("vm", "hostb", { migrationId: "m3" }), {
    message: /restore failed/,
  });
  t.like(failing.metrics.records[0], { migrationId: "m3", outcome: "failed" });
  t.false("pausedMs" in (failing.metrics.records[0] ?? {}));
});

test("a record that cannot be written is a warning in the log, never a failed migration", async (t) => {
  const h = host("answers");
  h.metrics.fail = true;
  const report = await h.engine.migrate("vm", "hostb", { migrationId: "m1" });
  t.is(report.method, "dual-interface");
  t.like(h.logged.find((l) => l.event === "migration_metrics_failed")?.fields, {
    migration: "m1",
    vm: "vm",
    error: "no space left on device",
  });
});

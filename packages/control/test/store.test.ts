// The Store contract, run against every backend: MemoryStore and SqliteStore (a real database file).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "ava";
import Database from "better-sqlite3";
import { MemoryStore, type Standby, type Store } from "../src/index.js";
import { SqliteStore, StoreError } from "../src/sqlite.js";

const backends: Array<[string, () => { store: Store; reopen?: () => Store }]> = [
  ["memory", () => ({ store: new MemoryStore() })],
  [
    "sqlite",
    () => {
      const dir = mkdtempSync(join(tmpdir(), "xr-store-"));
      const file = join(dir, "control.db");
      process.on("exit", () => rmSync(dir, { recursive: true, force: true }));
      return { store: new SqliteStore(file), reopen: () => new SqliteStore(file) };
    },
  ],
];

const B = (hoa: string, active: string | undefined, seq: number, locators: string[]) => ({
  hoa,
  vm: `vm-${hoa}`,
  active,
  seq,
  issued: seq,
  locators,
  standbys: [] as Standby[],
});

for (const [name, make] of backends) {
  test(`${name}: VMs, sites and credentials round-trip`, async (t) => {
    const { store } = make();
    await store.putVm({ name: "web", hoa: "fd00::1", macs: ["00:16:3e:00:00:01"] });
    await store.putVm({ name: "db", hoa: "fd00::2", macs: [] });
    t.deepEqual(await store.vm("web"), { name: "web", hoa: "fd00::1", macs: ["00:16:3e:00:00:01"] });
    t.is((await store.vmByHoa("fd00::2"))?.name, "db");
    t.deepEqual(
      (await store.vms()).map((v) => v.name),
      ["db", "web"],
    );
    t.is(await store.sites(), undefined);
    const doc = {
      sites: [
        {
          name: "a",
          prefix: "2001:db8:a::/64",
          gateway: { linkLocal: "fe80::1", mac: "02:00:00:00:00:01" },
          locatorProof: "host" as const,
          ra: { minIntervalMs: 30, maxIntervalMs: 70 },
        },
      ],
      hosts: [{ name: "h", site: "a" }],
    };
    await store.putSites(doc);
    t.deepEqual(await store.sites(), doc);
    await store.putCredential("h1", { kind: "vm", name: "web" });
    await store.putCredential("h2", { kind: "vm", name: "web" });
    t.is(await store.principal("h1"), undefined, "a new credential replaces the old one");
    t.deepEqual(await store.principal("h2"), { kind: "vm", name: "web" });
    await store.close();
  });

  test(`${name}: revisions grow; the change stream is compacted per HoA and resumes from a revision`, async (t) => {
    const { store, reopen } = make();
    t.is(await store.revision(), 0);
    t.is(await store.putBinding(B("fd00::1", undefined, 0, [])), 1);
    t.is(await store.putBinding(B("fd00::2", "2001:db8::2", 1, ["2001:db8::2"])), 2);
    t.is(await store.putBinding(B("fd00::1", "2001:db8::1", 1, ["2001:db8::1"])), 3);
    t.deepEqual(
      (await store.changesSince(0, 10)).map((c) => [c.revision, c.binding.hoa]),
      [
        [2, "fd00::2"],
        [3, "fd00::1"],
      ],
    );
    t.deepEqual(
      (await store.changesSince(2, 10)).map((c) => c.revision),
      [3],
    );
    t.is((await store.changesSince(0, 1)).length, 1, "a page");
    t.is(await store.hoaOfLocator("2001:db8::1"), "fd00::1");
    t.is(await store.hoaOfLocator("2001:db8::9"), undefined);
    t.deepEqual(await store.binding("fd00::1"), B("fd00::1", "2001:db8::1", 1, ["2001:db8::1"]));
    if (reopen) {
      await store.close();
      const again = reopen();
      t.is(await again.revision(), 3, "the revision survives a reopen");
      t.deepEqual(await again.binding("fd00::2"), B("fd00::2", "2001:db8::2", 1, ["2001:db8::2"]));
      t.is(await again.putBinding(B("fd00::2", "2001:db8::3", 2, ["2001:db8::3"])), 4);
      await again.close();
    } else await store.close();
  });
}

for (const [name, make] of backends) {
  test(`${name}: a binding's previous locator round-trips, and is absent when there is none`, async (t) => {
    const { store, reopen } = make();
    const moved = {
      ...B("fd00::1", "2001:db8:b::1", 2, ["2001:db8:b::1", "2001:db8:a::1"]),
      previous: "2001:db8:a::1",
    };
    await store.putBinding(moved);
    await store.putBinding(B("fd00::2", "2001:db8:a::2", 1, ["2001:db8:a::2"]));
    t.deepEqual(await store.binding("fd00::1"), moved);
    t.deepEqual(await store.binding("fd00::2"), B("fd00::2", "2001:db8:a::2", 1, ["2001:db8:a::2"]));
    if (reopen) {
      await store.close();
      const again = reopen();
      t.deepEqual(
        (await again.changesSince(0, 10)).map((c) => c.binding),
        [moved, B("fd00::2", "2001:db8:a::2", 1, ["2001:db8:a::2"])],
      );
      await again.close();
    } else await store.close();
  });
}

for (const [name, make] of backends) {
  test(`${name}: standbys and the issued sequence round-trip; only locators listed count as claimed`, async (t) => {
    const { store, reopen } = make();
    const rec = {
      ...B("fd00::1", "2001:db8:a::1", 3, ["2001:db8:a::1", "2001:db8:b::1"]),
      issued: 7,
      standbys: [
        { locator: "2001:db8:b::1", seq: 6, proven: true },
        { locator: "2001:db8:b::2", seq: 7, proven: false, requested: true },
      ],
    };
    await store.putBinding(rec);
    t.deepEqual(await store.binding("fd00::1"), rec);
    t.is(await store.hoaOfLocator("2001:db8:b::1"), "fd00::1");
    t.is(await store.hoaOfLocator("2001:db8:b::2"), undefined, "an unproven standby claims nothing");
    t.deepEqual(
      (await store.standbyClaims("2001:db8:b::2")).map((c) => [c.hoa, c.standby.seq, c.standby.proven]),
      [["fd00::1", 7, false]],
      "but it is found among the standbys",
    );
    t.deepEqual(await store.standbyClaims("2001:db8:b::9"), []);
    if (reopen) {
      await store.close();
      const again = reopen();
      t.deepEqual(await again.binding("fd00::1"), rec);
      await again.close();
    } else await store.close();
  });
}

test("sqlite: a schema 2 database is upgraded: bindings keep their active and previous locators, standbys go", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "xr-store-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, "control.db");
  const old = new Database(file);
  old.exec(`
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
    CREATE TABLE bindings (hoa TEXT PRIMARY KEY, vm TEXT NOT NULL, active TEXT, seq INTEGER NOT NULL,
      locators TEXT NOT NULL, revision INTEGER NOT NULL UNIQUE, previous TEXT) STRICT;
    INSERT INTO meta VALUES ('schema', '2'), ('revision', '1');
    INSERT INTO bindings VALUES ('fd00::1', 'web', '2001:db8:b::1', 4,
      '["2001:db8:b::1","2001:db8:a::1","2001:db8:c::9"]', 1, '2001:db8:a::1');`);
  old.close();
  const store = new SqliteStore(file);
  t.deepEqual(await store.binding("fd00::1"), {
    hoa: "fd00::1",
    vm: "web",
    active: "2001:db8:b::1",
    seq: 4,
    issued: 4,
    locators: ["2001:db8:b::1", "2001:db8:a::1"],
    standbys: [],
    previous: "2001:db8:a::1",
  });
  t.is(await store.revision(), 2, "the rewritten binding is a change, at a new revision");
  t.deepEqual(
    (await store.changesSince(1, 10)).map((c) => c.binding.hoa),
    ["fd00::1"],
    "a watcher that stayed connected learns it",
  );
  await store.close();
});

test("sqlite: a database file that is not one is refused with its name", (t) => {
  const dir = mkdtempSync(join(tmpdir(), "xr-store-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const err = t.throws(() => new SqliteStore(join(dir, "missing-dir", "x.db")), { instanceOf: StoreError });
  t.regex(err.message, /cannot open database .*missing-dir/);
});

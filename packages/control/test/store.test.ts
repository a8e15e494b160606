// The Store contract (store-contract.ts), run against every backend: MemoryStore, SqliteStore (a real
// database file) and EtcdStore on a real three-member etcd cluster on loopback, each test under its own key
// prefix. Then what only SQLite has: its schema upgrades and its file.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "ava";
import Database from "better-sqlite3";
import { EtcdCluster } from "@xenroam/process/etcd-cluster";
import { EtcdStore } from "../src/etcd.js";
import { MemoryStore } from "../src/index.js";
import { SqliteStore, StoreError } from "../src/sqlite.js";
import { storeContract } from "./store-contract.js";

// Started by the first etcd test (a missing /usr/bin/etcd fails those, and only those, saying what to run).
let cluster: Promise<EtcdCluster> | undefined;
test.after.always(async () => {
  await (await cluster?.catch(() => undefined))?.stop();
});

storeContract(test, { name: "memory", open: async () => ({ store: new MemoryStore() }) });

storeContract(test, {
  name: "sqlite",
  open: async () => {
    const dir = mkdtempSync(join(tmpdir(), "xr-store-"));
    const file = join(dir, "control.db");
    process.on("exit", () => rmSync(dir, { recursive: true, force: true }));
    return { store: new SqliteStore(file), reopen: async () => new SqliteStore(file) };
  },
});

let prefixes = 0;
storeContract(test, {
  name: "etcd",
  open: async () => {
    cluster ??= EtcdCluster.start(3);
    const target = {
      endpoints: (await cluster).endpoints,
      tls: false,
      prefix: `/xr-contract-${++prefixes}/`,
    };
    return { store: await EtcdStore.open(target), reopen: () => EtcdStore.open(target) };
  },
});

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

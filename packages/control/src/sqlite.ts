// The default Store: one SQLite database file (better-sqlite3), WAL journal, synchronous=FULL so an
// accepted binding survives a crash of the server or of the machine. The only importer of better-sqlite3.

import Database from "better-sqlite3";
import type { SitesDocument } from "@xenroam/protocol";
import {
  type BindingRecord,
  type Change,
  ChangeListeners,
  type Principal,
  type Standby,
  type Store,
  StoreError,
  type VmRecord,
} from "./store.js";

export { StoreError } from "./store.js";

const SCHEMA_VERSION = 3;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS vms (
  name TEXT PRIMARY KEY,
  hoa  TEXT NOT NULL UNIQUE,
  macs TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS sites (id INTEGER PRIMARY KEY CHECK (id = 1), document TEXT NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS bindings (
  hoa      TEXT PRIMARY KEY,
  vm       TEXT NOT NULL,
  active   TEXT,
  seq      INTEGER NOT NULL,
  locators TEXT NOT NULL,
  revision INTEGER NOT NULL UNIQUE,
  previous TEXT,
  issued   INTEGER NOT NULL DEFAULT 0,
  standbys TEXT NOT NULL DEFAULT '[]'
) STRICT;
CREATE TABLE IF NOT EXISTS credentials (
  token_hash TEXT PRIMARY KEY,
  kind       TEXT NOT NULL CHECK (kind IN ('vm', 'peer')),
  name       TEXT NOT NULL,
  UNIQUE (kind, name)
) STRICT;
`;

interface BindingRow {
  hoa: string;
  vm: string;
  active: string | null;
  seq: number;
  locators: string;
  revision: number;
  previous: string | null;
  issued: number;
  standbys: string;
}

function toBinding(r: BindingRow): BindingRecord {
  return {
    hoa: r.hoa,
    vm: r.vm,
    active: r.active ?? undefined,
    seq: r.seq,
    issued: Math.max(r.issued, r.seq),
    locators: JSON.parse(r.locators) as string[],
    standbys: JSON.parse(r.standbys) as Standby[],
    ...(r.previous ? { previous: r.previous } : {}),
  };
}

export class SqliteStore implements Store {
  private readonly db: Database.Database;
  private readonly listeners = new ChangeListeners();

  /** Opens (creating if needed) the database at `file`; ":memory:" for a throwaway one. */
  constructor(file: string) {
    try {
      this.db = new Database(file);
    } catch (err) {
      throw new StoreError(`cannot open database ${file}: ${(err as Error).message}`);
    }
    this.db.pragma("journal_mode = WAL");
    this.db.pragma("synchronous = FULL");
    this.db.pragma("busy_timeout = 5000");
    this.db.exec(SCHEMA);
    const row = this.db.prepare("SELECT value FROM meta WHERE key = 'schema'").get() as
      { value: string } | undefined;
    if (!row) {
      this.db
        .prepare("INSERT INTO meta (key, value) VALUES ('schema', ?), ('revision', '0')")
        .run(String(SCHEMA_VERSION));
    } else if (Number(row.value) === 1 || Number(row.value) === 2) {
      // Schema 1 had no previous locator (nothing to roll back to): the column is added, empty. Schema 2 had
      // no issued sequence and no standby list: standbys registered under it are dropped from the published
      // locators (their activations could not be told from stale ones); their VMs register them again at
      // their next prepare.
      this.db.transaction(() => {
        if (Number(row.value) === 1) this.db.exec("ALTER TABLE bindings ADD COLUMN previous TEXT");
        this.db.exec("ALTER TABLE bindings ADD COLUMN issued INTEGER NOT NULL DEFAULT 0");
        this.db.exec("ALTER TABLE bindings ADD COLUMN standbys TEXT NOT NULL DEFAULT '[]'");
        this.db.exec(
          `UPDATE bindings SET issued = seq, locators = (SELECT json_group_array(l.value) FROM json_each(bindings.locators) l
             WHERE l.value = bindings.active OR l.value = bindings.previous)`,
        );
        // Rewritten rows are changes: a watcher that stays connected across the upgrade learns them.
        this.db.exec(
          `UPDATE bindings SET revision = revision + (SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'revision');
           UPDATE meta SET value = (SELECT COALESCE(MAX(revision), CAST(meta.value AS INTEGER)) FROM bindings)
             WHERE key = 'revision'`,
        );
        this.db.prepare("UPDATE meta SET value = ? WHERE key = 'schema'").run(String(SCHEMA_VERSION));
      })();
    } else if (Number(row.value) !== SCHEMA_VERSION) {
      this.db.close();
      throw new StoreError(
        `database ${file} has schema ${row.value}; this xenroam-control understands ${SCHEMA_VERSION}`,
      );
    }
  }

  async vm(name: string) {
    const r = this.db.prepare("SELECT name, hoa, macs FROM vms WHERE name = ?").get(name) as
      { name: string; hoa: string; macs: string } | undefined;
    return r && { name: r.name, hoa: r.hoa, macs: JSON.parse(r.macs) as string[] };
  }

  async vmByHoa(hoa: string) {
    const r = this.db.prepare("SELECT name FROM vms WHERE hoa = ?").get(hoa) as { name: string } | undefined;
    return r && this.vm(r.name);
  }

  async vms() {
    const rows = this.db.prepare("SELECT name, hoa, macs FROM vms ORDER BY name").all() as Array<{
      name: string;
      hoa: string;
      macs: string;
    }>;
    return rows.map((r) => ({ name: r.name, hoa: r.hoa, macs: JSON.parse(r.macs) as string[] }));
  }

  async putVm(vm: VmRecord) {
    this.db
      .prepare(
        "INSERT INTO vms (name, hoa, macs) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET hoa = excluded.hoa, macs = excluded.macs",
      )
      .run(vm.name, vm.hoa, JSON.stringify(vm.macs));
  }

  async sites() {
    const r = this.db.prepare("SELECT document FROM sites WHERE id = 1").get() as
      { document: string } | undefined;
    return r && (JSON.parse(r.document) as SitesDocument);
  }

  async putSites(doc: SitesDocument) {
    this.db
      .prepare(
        "INSERT INTO sites (id, document) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET document = excluded.document",
      )
      .run(JSON.stringify(doc));
  }

  async binding(hoa: string) {
    const r = this.db.prepare("SELECT * FROM bindings WHERE hoa = ?").get(hoa) as BindingRow | undefined;
    return r && toBinding(r);
  }

  async hoaOfLocator(locator: string) {
    const r = this.db
      .prepare("SELECT b.hoa FROM bindings b, json_each(b.locators) l WHERE l.value = ? LIMIT 1")
      .get(locator) as { hoa: string } | undefined;
    return r?.hoa;
  }

  async standbyClaims(locator: string) {
    const rows = this.db
      .prepare(
        "SELECT b.hoa AS hoa, s.value AS standby FROM bindings b, json_each(b.standbys) s WHERE json_extract(s.value, '$.locator') = ?",
      )
      .all(locator) as Array<{ hoa: string; standby: string }>;
    return rows.map((r) => ({ hoa: r.hoa, standby: JSON.parse(r.standby) as Standby }));
  }

  async putBinding(b: BindingRecord) {
    // One transaction: the revision counter and the row move together, or neither does.
    const tx = this.db.transaction((rec: BindingRecord) => {
      this.db.prepare("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'revision'").run();
      const revision = Number(
        (this.db.prepare("SELECT value FROM meta WHERE key = 'revision'").get() as { value: string }).value,
      );
      this.db
        .prepare(
          `INSERT INTO bindings (hoa, vm, active, seq, locators, revision, previous, issued, standbys)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (hoa) DO UPDATE SET vm = excluded.vm, active = excluded.active, seq = excluded.seq,
             locators = excluded.locators, revision = excluded.revision, previous = excluded.previous,
             issued = excluded.issued, standbys = excluded.standbys`,
        )
        .run(
          rec.hoa,
          rec.vm,
          rec.active ?? null,
          rec.seq,
          JSON.stringify(rec.locators),
          revision,
          rec.previous ?? null,
          rec.issued,
          JSON.stringify(rec.standbys),
        );
      return revision;
    });
    const revision = tx(b);
    this.listeners.notify(revision);
    return revision;
  }

  async changesSince(revision: number, limit: number): Promise<Change[]> {
    const rows = this.db
      .prepare("SELECT * FROM bindings WHERE revision > ? ORDER BY revision LIMIT ?")
      .all(revision, limit) as BindingRow[];
    return rows.map((r) => ({ revision: r.revision, binding: toBinding(r) }));
  }

  async revision() {
    return Number(
      (this.db.prepare("SELECT value FROM meta WHERE key = 'revision'").get() as { value: string }).value,
    );
  }

  async putCredential(tokenHash: string, who: Exclude<Principal, { kind: "admin" }>) {
    this.db.transaction(() => {
      this.db.prepare("DELETE FROM credentials WHERE kind = ? AND name = ?").run(who.kind, who.name);
      this.db
        .prepare("INSERT INTO credentials (token_hash, kind, name) VALUES (?, ?, ?)")
        .run(tokenHash, who.kind, who.name);
    })();
  }

  async principal(tokenHash: string): Promise<Principal | undefined> {
    const r = this.db.prepare("SELECT kind, name FROM credentials WHERE token_hash = ?").get(tokenHash) as
      { kind: "vm" | "peer"; name: string } | undefined;
    return r && { kind: r.kind, name: r.name };
  }

  /** One process owns the database file: the service's own queue orders the writes. */
  async exclusive<T>(work: () => Promise<T>) {
    return work();
  }

  subscribe(onChange: (revision: number) => void) {
    return this.listeners.add(onChange);
  }

  async close() {
    if (this.db.open) this.db.close();
  }
}

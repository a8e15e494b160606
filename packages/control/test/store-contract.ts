// The Store contract: one set of tests every backend passes (store.test.ts runs it against MemoryStore,
// SqliteStore and EtcdStore on a real three-member cluster). Revisions are compared, never spelled out: etcd's
// are the cluster's own.
import type { ExecutionContext, TestFn } from "ava";
import type { BindingRecord, Standby, Store } from "../src/index.js";

export interface Backend {
  readonly name: string;
  /** A fresh, empty store; `reopen` opens another on the same data (a restart, or a second server). */
  open(): Promise<{ store: Store; reopen?: () => Promise<Store> }>;
}

export const B = (
  hoa: string,
  active: string | undefined,
  seq: number,
  locators: string[],
): BindingRecord => ({
  hoa,
  vm: `vm-${hoa}`,
  active,
  seq,
  issued: seq,
  locators,
  standbys: [] as Standby[],
});

/** What a store tells one subscriber, and a wait (bounded) for a revision to be among it. */
export class Recorder {
  readonly seen: number[] = [];
  readonly stop: () => void;
  private check = () => {};

  constructor(store: Store) {
    this.stop = store.subscribe((r) => {
      this.seen.push(r);
      this.check();
    });
  }

  /** Resolves once `revision` (or a later one) was told. */
  until(revision: number, timeoutMs = 10_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(
            new Error(`revision ${revision} not told within ${timeoutMs} ms (told: ${this.seen.join(", ")})`),
          ),
        timeoutMs,
      );
      this.check = () => {
        if (this.seen.some((r) => r >= revision)) {
          clearTimeout(timer);
          resolve();
        }
      };
      this.check();
    });
  }
}

export function storeContract(test: TestFn, backend: Backend): void {
  const { name } = backend;
  const open = async (t: ExecutionContext) => {
    const opened = await backend.open();
    const stores: Store[] = [opened.store];
    t.teardown(() => Promise.all(stores.map((s) => s.close())));
    const reopen = opened.reopen;
    return {
      store: opened.store,
      reopen:
        reopen &&
        (async () => {
          const again = await reopen();
          stores.push(again);
          return again;
        }),
    };
  };

  test(`${name}: VMs, sites and credentials round-trip`, async (t) => {
    const { store } = await open(t);
    await store.putVm({ name: "web", hoa: "fd00::1", macs: ["00:16:3e:00:00:01"] });
    await store.putVm({ name: "db", hoa: "fd00::2", macs: [] });
    t.deepEqual(await store.vm("web"), { name: "web", hoa: "fd00::1", macs: ["00:16:3e:00:00:01"] });
    t.is(await store.vm("nope"), undefined);
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
    await store.putCredential("h3", { kind: "peer", name: "web" });
    t.is(await store.principal("h1"), undefined, "a new credential replaces the old one");
    t.deepEqual(await store.principal("h2"), { kind: "vm", name: "web" });
    t.deepEqual(await store.principal("h3"), { kind: "peer", name: "web" }, "a peer of that name is another");
  });

  test(`${name}: a VM registered again with another HoA no longer holds the old one`, async (t) => {
    const { store } = await open(t);
    await store.putVm({ name: "web", hoa: "fd00::1", macs: [] });
    await store.putVm({ name: "web", hoa: "fd00::9", macs: ["00:16:3e:00:00:09"] });
    t.is(await store.vmByHoa("fd00::1"), undefined);
    t.deepEqual(await store.vmByHoa("fd00::9"), { name: "web", hoa: "fd00::9", macs: ["00:16:3e:00:00:09"] });
    t.is((await store.vms()).length, 1);
  });

  test(`${name}: revisions grow; the change stream is compacted per HoA and resumes from a revision`, async (t) => {
    const { store, reopen } = await open(t);
    t.is(await store.revision(), 0, "no change yet");
    t.deepEqual(await store.changesSince(0, 10), []);
    const r1 = await store.putBinding(B("fd00::1", undefined, 0, []));
    const r2 = await store.putBinding(B("fd00::2", "2001:db8::2", 1, ["2001:db8::2"]));
    const r3 = await store.putBinding(B("fd00::1", "2001:db8::1", 1, ["2001:db8::1"]));
    t.true(0 < r1 && r1 < r2 && r2 < r3, `each write a higher revision: ${r1} ${r2} ${r3}`);
    t.is(await store.revision(), r3);
    t.deepEqual(
      (await store.changesSince(0, 10)).map((c) => [c.revision, c.binding.hoa]),
      [
        [r2, "fd00::2"],
        [r3, "fd00::1"],
      ],
    );
    t.deepEqual(
      (await store.changesSince(r2, 10)).map((c) => c.revision),
      [r3],
    );
    t.deepEqual(await store.changesSince(r3, 10), []);
    t.deepEqual(
      (await store.changesSince(0, 1)).map((c) => c.revision),
      [r2],
      "a page: the oldest first",
    );
    t.is(await store.hoaOfLocator("2001:db8::1"), "fd00::1");
    t.is(await store.hoaOfLocator("2001:db8::9"), undefined);
    t.deepEqual(await store.binding("fd00::1"), B("fd00::1", "2001:db8::1", 1, ["2001:db8::1"]));
    t.is(await store.binding("fd00::9"), undefined);
    if (reopen) {
      await store.close();
      const again = await reopen();
      t.is(await again.revision(), r3, "the revision survives a reopen");
      t.deepEqual(await again.binding("fd00::2"), B("fd00::2", "2001:db8::2", 1, ["2001:db8::2"]));
      t.true((await again.putBinding(B("fd00::2", "2001:db8::3", 2, ["2001:db8::3"]))) > r3);
    }
  });

  test(`${name}: a binding's previous locator round-trips, and is absent when there is none`, async (t) => {
    const { store, reopen } = await open(t);
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
      const again = await reopen();
      t.deepEqual(
        (await again.changesSince(0, 10)).map((c) => c.binding),
        [moved, B("fd00::2", "2001:db8:a::2", 1, ["2001:db8:a::2"])],
      );
    }
  });

  test(`${name}: standbys and the issued sequence round-trip; only locators listed count as claimed`, async (t) => {
    const { store, reopen } = await open(t);
    const rec = {
      ...B("fd00::1", "2001:db8:a::1", 3, ["2001:db8:a::1", "2001:db8:b::1"]),
      issued: 7,
      standbys: [
        { locator: "2001:db8:b::1", seq: 6, proven: true },
        { locator: "2001:db8:b::2", seq: 7, proven: false, requested: true, expiresAt: 1_900_000_000_000 },
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
      const again = await reopen();
      t.deepEqual(await again.binding("fd00::1"), rec);
    }
  });

  test(`${name}: locators and standbys a binding drops are no longer found; two HoAs' claims are both found`, async (t) => {
    const { store } = await open(t);
    const standby = (locator: string, seq: number): Standby => ({ locator, seq, proven: false });
    await store.putBinding({
      ...B("fd00::1", "2001:db8:a::1", 1, ["2001:db8:a::1", "2001:db8:b::1"]),
      standbys: [standby("2001:db8:b::1", 2), standby("2001:db8:c::1", 3)],
      issued: 3,
    });
    await store.putBinding({ ...B("fd00::2", undefined, 0, []), standbys: [standby("2001:db8:c::1", 1)] });
    t.deepEqual((await store.standbyClaims("2001:db8:c::1")).map((c) => c.hoa).sort(), [
      "fd00::1",
      "fd00::2",
    ]);
    // fd00::1 moves to b: a is its previous locator, the standbys go.
    await store.putBinding({
      ...B("fd00::1", "2001:db8:b::1", 4, ["2001:db8:b::1", "2001:db8:a::1"]),
      previous: "2001:db8:a::1",
    });
    t.is(await store.hoaOfLocator("2001:db8:a::1"), "fd00::1");
    t.deepEqual(await store.standbyClaims("2001:db8:b::1"), []);
    t.deepEqual(
      (await store.standbyClaims("2001:db8:c::1")).map((c) => c.hoa),
      ["fd00::2"],
    );
    await store.putBinding(B("fd00::1", "2001:db8:b::1", 5, ["2001:db8:b::1"]));
    t.is(await store.hoaOfLocator("2001:db8:a::1"), undefined, "a locator dropped is free again");
    t.is(await store.hoaOfLocator("2001:db8:b::1"), "fd00::1");
  });

  test(`${name}: subscribers are told the revision of every binding change, until they unsubscribe`, async (t) => {
    const { store } = await open(t);
    const gone = new Recorder(store);
    const stays = new Recorder(store);
    const r1 = await store.putBinding(B("fd00::1", undefined, 0, []));
    const r2 = await store.putBinding(B("fd00::2", undefined, 0, []));
    await stays.until(r2);
    await gone.until(r2);
    t.deepEqual(
      stays.seen.filter((r) => r !== Number.MAX_SAFE_INTEGER),
      [r1, r2],
    );
    gone.stop();
    const r3 = await store.putBinding(B("fd00::3", undefined, 0, []));
    await stays.until(r3); // told to every subscriber at once: the one gone would have been told by now
    t.false(gone.seen.includes(r3), "nothing after unsubscribing");
    stays.stop();
  });

  test(`${name}: exclusive runs the work and answers what it answers, or throws what it throws`, async (t) => {
    const { store } = await open(t);
    t.is(
      await store.exclusive(async () => {
        await store.putBinding(B("fd00::1", undefined, 0, []));
        return "done";
      }),
      "done",
    );
    await t.throwsAsync(
      store.exclusive(async () => {
        throw new Error("refused");
      }),
      { message: "refused" },
    );
    t.is(await store.exclusive(async () => (await store.binding("fd00::1"))?.hoa), "fd00::1", "and goes on");
  });
}

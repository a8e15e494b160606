// The watch stream's reads: long polls woken by one change share one read of the store (a thousand
// correspondents cost one read per change, not a thousand: issue 13's fan-out), and a poll never shares a read
// begun before a change it was not yet listening for.
import test from "ava";
import { type Change, ControlService, generateSigningKeys, MemoryStore } from "../src/index.js";

/** A MemoryStore that counts its change-stream reads and can hold them until released. */
class CountingStore extends MemoryStore {
  reads = 0;
  private held: Array<() => void> | undefined;

  hold(): void {
    this.held = [];
  }

  release(): void {
    const held = this.held ?? [];
    this.held = undefined;
    for (const go of held) go();
  }

  override async changesSince(revision: number, limit: number): Promise<Change[]> {
    this.reads++;
    const held = this.held;
    if (held) await new Promise<void>((resolve) => held.push(resolve));
    return super.changesSince(revision, limit);
  }
}

const keys = generateSigningKeys();
const settle = () => new Promise((r) => setImmediate(r));

test("a thousand long polls woken by one change share one read of the store, and all get the change", async (t) => {
  const store = new CountingStore();
  const service = new ControlService({ store, ...keys });
  const polls = Array.from({ length: 1000 }, () => service.changes(0, 5000));
  await settle();
  const waiting = store.reads;
  t.true(waiting <= 1, `the polls' first reads, begun together, are one too (${waiting})`);
  await service.registerVm("web1", "2001:db8:f::10");
  const answers = await Promise.all(polls);
  t.is(store.reads - waiting, 1, "one read for the thousand woken polls");
  t.true(answers.every((a) => a.changes.length === 1 && a.changes[0]?.binding.vm === "web1"));
  t.true(answers.every((a) => a.revision === answers[0]?.revision && a.revision > 0));
  // Once no change is told of, a new poll still reads anew: nothing is kept past the read.
  await service.changes(0);
  t.is(store.reads - waiting, 2);
});

test("a poll that begins after a change is told of does not share a read begun before it", async (t) => {
  const store = new CountingStore();
  const service = new ControlService({ store, ...keys });
  store.hold();
  // A's read begins, and is held: what it returns was read before the change below.
  const a = service.changes(0, 5000);
  await settle();
  t.is(store.reads, 1);
  const hoa = "2001:db8:f::10";
  const registered = service.registerVm("web1", hoa);
  await settle();
  // B begins after the change was told of: its read is its own.
  const b = service.changes(0, 5000);
  await settle();
  t.is(store.reads, 2, "B did not join A's read");
  store.release();
  await registered;
  const [ra, rb] = await Promise.all([a, b]);
  t.deepEqual(
    [ra, rb].map((r) => r.changes.map((c) => c.binding.hoa)),
    [[hoa], [hoa]],
  );
});

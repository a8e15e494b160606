import test from "ava";
import { encodeFrame, isXenstoreError, XenstoreClient, XenstoreError, XS } from "../src/index.js";
import { reader, rig } from "./helpers.js";

test("client and server round-trip every operation", async (t) => {
  const { dom0 } = await rig(t);
  const xs = await dom0();
  await xs.write("/local/domain/3/name", "vm3");
  t.is(await xs.read("/local/domain/3/name"), "vm3");
  await xs.write("/local/domain/3/empty", "");
  t.is(await xs.read("/local/domain/3/empty"), "");
  await xs.mkdir("/local/domain/3/data/xenroam");
  t.deepEqual(await xs.directory("/local/domain/3"), ["data", "empty", "name"]);
  t.deepEqual(await xs.getPerms("/local/domain/3/name"), [{ domid: 0, access: "n" }]);
  await xs.setPerms("/local/domain/3/data", [
    { domid: 3, access: "n" },
    { domid: 7, access: "r" },
  ]);
  t.deepEqual(await xs.getPerms("/local/domain/3/data"), [
    { domid: 3, access: "n" },
    { domid: 7, access: "r" },
  ]);
  t.is(await xs.getDomainPath(3), "/local/domain/3");
  await xs.rm("/local/domain/3/data");
  t.deepEqual(await xs.directory("/local/domain/3"), ["empty", "name"]);
  t.is(await xs.tryRead("/local/domain/3/data/xenroam"), undefined);
  const err = await t.throwsAsync(xs.read("/local/domain/3/missing"));
  t.true(err instanceof XenstoreError && err.code === "ENOENT" && err.path === "/local/domain/3/missing");
  const unicode = "état ✓ 😀";
  await xs.write("/tool/xenroam/u", unicode);
  t.is(await xs.read("/tool/xenroam/u"), unicode);
  t.true(isXenstoreError(await t.throwsAsync(xs.write("/bad//path", "x")), "EINVAL"));
  t.true(isXenstoreError(await t.throwsAsync(xs.write("/tool/big", "x".repeat(5000))), "E2BIG"));
});

test("watches fire once on registration, then on writes at or below the path", async (t) => {
  const { dom0 } = await rig(t);
  const [xs, other] = [await dom0(), await dom0()];
  const w = await xs.watch("/local/domain/4/data", "tok");
  const wr = reader(w);
  t.deepEqual(await wr.take(1), [{ path: "/local/domain/4/data", token: "tok" }], "registration event");
  t.true(await wr.quiet(), "only once");
  await other.write("/local/domain/4/data/xenroam/request", "{}");
  const evs = await wr.take(3);
  t.deepEqual(
    evs.map((e) => e.path),
    ["/local/domain/4/data", "/local/domain/4/data/xenroam", "/local/domain/4/data/xenroam/request"],
    "creating intermediate nodes fires for each",
  );
  await other.write("/local/domain/4/elsewhere", "x");
  t.true(await wr.quiet(), "a sibling does not fire");
  await other.rm("/local/domain/4");
  t.deepEqual(
    (await wr.take(1))[0]?.path,
    "/local/domain/4",
    "removing an ancestor fires the watch below it",
  );
  await w.close();
  await other.write("/local/domain/4/data/x", "1");
  t.deepEqual(await wr.take(1), [], "a closed watch ends its iterator with nothing more");
});

test("a guest's relative watch and paths resolve under its own domain", async (t) => {
  const { guest, dom0 } = await rig(t, [5]);
  const [g, d0] = [await guest(5), await dom0()];
  const w = await g.watch("data/xenroam", "r");
  const wr = reader(w);
  await wr.take(1);
  await d0.write("/local/domain/5/data/xenroam/arrived", "1");
  const evs = await wr.take(2);
  t.deepEqual(
    evs.map((e) => e.path),
    ["data/xenroam", "data/xenroam/arrived"],
  );
  t.is(await g.read("data/xenroam/arrived"), "1");
});

test("a guest cannot write, or read, outside what the permissions allow", async (t) => {
  const { guest, dom0 } = await rig(t, [5, 6]);
  const [g5, d0] = [await guest(5), await dom0()];
  await g5.write("data/xenroam/answer", "ok");
  t.is(await d0.read("/local/domain/5/data/xenroam/answer"), "ok");
  t.deepEqual(
    (await d0.getPerms("/local/domain/5/data/xenroam/answer"))[0],
    { domid: 5, access: "n" },
    "guests own what they create",
  );
  for (const p of ["/local/domain/6/data/x", "/tool/xenroam/x", "/local/domain/5x", "/local/x"]) {
    t.true(isXenstoreError(await t.throwsAsync(g5.write(p, "evil")), "EACCES"), p);
  }
  t.true(isXenstoreError(await t.throwsAsync(g5.read("/local/domain/6")), "EACCES"));
  t.true(isXenstoreError(await t.throwsAsync(g5.rm("/local/domain/6")), "EACCES"));
  t.true(
    isXenstoreError(await t.throwsAsync(g5.setPerms("data", [{ domid: 6, access: "b" }])), "EPERM"),
    "no giving away",
  );
  // Dom0 grants read on one of its nodes to the guest: reading works, writing still does not.
  await d0.write("/local/domain/5/control/shutdown", "");
  await d0.setPerms("/local/domain/5/control/shutdown", [
    { domid: 0, access: "n" },
    { domid: 5, access: "r" },
  ]);
  t.is(await g5.read("control/shutdown"), "");
  t.true(isXenstoreError(await t.throwsAsync(g5.write("control/shutdown", "poweroff")), "EACCES"));
  // A watch on another domain's tree never leaks events the guest could not read.
  const w = await g5.watch("/local/domain/6", "peek");
  const wr = reader(w);
  await wr.take(1);
  await d0.write("/local/domain/6/secret", "s");
  t.true(await wr.quiet());
});

test("transactions commit, abort, and retry on EAGAIN", async (t) => {
  const { dom0 } = await rig(t);
  const [a, b] = [await dom0(), await dom0()];
  await a.write("/tool/counter", "0");
  let runs = 0;
  const result = await a.transaction(async (tx) => {
    runs++;
    const v = Number(await tx.read("/tool/counter"));
    if (runs === 1) await b.write("/tool/counter", "10"); // a conflicting write from someone else
    await tx.write("/tool/counter", String(v + 1));
    await tx.write("/tool/seen", String(v));
    return v + 1;
  });
  t.is(runs, 2, "conflict made it run again");
  t.is(result, 11);
  t.is(await a.read("/tool/counter"), "11");

  await t.throwsAsync(
    a.transaction(async (tx) => {
      await tx.write("/tool/never", "1");
      throw new Error("changed my mind");
    }),
    { message: "changed my mind" },
  );
  t.is(await a.tryRead("/tool/never"), undefined, "aborted writes are not visible");

  // Writes elsewhere do not conflict.
  let quietRuns = 0;
  await a.transaction(async (tx) => {
    quietRuns++;
    await tx.read("/tool/counter");
    await b.write("/tool/unrelated", "x");
    await tx.write("/tool/counter", "12");
  });
  t.is(quietRuns, 1);
});

test("Dom0 introduces and releases a guest socket through XS_CONTROL", async (t) => {
  const r = await rig(t);
  const d0 = await r.dom0();
  const path = `${r.dir}/dom7.sock`;
  const intro = await d0.watch("@introduceDomain", "i");
  const ir = reader(intro);
  await ir.take(1);
  await d0.control("introduce", "7", path);
  t.deepEqual((await ir.take(1))[0]?.path, "@introduceDomain");
  const g = await XenstoreClient.connect(path);
  await g.write("data/x", "1");
  t.is(await d0.read("/local/domain/7/data/x"), "1");
  const closed = new Promise<void>((resolve) => {
    void g.read("data/x").then(
      () => g.watch("data/never").catch(() => resolve()),
      () => resolve(),
    );
  });
  await d0.control("release", "7");
  await closed;
  t.is(await d0.tryRead("/local/domain/7"), undefined, "the domain's tree is gone");
  t.true(isXenstoreError(await t.throwsAsync(XenstoreClient.connect(path)), "ENOENT"), "socket removed");
  const g2 = await r.dom0();
  t.true(isXenstoreError(await t.throwsAsync(g2.control("introduce", "0", path)), "EINVAL"));
});

test("guests may not use XS_CONTROL", async (t) => {
  const r = await rig(t, [5]);
  const g = await r.guest(5);
  t.true(isXenstoreError(await t.throwsAsync(g.control("release", "5")), "EACCES"));
});

test("a request left unanswered fails with ETIMEDOUT instead of hanging (a guest can then reconnect)", async (t) => {
  const { Duplex } = await import("node:stream");
  // A peer that takes every frame and never answers: what a guest saw through /dev/xen/xenbus after a resume.
  const silent = new Duplex({
    read() {},
    write(_chunk, _enc, done) {
      done();
    },
  });
  const client = XenstoreClient.over(silent, { requestTimeoutMs: 50 });
  const err = await t.throwsAsync(client.read("data/xenroam/request"));
  t.true(isXenstoreError(err, "ETIMEDOUT"));
  t.regex(err?.message ?? "", /READ data\/xenroam\/request/);
  client.close();
});

test("over /dev/xen/xenbus one request is in flight at a time (the kernel reuses the message buffer)", async (t) => {
  const { Duplex } = await import("node:stream");
  const written: Array<{ reqId: number; path: string }> = [];
  const peer = new Duplex({
    read() {},
    write(chunk: Buffer, _enc, done) {
      written.push({ reqId: chunk.readUInt32LE(4), path: chunk.subarray(16, chunk.length - 1).toString() });
      done();
    },
  });
  const answer = (reqId: number, value: string) =>
    peer.push(encodeFrame({ type: XS.READ, reqId, txId: 0, payload: Buffer.from(value) }));
  const client = XenstoreClient.over(peer, { oneAtATime: true, requestTimeoutMs: 200 });
  const reads = ["request", "answer", "status"].map((k) => client.read(`data/xenroam/${k}`));
  await new Promise((r) => setImmediate(r));
  t.deepEqual(
    written.map((w) => w.path),
    ["data/xenroam/request"],
    "the second request waits for the first's answer",
  );
  answer(written[0]?.reqId ?? 0, "r");
  await new Promise((r) => setImmediate(r));
  t.is(written.length, 2);
  answer(written[1]?.reqId ?? 0, "a");
  // The third is never answered: it times out, and a request after it still goes out.
  await t.throwsAsync(reads[2] as Promise<string>, { message: /ETIMEDOUT|no answer/ });
  t.deepEqual(await Promise.all(reads.slice(0, 2)), ["r", "a"]);
  const fourth = client.read("data/xenroam/arrived");
  await new Promise((r) => setImmediate(r));
  t.is(written.at(-1)?.path, "data/xenroam/arrived");
  answer(written.at(-1)?.reqId ?? 0, "x");
  t.is(await fourth, "x");
  // Requests queued when the connection fails are failed, not sent.
  const queued = [client.read("a"), client.read("b")];
  client.close();
  for (const q of queued) await t.throwsAsync(q);
  t.is(written.at(-1)?.path, "a");
});

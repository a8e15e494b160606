// The carrier hold's xenstore steps against the in-repo xenstored: only a backend at InitWait is held, only a
// held one is released, and the guest's switch for this migration (not another's) ends the wait.
import test, { type ExecutionContext } from "ava";
import type { XenstoreClient } from "@xenroam/xenstore";
import { dom0Xenstore } from "./support/xenstore.js";
import {
  awaitHotplugged,
  awaitSwitch,
  backendStatePath,
  engageHold,
  holdReleased,
  hotplugStatusPath,
  releaseHold,
} from "../src/hold.js";

async function dom0(t: ExecutionContext): Promise<XenstoreClient> {
  const xs = await dom0Xenstore(t, "xr-hold-");
  return xs;
}

const status = (phase: string, id: string) => JSON.stringify({ v: 1, phase, id });

test("engage holds only backends waiting at InitWait; release lets only held ones go", async (t) => {
  const xs = await dom0(t);
  await xs.write(backendStatePath(9, 0), "2");
  await xs.write(backendStatePath(9, 1), "4"); // already connected: too late to hold, left alone
  const log: Array<[string, Record<string, unknown> | undefined]> = [];
  const held = await engageHold(xs, 9, [0, 1, 2], (e, f) => log.push([e, f]));
  t.deepEqual(held, [0]);
  t.is(await xs.read(backendStatePath(9, 0)), "1");
  t.is(await xs.read(backendStatePath(9, 1)), "4");
  t.deepEqual(
    log.map(([e, f]) => [e, f?.devid, f?.backendState]),
    [
      ["hold_skipped", 1, "4"],
      ["hold_skipped", 2, "missing"],
    ],
  );
  await releaseHold(xs, 9, held, () => {});
  t.is(await xs.read(backendStatePath(9, 0)), "2");
  // A second release (a retry) changes nothing: the node no longer reads Initialising.
  await releaseHold(xs, 9, held, () => {});
  t.is(await xs.read(backendStatePath(9, 0)), "2");
  // A gone domain is not revived.
  await releaseHold(xs, 10, [0], () => {});
  t.is(await xs.tryRead(backendStatePath(10, 0)), undefined);
});

test("the hold ends on this migration's switch, not on another phase or another migration's", async (t) => {
  const xs = await dom0(t);
  t.false(holdReleased(status("switching", "m1"), "m1"));
  t.false(holdReleased(status("switched", "m0"), "m1"));
  t.false(holdReleased("not json", "m1"));
  t.true(holdReleased(status("switched", "m1"), "m1"));
  const path = "/local/domain/9/data/xenroam/status";
  await xs.write(path, status("switching", "m1"));
  const waiting = awaitSwitch(xs, path, "m1", 5000);
  await new Promise((r) => setTimeout(r, 50));
  await xs.write(path, status("switched", "m0"));
  await new Promise((r) => setTimeout(r, 50));
  await xs.write(path, status("switched", "m1"));
  t.is(await waiting, "switched");
  const started = Date.now();
  t.is(await awaitSwitch(xs, path, "m2", 200), "timeout");
  // A destroyed domain (the receiver never got GO) will never switch: no waiting out the timeout for it.
  await xs.write("/local/domain/9/name", "web1--incoming");
  const since = Date.now();
  const gone = awaitSwitch(xs, "/local/domain/9/data/xenroam/status", "m3", 10_000, "/local/domain/9/name");
  await xs.rm("/local/domain/9");
  t.is(await gone, "gone");
  t.true(Date.now() - since < 2000);
  t.true(Date.now() - started >= 200);
});

test("awaitHotplugged: true once every vif's hotplug script wrote connected; false when cut short", async (t) => {
  const xs = await dom0(t);
  const done = awaitHotplugged(xs, 9, [0, 1], new AbortController().signal);
  let settled = false;
  void done.then(() => (settled = true));
  await xs.write(hotplugStatusPath(9, 0), "connected");
  await new Promise((r) => setTimeout(r, 50));
  t.false(settled, "vif 1's script has not run yet");
  await xs.write(hotplugStatusPath(9, 1), "connected");
  t.true(await done);

  const stop = new AbortController();
  const cut = awaitHotplugged(xs, 10, [0], stop.signal);
  await xs.write(hotplugStatusPath(10, 0), "error"); // a failed script: never "connected"
  setTimeout(() => stop.abort(), 50);
  t.false(await cut);
});

// The source's view of the pause on xl: libxl's "suspend" in the guest's control/shutdown, however fast the
// guest acknowledges it.
import test, { type ExecutionContext } from "ava";
import type { XenstoreClient } from "@xenroam/xenstore";
import { dom0Xenstore } from "./support/xenstore.js";
import { domidByName, watchSuspend } from "../src/adapters/suspend-watch.js";

async function dom0(t: ExecutionContext): Promise<XenstoreClient> {
  const xs = await dom0Xenstore(t, "xr-suspend-");
  await xs.write("/local/domain/0/name", "Domain-0");
  await xs.write("/local/domain/3/name", "web1");
  await xs.write("/local/domain/4/name", "web2--incoming");
  await xs.write("/local/domain/3/control/shutdown", "");
  return xs;
}

const settle = () => new Promise((r) => setTimeout(r, 100));

test("domains by their xenstore names, the first name asked for first; never Dom0", async (t) => {
  const xs = await dom0(t);
  t.is(await domidByName(xs, ["web2--incoming", "web2"]), 4);
  t.is(await domidByName(xs, ["web1"]), 3);
  t.is(await domidByName(xs, ["Domain-0"]), undefined);
  t.is(await domidByName(xs, ["nope"]), undefined);
});

test("libxl's suspend is seen once, even when the guest has cleared the node before Dom0 reads it", async (t) => {
  const xs = await dom0(t);
  let seen = 0;
  const stop = await watchSuspend(xs, "web1", () => seen++);
  await settle();
  t.is(seen, 0, "the watch's registration is not a suspend");
  // libxl writes "suspend"; the guest's kernel acknowledges at once (libxl_dom_suspend.c 145-148).
  await xs.write("/local/domain/3/control/shutdown", "suspend");
  await xs.write("/local/domain/3/control/shutdown", "");
  await settle();
  t.is(seen, 1);
  await stop();
});

test("a VM that is not there: the watch is refused, so the destination relays instead", async (t) => {
  const xs = await dom0(t);
  await t.throwsAsync(
    watchSuspend(xs, "ghost", () => t.fail()),
    { message: /no domain named ghost/ },
  );
});

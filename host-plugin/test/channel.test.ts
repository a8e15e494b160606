// The Dom0 channel over the lab's xenstored (packages/xenstore, the same wire protocol as Xen's): when
// xenstored drops the connection (a restart), a write is retried once on a new one, so an abort still reaches
// the guest whose migration failed because of it (the fault soak's xenstored-restarted case).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "ava";
import { XenstoreClient, XenstoreServer } from "@xenroam/xenstore";
import { createDom0Channel } from "../src/adapters/channel.js";

test("a connection xenstored dropped is opened again once and the call retried; without reconnect it fails", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "xr-chan-"));
  const socket = join(dir, "dom0.sock");
  let server = new XenstoreServer();
  await server.listen(socket);
  const clients: XenstoreClient[] = [];
  t.teardown(async () => {
    for (const c of clients) c.close();
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const connect = async () => {
    const c = await XenstoreClient.connect(socket);
    clients.push(c);
    return c;
  };
  const first = await connect();
  const channel = createDom0Channel(first, "data/xenroam", connect);
  const plain = createDom0Channel(await connect(), "data/xenroam");
  await channel.write(5, "request", "one");
  t.is(await channel.read(5, "request"), "one");
  // xenstored restarts: every connection it had is gone.
  await server.close();
  server = new XenstoreServer();
  await server.listen(socket);
  await new Promise((r) => setTimeout(r, 50));
  await t.throwsAsync(plain.write(5, "request", "abort"), undefined, "no reconnect: the write fails");
  await channel.write(5, "request", "abort");
  t.true(first.lost, "the first connection is known lost");
  const look = await connect();
  t.is(
    await look.tryRead("/local/domain/5/data/xenroam/request"),
    "abort",
    "the abort reached the new xenstored",
  );
});

// A Dom0 xenstore for a test: the project's own xenstored (packages/xenstore) on a socket in a temporary
// directory, a client connected as Dom0, both gone at the test's end.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ExecutionContext } from "ava";
import { XenstoreClient, XenstoreServer } from "@xenroam/xenstore";

export async function dom0Xenstore(t: ExecutionContext, prefix = "xr-xs-"): Promise<XenstoreClient> {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const server = new XenstoreServer();
  await server.listen(join(dir, "xs.sock"), { domid: 0 });
  const xs = await XenstoreClient.connect(join(dir, "xs.sock"));
  t.teardown(async () => {
    xs.close();
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return xs;
}

import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import test from "ava";
import { XenstoreClient } from "../src/index.js";

const main = fileURLToPath(new URL("../src/main.js", import.meta.url));

test("xenroam-xenstored serves, logs JSON, and leaves nothing on SIGTERM", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "xr-xsd-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const [dom0, guest] = [join(dir, "d0.sock"), join(dir, "g5.sock")];
  const child = spawn(process.execPath, [main, "--socket", dom0, "--guest", `5:${guest}`, "--introduce"], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let log = "";
  child.stderr.on("data", (c) => {
    log += c;
  });
  for (let i = 0; i < 100 && !log.includes('"ready"'); i++) await new Promise((r) => setTimeout(r, 50));
  const xs = await XenstoreClient.connect(guest);
  await xs.write("data/hello", "1");
  xs.close();
  // "close", not "exit": the last log lines may still be in the pipe when the process has exited.
  const exited = new Promise<number | null>((r) => child.on("close", (code) => r(code)));
  child.kill("SIGTERM");
  t.is(await exited, 0);
  t.false(existsSync(dom0));
  t.false(existsSync(guest));
  const lines = log
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as { event: string });
  t.deepEqual(lines.map((l) => l.event).slice(-2), ["stopping", "stopped"]);
});

test("xenroam-xenstored refuses bad arguments with a hint", async (t) => {
  const child = spawn(process.execPath, [main, "--socket", "/tmp/x.sock", "--guest", "zero:/x"], {
    stdio: "pipe",
  });
  let err = "";
  child.stderr.on("data", (c) => {
    err += c;
  });
  const code = await new Promise<number | null>((r) => child.on("close", (c) => r(c)));
  t.not(code, 0);
  t.regex(err, /expected DOMID:\/abs\/path/);
});

test("with --state-file, a restart keeps the store and serves the guest sockets it served (a moved guest's)", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "xr-xsd-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const [dom0, g5, g9, state] = [
    join(dir, "d0.sock"),
    join(dir, "g5.sock"),
    join(dir, "g9.sock"),
    join(dir, "xs.json"),
  ];
  const start = async () => {
    const child = spawn(
      process.execPath,
      [main, "--socket", dom0, "--guest", `5:${g5}`, "--introduce", "--state-file", state],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    let log = "";
    child.stderr.on("data", (c) => {
      log += c;
    });
    for (let i = 0; i < 100 && !log.includes('"ready"'); i++) await new Promise((r) => setTimeout(r, 50));
    return { child, log: () => log };
  };
  const stop = async (child: ReturnType<typeof spawn>) => {
    const exited = new Promise<number | null>((r) => child.on("close", (code) => r(code)));
    child.kill("SIGTERM");
    return exited;
  };
  const first = await start();
  t.teardown(() => first.child.kill("SIGKILL"));
  // The toolstack moves the guest from domid 5 to domid 9 (as the lab's does at a migration).
  const admin = await XenstoreClient.connect(dom0);
  await admin.control("release", "5");
  await admin.control("introduce", "9", g9);
  admin.close();
  const guest = await XenstoreClient.connect(g9);
  await guest.write("data/hello", "1");
  guest.close();
  t.is(await stop(first.child), 0);
  t.true(existsSync(state));

  const second = await start();
  t.teardown(() => second.child.kill("SIGKILL"));
  t.regex(second.log(), /"event":"restored"/);
  t.false(existsSync(state), "the state file is taken");
  t.false(existsSync(g5), "domid 5 is not served again from the command line");
  const back = await XenstoreClient.connect(g9);
  t.is(await back.read("data/hello"), "1");
  back.close();
  t.is(await stop(second.child), 0);
});

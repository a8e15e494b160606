// xenroam-control as a process: init, serve, SIGTERM while a watcher long-polls, restart on the same
// database: nothing lost, the watch resumes from the revision the watcher saw, replays stay refused.
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import test from "ava";
import { ControlClient } from "../src/index.js";

const main = fileURLToPath(new URL("../src/main.js", import.meta.url));

interface Running {
  child: ChildProcess;
  url: string;
  log: () => string;
  stop: () => Promise<number | null>;
}

async function start(dir: string): Promise<Running> {
  const child = spawn(
    process.execPath,
    [
      main,
      "serve",
      "--listen",
      "127.0.0.1:0",
      "--database",
      join(dir, "db", "control.db"),
      "--key",
      join(dir, "control.key"),
      "--admin-token-file",
      join(dir, "admin.token"),
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  let log = "";
  child.stderr?.on("data", (c) => (log += String(c)));
  for (let i = 0; i < 200 && !log.includes('"ready"'); i++) await new Promise((r) => setTimeout(r, 25));
  const ready = log
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { event: string; port?: number })
    .find((l) => l.event === "ready");
  if (!ready?.port) throw new Error(`server did not start: ${log}`);
  const closed = new Promise<number | null>((r) => child.on("close", (code) => r(code)));
  return {
    child,
    url: `http://127.0.0.1:${ready.port}`,
    log: () => log,
    stop: () => {
      child.kill("SIGTERM");
      return closed;
    },
  };
}

test("restart loses no binding; the watch resumes from the last revision seen; replays stay refused", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "xr-control-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const init = () =>
    execFileSync(process.execPath, [
      main,
      "init",
      "--key",
      join(dir, "control.key"),
      "--admin-token-file",
      join(dir, "admin.token"),
    ]).toString();
  t.regex(init(), /created signing key[\s\S]*created admin token/);
  t.regex(init(), /kept existing signing key[\s\S]*kept existing admin token/, "init is idempotent");
  t.is(statSync(join(dir, "control.key")).mode & 0o777, 0o600);
  const adminToken = execFileSync("cat", [join(dir, "admin.token")])
    .toString()
    .trim();

  const first = await start(dir);
  const admin = new ControlClient(first.url, { token: adminToken });
  const pem = await admin.publicKey();
  const { token: vmToken } = await admin.registerVm("vm", "2001:db8:f::5");
  const { token: cnToken } = await admin.registerPeer("cn");
  const vm = new ControlClient(first.url, { token: vmToken });
  const cn = new ControlClient(first.url, { token: cnToken });
  const activation = await vm.registerStandby("vm", "2001:db8:a::5");
  await vm.activate(activation);
  const seen = await cn.changes(0, 0);
  t.is(seen.changes.at(-1)?.binding.active, "2001:db8:a::5");

  // A watcher long-polls while the server is stopped: it gets an answer, the server exits 0.
  const polling = cn.changes(seen.revision, 20_000);
  await new Promise((r) => setTimeout(r, 100));
  t.is(await first.stop(), 0);
  t.deepEqual((await polling).changes, []);
  const events = first
    .log()
    .trim()
    .split("\n")
    .map((l) => (JSON.parse(l) as { event: string }).event);
  t.deepEqual(events.slice(-2), ["stopping", "stopped"]);

  const second = await start(dir);
  t.teardown(() => void second.stop());
  const admin2 = new ControlClient(second.url, { token: adminToken });
  const cn2 = new ControlClient(second.url, { token: cnToken });
  const vm2 = new ControlClient(second.url, { token: vmToken });
  t.is(await admin2.publicKey(), pem, "the same signing key");
  t.like(await cn2.binding("2001:db8:f::5"), { active: "2001:db8:a::5", seq: 1 });
  t.deepEqual((await cn2.changes(seen.revision, 0)).changes, [], "nothing new since the revision seen");
  await t.throwsAsync(vm2.activate(activation), { message: /409 replayed or stale/ });
  // The same through a request rendered ahead (the relay at a guest's suspend): the same answers.
  const stale = await t.throwsAsync(vm2.prepareActivate(activation)(), { message: /409 replayed or stale/ });
  t.is((stale as { status?: number }).status, 409);
  const waiting = cn2.changes(seen.revision, 5000);
  const next = await vm2.registerStandby("vm", "2001:db8:b::5");
  t.is(next.seq, 2);
  const standby = await waiting;
  t.true(standby.revision > seen.revision);
  t.like(standby.changes.at(-1)?.binding, {
    active: "2001:db8:a::5",
    locators: ["2001:db8:a::5", "2001:db8:b::5"],
  });
  const relayed = vm2.prepareActivate(next);
  t.true((await relayed()).revision > standby.revision, "a prepared activation is taken");
  const active = await cn2.changes(standby.revision, 5000);
  t.like(active.changes.at(-1)?.binding, { active: "2001:db8:b::5", seq: 2 });
  t.is(await second.stop(), 0);
});

test("serve refuses to start without init, and says what to run", (t) => {
  const dir = mkdtempSync(join(tmpdir(), "xr-control-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const err = t.throws<Error & { stderr: Buffer; status: number }>(() =>
    execFileSync(
      process.execPath,
      [main, "serve", "--key", join(dir, "k"), "--database", join(dir, "d.db")],
      {
        stdio: "pipe",
      },
    ),
  );
  t.is(err.status, 2);
  t.regex(err.stderr.toString(), /signing key .* does not exist; run `xenroam-control init` first/);
  const bad = t.throws(() =>
    execFileSync(process.execPath, [main, "serve", "--listen", "7360"], { stdio: "pipe" }),
  );
  t.regex((bad as Error & { stderr: Buffer }).stderr.toString(), /expected \[IPV6\]:PORT/);
});

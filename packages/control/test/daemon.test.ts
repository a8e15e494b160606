// xenroam-control as a process: init, serve, SIGTERM while a watcher long-polls, restart on the same
// database: nothing lost, the watch resumes from the revision the watcher saw, replays stay refused. Served
// over TLS: the flags checked, the admin's commands with --ca.
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import test from "ava";
import { ControlClient } from "../src/index.js";
import { makePki } from "./pki.js";

const main = fileURLToPath(new URL("../src/main.js", import.meta.url));

interface Running {
  child: ChildProcess;
  url: string;
  log: () => string;
  stop: () => Promise<number | null>;
}

async function start(dir: string, tls?: { cert: string; key: string }): Promise<Running> {
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
      ...(tls ? ["--tls-cert", tls.cert, "--tls-key", tls.key] : []),
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  let log = "";
  child.stderr?.on("data", (c) => (log += String(c)));
  for (let i = 0; i < 200 && !log.includes('"ready"'); i++) await new Promise((r) => setTimeout(r, 25));
  const ready = log
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { event: string; port?: number; tls?: boolean })
    .find((l) => l.event === "ready");
  if (!ready?.port || ready.tls !== (tls !== undefined)) throw new Error(`server did not start: ${log}`);
  const closed = new Promise<number | null>((r) => child.on("close", (code) => r(code)));
  return {
    child,
    url: `${tls ? "https" : "http"}://127.0.0.1:${ready.port}`,
    log: () => log,
    stop: () => {
      child.kill("SIGTERM");
      return closed;
    },
  };
}

const A5 = "2001:db8:a:0:216:3eff:fe00:5";
const B5 = "2001:db8:b:0:216:3eff:fe00:5";

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
  await admin.putSites({
    sites: ["a", "b"].map((n) => ({
      name: n,
      prefix: `2001:db8:${n}::/64`,
      gateway: { linkLocal: `fe80::${n}:1`, mac: `02:00:00:00:0${n}:01` },
    })),
    hosts: [{ name: "hosta", site: "a" }],
  });
  // The VM's locators are the addresses its MAC makes (EUI-64): proven without anyone's word.
  const { token: vmToken } = await admin.registerVm("vm", "2001:db8:f::5", ["00:16:3e:00:00:05"]);
  const { token: cnToken } = await admin.registerPeer("cn");
  const vm = new ControlClient(first.url, { token: vmToken });
  const cn = new ControlClient(first.url, { token: cnToken });
  const activation = await vm.registerStandby("vm", A5);
  await vm.activate(activation);
  const seen = await cn.changes(0, 0);
  t.is(seen.changes.at(-1)?.binding.active, A5);

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
  t.like(await cn2.binding("2001:db8:f::5"), { active: A5, seq: 1 });
  t.deepEqual((await cn2.changes(seen.revision, 0)).changes, [], "nothing new since the revision seen");
  await t.throwsAsync(vm2.activate(activation), { message: /409 replayed or stale/ });
  // The same through a request rendered ahead (the relay at a guest's suspend): the same answers.
  const stale = await t.throwsAsync(vm2.prepareActivate(activation)(), { message: /409 replayed or stale/ });
  t.is((stale as { status?: number }).status, 409);
  const waiting = cn2.changes(seen.revision, 5000);
  const next = await vm2.registerStandby("vm", B5);
  t.is(next.seq, 2);
  const standby = await waiting;
  t.true(standby.revision > seen.revision);
  t.like(standby.changes.at(-1)?.binding, {
    active: A5,
    locators: [A5, B5],
  });
  const relayed = vm2.prepareActivate(next);
  t.true((await relayed()).revision > standby.revision, "a prepared activation is taken");
  const active = await cn2.changes(standby.revision, 5000);
  t.like(active.changes.at(-1)?.binding, { active: B5, seq: 2 });
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

function cli(args: string[]): { status: number; stdout: string; stderr: string } {
  try {
    return {
      status: 0,
      stdout: execFileSync(process.execPath, [main, ...args], { stdio: "pipe" }).toString(),
      stderr: "",
    };
  } catch (err) {
    const e = err as { status: number; stdout: Buffer; stderr: Buffer };
    return { status: e.status, stdout: e.stdout.toString(), stderr: e.stderr.toString() };
  }
}

test("serve --tls-cert/--tls-key: both or neither, bad files refused with the reason; admins reach it with --ca", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "xr-control-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const key = join(dir, "control.key");
  const tokenFile = join(dir, "admin.token");
  cli(["init", "--key", key, "--admin-token-file", tokenFile]);
  const pki = makePki(dir, ["127.0.0.1"]);
  const other = makePki(dir, ["127.0.0.1"], "other");
  const serve = (...tls: string[]) =>
    cli([
      "serve",
      "--listen",
      "127.0.0.1:0",
      "--database",
      join(dir, "d.db"),
      "--key",
      key,
      "--admin-token-file",
      tokenFile,
      ...tls,
    ]);

  for (const half of [
    ["--tls-cert", pki.cert],
    ["--tls-key", pki.key],
  ]) {
    const r = serve(...half);
    t.is(r.status, 2);
    t.regex(r.stderr, /--tls-cert and --tls-key go together: give both .* or neither/);
  }
  const mismatch = serve("--tls-cert", pki.cert, "--tls-key", other.key);
  t.is(mismatch.status, 2);
  t.regex(mismatch.stderr, /--tls-key .*other-server\.key is not the key of the certificate in --tls-cert/);
  const missing = serve("--tls-cert", join(dir, "none.pem"), "--tls-key", pki.key);
  t.is(missing.status, 2);
  t.regex(missing.stderr, /--tls-cert .*none\.pem does not exist/);
  const notPem = serve("--tls-cert", tokenFile, "--tls-key", pki.key);
  t.is(notPem.status, 2);
  t.regex(notPem.stderr, /--tls-cert .*admin\.token is not a PEM certificate/);

  const server = await start(dir, pki);
  t.teardown(() => void server.stop());
  const admin = (...args: string[]) => cli([...args, "--server", server.url, "--token-file", tokenFile]);
  const added = admin("add-peer", "cn", "--ca", pki.ca);
  t.is(added.status, 0, added.stderr);
  t.like(JSON.parse(added.stdout), { name: "cn" });
  const shown = admin("show", "--ca", pki.ca);
  t.is(shown.status, 0, shown.stderr);
  t.true(Number.isInteger((JSON.parse(shown.stdout) as { revision: number }).revision));
  t.regex(
    admin("show").stderr,
    /its certificate is not trusted: .*system's CAs/,
    "no --ca: the system's CAs",
  );
  t.regex(admin("show", "--ca", other.ca).stderr, /its certificate is not trusted: .*the CA given/);
  t.regex(admin("show", "--ca", join(dir, "none.pem")).stderr, /--ca .*none\.pem does not exist/);
  const plain = cli(["show", "--server", "http://127.0.0.1:1", "--token-file", tokenFile, "--ca", pki.ca]);
  t.is(plain.status, 2);
  t.regex(
    plain.stderr,
    /a CA certificate was given, but the server is reached over plain http:\/\/; use https:\/\//,
  );
  const cn = new ControlClient(server.url, { ca: readFileSync(pki.ca, "utf8") });
  t.like(await cn.health(), { ok: true });
  t.is(await server.stop(), 0, "SIGTERM stops the TLS server cleanly");
});

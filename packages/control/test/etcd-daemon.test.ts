// xenroam-control serve --store etcd://…: two server processes on one real etcd cluster answer as one (a VM
// registered through one is bound through the other, a watcher long-polls the other), a server with another
// signing key is refused, the flags are checked with what to do; over TLS with an etcd user, as etcd's own
// users run it (a one-member cluster with client TLS and authentication on).
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import test, { type ExecutionContext } from "ava";
import { EtcdCluster } from "@xenroam/process/etcd-cluster";
import { ControlClient } from "../src/index.js";
import { makePki } from "./pki.js";

const main = fileURLToPath(new URL("../src/main.js", import.meta.url));

let cluster: EtcdCluster | undefined;
test.before(async () => {
  cluster = await EtcdCluster.start(3);
});
test.after.always(() => cluster?.stop());

/** A directory with a signing key and an admin token, as `init` makes them. */
function initialised(t: ExecutionContext, name = "control") {
  const dir = mkdtempSync(join(tmpdir(), "xr-etcd-daemon-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const key = join(dir, `${name}.key`);
  const tokenFile = join(dir, "admin.token");
  execFileSync(process.execPath, [main, "init", "--key", key, "--admin-token-file", tokenFile]);
  return { dir, key, tokenFile, token: readFileSync(tokenFile, "utf8").trim() };
}

function cli(args: string[], env: NodeJS.ProcessEnv = {}): { status: number; stderr: string } {
  try {
    execFileSync(process.execPath, [main, ...args], { stdio: "pipe", env: { ...process.env, ...env } });
    return { status: 0, stderr: "" };
  } catch (err) {
    const e = err as { status: number; stderr: Buffer };
    return { status: e.status, stderr: e.stderr.toString() };
  }
}

interface Running {
  readonly url: string;
  readonly ready: Record<string, unknown>;
  stop(): Promise<number | null>;
  /** SIGKILL: the server dies with whatever it held (connections, its lease). */
  kill(): Promise<number | null>;
}

async function serve(t: ExecutionContext, args: string[], env: NodeJS.ProcessEnv = {}): Promise<Running> {
  const child: ChildProcess = spawn(process.execPath, [main, "serve", "--listen", "127.0.0.1:0", ...args], {
    stdio: ["ignore", "ignore", "pipe"],
    env: { ...process.env, ...env },
  });
  let log = "";
  child.stderr?.on("data", (c) => (log += String(c)));
  const closed = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)));
  const stop = () => {
    child.kill("SIGTERM");
    return closed;
  };
  t.teardown(() => void stop());
  const ready = await Promise.race([
    new Promise<Record<string, unknown>>((resolve) => {
      child.stderr?.on("data", () => {
        const line = log.split("\n").find((l) => l.includes('"ready"'));
        if (line) resolve(JSON.parse(line) as Record<string, unknown>);
      });
    }),
    closed.then((code) => Promise.reject(new Error(`serve exited ${code}: ${log}`))),
  ]);
  const kill = () => {
    child.kill("SIGKILL");
    return closed;
  };
  return { url: `http://127.0.0.1:${String(ready.port)}`, ready, stop, kill };
}

test("two servers on one etcd cluster answer as one; a server with another signing key is refused", async (t) => {
  const { key, tokenFile, token } = initialised(t);
  const store = `${cluster?.url}/xr-daemon/`;
  const common = ["--store", store, "--key", key, "--admin-token-file", tokenFile];
  const [one, two] = await Promise.all([serve(t, common), serve(t, common)]);
  t.is(one.ready.store, store);
  t.is(one.ready.database, undefined);
  const admin1 = new ControlClient(one.url, { token });
  const admin2 = new ControlClient(two.url, { token });
  t.is(await admin2.publicKey(), await admin1.publicKey());
  await admin1.putSites({
    sites: [
      { name: "a", prefix: "2001:db8:a::/64", gateway: { linkLocal: "fe80::a:1", mac: "02:00:00:00:0a:01" } },
    ],
    hosts: [{ name: "hosta", site: "a" }],
  });
  const { token: vmToken } = await admin1.registerVm("vm", "2001:db8:f::5", ["00:16:3e:00:00:05"]);
  const { token: cnToken } = await admin2.registerPeer("cn");
  const cn = new ControlClient(two.url, { token: cnToken });
  const { revision } = await cn.changes(0, 0);
  const polling = cn.changes(revision, 20_000);
  // The VM's standby (its MAC's EUI-64 address), registered and activated through the first server.
  const vm = new ControlClient(one.url, { token: vmToken });
  await vm.activate(await vm.registerStandby("vm", "2001:db8:a:0:216:3eff:fe00:5"));
  const seen = await polling;
  t.true(seen.revision > revision);
  t.like(await cn.binding("2001:db8:f::5"), { active: "2001:db8:a:0:216:3eff:fe00:5", seq: 1 });

  const other = initialised(t, "other");
  const refused = cli([
    "serve",
    "--listen",
    "127.0.0.1:0",
    "--store",
    store,
    "--key",
    other.key,
    "--admin-token-file",
    tokenFile,
  ]);
  t.is(refused.status, 2);
  t.regex(
    refused.stderr,
    /signing key is not the one the other servers .* copy of the same key file \(--key\)/,
  );
  t.deepEqual(await Promise.all([one.stop(), two.stop()]), [0, 0]);
});

test("serve --store: the URL and the etcd flags are checked, and an unreachable cluster is named", (t) => {
  const { key, tokenFile } = initialised(t);
  const run = (...args: string[]) =>
    cli(["serve", "--listen", "127.0.0.1:0", "--key", key, "--admin-token-file", tokenFile, ...args], {
      XENROAM_ETCD_PASSWORD: "",
    });
  const cases: Array<[string[], RegExp]> = [
    [["--store", "http://127.0.0.1:2379"], /--store: expected etcd:\/\/HOST:PORT/],
    [["--store", "etcd://127.0.0.1:2379", "--database", "/tmp/x.db"], /--store and --database: give one/],
    [
      ["--store", "etcd://127.0.0.1:2379", "--etcd-ca", "/nonexistent"],
      /are for TLS: write the cluster as etcds:\/\//,
    ],
    [
      ["--store", "etcds://127.0.0.1:2379", "--etcd-ca", "/nonexistent"],
      /--etcd-ca \/nonexistent does not exist/,
    ],
    [["--store", "etcds://127.0.0.1:2379", "--etcd-cert", "/x"], /--etcd-cert and --etcd-key go together/],
    [
      ["--store", "etcd://127.0.0.1:2379", "--etcd-user", "xr"],
      /etcd user xr: give its password in --etcd-password-file FILE or in the XENROAM_ETCD_PASSWORD/,
    ],
    [["--etcd-user", "xr"], /--etcd-user: only with --store etcd:\/\//],
    [["--store", "etcd://127.0.0.1:1"], /etcd cluster 127\.0\.0\.1:1 cannot be used: .*endpoint health/],
  ];
  for (const [args, message] of cases) {
    const { status, stderr } = run(...args);
    t.is(status, 2, args.join(" "));
    t.regex(stderr, message, args.join(" "));
  }
});

test("etcds:// with the cluster's CA and an etcd user whose password is in a file; a wrong one is named", async (t) => {
  const { dir, key, tokenFile, token } = initialised(t);
  const pki = makePki(dir, ["127.0.0.1"]);
  const secure = await EtcdCluster.start(1, { tls: { cert: pki.cert, key: pki.key } });
  t.teardown(() => secure.stop());
  await secure.enableAuth("xenroam", "s3cret-etcd-password", "/xenroam/");
  const passwordFile = join(dir, "etcd.password");
  writeFileSync(passwordFile, "s3cret-etcd-password\n", { mode: 0o600 });
  const files = ["--key", key, "--admin-token-file", tokenFile];
  const as = (password: string[], store = secure.url, ca = ["--etcd-ca", pki.ca]) => [
    "serve",
    "--listen",
    "127.0.0.1:0",
    ...["--store", store, ...files, ...ca, "--etcd-user", "xenroam", ...password],
  ];
  const inFile = ["--etcd-password-file", passwordFile];
  const up = await serve(t, as(inFile).slice(3));
  t.is(up.ready.store, `${secure.url}/xenroam/`);
  const admin = new ControlClient(up.url, { token });
  await admin.registerPeer("cn");
  t.is(await up.stop(), 0);
  const fromEnv = await serve(t, as([]).slice(3), { XENROAM_ETCD_PASSWORD: "s3cret-etcd-password" });
  t.is(await fromEnv.stop(), 0, "the password from the environment");

  const wrong = cli(as([]), { XENROAM_ETCD_PASSWORD: "not-it" });
  t.is(wrong.status, 2);
  t.regex(
    wrong.stderr,
    /cannot be used: .*authentication failed.*etcd user xenroam and its password are right/,
  );
  const outside = cli(as(inFile, `${secure.url}/elsewhere/`));
  t.is(outside.status, 2, "a prefix the user may not write");
  t.regex(outside.stderr, /permission denied/);
  const untrusted = cli(as(inFile, secure.url, []));
  t.is(untrusted.status, 2, "without the cluster's CA");
  t.regex(untrusted.stderr, /cannot be used: .*--etcd-ca names the CA of its certificates/);
});

test("a server killed outright: the other takes the writes, and a watcher resumes there from its last revision", async (t) => {
  const { key, tokenFile, token } = initialised(t);
  const common = ["--store", `${cluster?.url}/xr-failover/`, "--key", key, "--admin-token-file", tokenFile];
  const [one, two] = await Promise.all([serve(t, common), serve(t, common)]);
  const admin = new ControlClient(one.url, { token });
  await admin.putSites({
    sites: [
      { name: "a", prefix: "2001:db8:a::/64", gateway: { linkLocal: "fe80::a:1", mac: "02:00:00:00:0a:01" } },
    ],
    hosts: [{ name: "hosta", site: "a" }],
  });
  const { token: vmToken } = await admin.registerVm("vm", "2001:db8:f::5", ["00:16:3e:00:00:05"]);
  const { token: cnToken } = await admin.registerPeer("cn");
  const seen = await new ControlClient(one.url, { token: cnToken }).changes(0, 0);
  t.is(await one.kill(), null);
  const vm = new ControlClient(two.url, { token: vmToken });
  await vm.activate(await vm.registerStandby("vm", "2001:db8:a:0:216:3eff:fe00:5"));
  const resumed = await new ControlClient(two.url, { token: cnToken }).changes(seen.revision, 0);
  t.deepEqual(
    resumed.changes.map((c) => [c.binding.hoa, c.binding.active, c.binding.seq]),
    [["2001:db8:f::5", "2001:db8:a:0:216:3eff:fe00:5", 1]],
  );
  t.true(resumed.revision > seen.revision);
  t.is(await two.stop(), 0);
});

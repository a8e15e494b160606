// The xl adapter's contract, against a recording fake `xl` (XENROAM_XL): the swapped config goes to
// `xl migrate -C` with `xenroam receive` as the transport's far end; the destination runs
// `xl migrate-receive` and holds its "ready" message until the arrival is in the guest's xenstore, so xl
// unpauses a domain that already has it. The fake speaks xl's protocol (fixtures/fake-xl.mjs).
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import test, { type ExecutionContext } from "ava";
import {
  ControlService,
  createControlServer,
  exportPublicKey,
  generateSigningKeys,
  MemoryStore,
} from "@xenroam/control";
import { encodeMessage, type PrepareAnswer } from "@xenroam/protocol";
import { XenstoreClient, XenstoreServer } from "@xenroam/xenstore";
import { receiveRune, XL_DEFAULTS, XlError, XlToolstack } from "../src/adapters/xl.js";
import { parseRelayArgument } from "../src/relay.js";
import { watchSuspend } from "../src/adapters/suspend-watch.js";

const FAKE_XL = fileURLToPath(new URL("../../test/fixtures/fake-xl.mjs", import.meta.url));
const MAIN = fileURLToPath(new URL("../src/main.js", import.meta.url));
const XENSTORE_MODULE = import.meta.resolve("@xenroam/xenstore");

const CFG = `name = "web1"
vif = [ 'mac=00:16:3e:00:00:10,bridge=xenbr0', 'mac=00:16:3e:00:01:10,bridge=xrpark0' ]
`;

interface Call {
  argv: string[];
  /** "unpause": the moment the domain ran; "destroyed": the receiver gave it up. */
  event?: string;
  cfg?: string;
  arrived?: string;
  dest?: string;
  /** At unpause: each vif backend's xenbus state. */
  backend?: Record<string, string | undefined>;
  /** At unpause: the guest's binding as the control server had it (FAKE_XL_BINDING_URL). */
  binding?: Record<string, unknown>;
}

/** The toolstack under test, against the fake `xl` and the test's xenstored; `log` sees xl's progress lines. */
function xlWith(dir: string, sock: string, log?: (event: string, fields?: Record<string, unknown>) => void) {
  return new XlToolstack({
    configPath: join(dir, "{vm}.cfg"),
    transport: "env XENROAM_FAKE_DEST={host}",
    remoteXenroam: `${process.execPath} ${MAIN} --xenstore ${sock} --state-dir ${dir} --parking-bridge lo`,
    stateDir: dir,
    ...(log ? { log } : {}),
  });
}

async function setup(t: ExecutionContext) {
  const dir = mkdtempSync(join(tmpdir(), "xr-xl-"));
  const bin = join(dir, "bin");
  const { mkdirSync } = await import("node:fs");
  mkdirSync(bin);
  writeFileSync(join(bin, "xl"), `#!/bin/sh\nexec "${process.execPath}" "${FAKE_XL}" "$@"\n`);
  chmodSync(join(bin, "xl"), 0o755);
  writeFileSync(join(dir, "web1.cfg"), CFG);
  writeFileSync(
    join(dir, "list-web1.json"),
    JSON.stringify([
      {
        domid: 5,
        config: {
          c_info: { name: "web1" },
          nics: [
            { devid: 0, mac: "00:16:3e:00:00:10", bridge: "xenbr0" },
            { devid: 1, mac: "00:16:3e:00:01:10", bridge: "xrpark0" },
          ],
        },
      },
    ]),
  );
  const xs = new XenstoreServer();
  const sock = join(dir, "xs.sock");
  await xs.listen(sock, { domid: 0 });
  // The source's domain as libxl names it in xenstore (libxl_create.c 810).
  const named = await XenstoreClient.connect(sock);
  await named.write("/local/domain/5/name", "web1");
  named.close();
  const saved = { xl: process.env.XENROAM_XL, dir: process.env.FAKE_XL_DIR };
  // xenroam runs xl from the system's directories, or the one XENROAM_XL names (never PATH's).
  process.env.XENROAM_XL = join(bin, "xl");
  process.env.FAKE_XL_DIR = dir;
  process.env.FAKE_XL_XENSTORE = sock;
  process.env.FAKE_XL_XENSTORE_MODULE = XENSTORE_MODULE;
  t.teardown(async () => {
    if (saved.xl === undefined) delete process.env.XENROAM_XL;
    else process.env.XENROAM_XL = saved.xl;
    await xs.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const toolstack = xlWith(dir, sock);
  const calls = () =>
    readFileSync(join(dir, "log.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Call);
  return { dir, toolstack, calls, sock };
}

const ARRIVED = JSON.stringify({ v: 1, id: "m1", host: "hostb" });

test.serial("domain() reads xl list -l: domid, vifs with devid, MAC, bridge and Dom0 name", async (t) => {
  const { toolstack } = await setup(t);
  const d = await toolstack.domain("web1");
  t.is(d.domid, 5);
  t.deepEqual(
    d.vifs.map((v) => [v.devid, v.mac, v.ifname, v.bridge]),
    [
      [0, "00:16:3e:00:00:10", "vif5.0", "xenbr0"],
      [1, "00:16:3e:00:01:10", "vif5.1", "xrpark0"],
    ],
  );
  await t.throwsAsync(toolstack.domain("nope"), {
    instanceOf: XlError,
    message: /invalid domain identifier/,
  });
});

test.serial(
  "migrate: -C with the bridges swapped, xenroam receive as transport, arrival written before unpause",
  async (t) => {
    const { toolstack, calls } = await setup(t);
    const phases: string[] = [];
    const info = await toolstack.migrate("web1", "hostb", {
      migrationId: "m1",
      bridges: { 0: "xrpark0", 1: "xenbr0" },
      guestWrites: { arrived: ARRIVED },
      mark: (p) => phases.push(p),
    });
    const log = calls();
    t.deepEqual(
      log.map((c) => c.argv[0]),
      ["migrate", "migrate-receive", "(suspend)", "(unpaused)"],
      "source: migrate; destination: receive; xl itself unpauses; no other xl process (xenstore has the rest)",
    );
    const migrate = log[0] as Call;
    t.deepEqual(migrate.argv.slice(0, 5), ["migrate", "-C", migrate.argv[2], "-s", ""]);
    t.is(migrate.argv[5], "web1");
    t.regex(
      migrate.argv[6] ?? "",
      /^exec env XENROAM_FAKE_DEST=hostb .* receive web1 --migration m1 --writes \S+$/,
    );
    t.is(
      migrate.cfg,
      "name = \"web1\"\nvif = [ 'mac=00:16:3e:00:00:10,bridge=xrpark0', 'mac=00:16:3e:00:01:10,bridge=xenbr0' ]\n",
    );
    t.deepEqual(log[1]?.argv, ["migrate-receive"], "xl unpauses on GO: no process in the window");
    t.is(log[1]?.dest, "hostb");
    t.is(log[3]?.arrived, ARRIVED, "the guest's arrival key was there when the domain was unpaused");
    t.is(info.domid, 6);
    // The arrival's keys are written once the domain is complete, or before, while its memory still arrives,
    // when receive found it that early (a loaded machine's timing): then there is no "written" after "found".
    const arrival = info.arrival?.map((m) => m.phase) ?? [];
    t.deepEqual(
      arrival.filter((p) => p !== "written"),
      ["found", "ready-sent", "xl-done"],
      "the destination's steps between the domain complete and running come back in the report",
    );
    t.true(arrival.length === 3 || arrival[1] === "written", `written in its place: ${arrival.join(", ")}`);
    t.is(info.host, "hostb");
    t.deepEqual(
      info.vifs.map((v) => v.bridge),
      ["xrpark0", "xenbr0"],
    );
    t.deepEqual(phases, ["xl-migrate", "running-on-destination"]);
    t.false(existsSync(migrate.argv[2] ?? ""), "the swapped config copy is removed after xl read it");
  },
);

test.serial(
  "migrate: xl's progress lines reach the log as they come; receive's report does not",
  async (t) => {
    const { dir, sock } = await setup(t);
    const lines: string[] = [];
    const toolstack = xlWith(dir, sock, (event, fields) => {
      if (event === "xl" && typeof fields?.line === "string") lines.push(fields.line);
    });
    const info = await toolstack.migrate("web1", "hostb", {
      migrationId: "m1",
      bridges: { 0: "xrpark0", 1: "xenbr0" },
      guestWrites: { arrived: ARRIVED },
    });
    t.is(info.domid, 6, "the report was still read");
    t.true(lines.includes("migration sender: Target reports successful startup."), lines.join(" | "));
    t.false(
      lines.some((l) => l.startsWith("xenroam-receive ")),
      "the receiver's report is data, not progress",
    );
  },
);

test.serial(
  "the arrival is written while the memory still arrives; in the window only the hold and xl's ready",
  async (t) => {
    const { toolstack, calls } = await setup(t);
    process.env.FAKE_XL_RESTORE_MS = "1200";
    t.teardown(() => delete process.env.FAKE_XL_RESTORE_MS);
    const info = await toolstack.migrate("web1", "hostb", {
      migrationId: "m1",
      bridges: { 0: "xrpark0", 1: "xenbr0" },
      guestWrites: { arrived: ARRIVED },
      hold: HOLD,
    });
    t.is(calls().find((c) => c.event === "unpause")?.arrived, ARRIVED);
    t.deepEqual(
      info.arrival?.map((m) => m.phase),
      ["found", "held", "ready-sent", "xl-done"],
      "nothing written in the window: it was there before",
    );
  },
);

test.serial(
  "carrier hold ahead: engaged once the vif's hotplug script has run, while the other vifs are still added",
  async (t) => {
    const { dir, sock, calls } = await setup(t);
    process.env.FAKE_XL_RESTORE_MS = "1200";
    process.env.FAKE_XL_HOTPLUG_MS = "400";
    t.teardown(() => {
      delete process.env.FAKE_XL_RESTORE_MS;
      delete process.env.FAKE_XL_HOTPLUG_MS;
    });
    const events: Array<{ event?: string; devids?: number[] }> = [];
    const toolstack = xlWith(dir, sock, (event, fields) => {
      // receive logs JSON on its stderr, which reaches the source as xl's.
      const line = typeof fields?.line === "string" ? fields.line : "";
      if (event === "xl" && line.startsWith("{")) events.push(JSON.parse(line) as { event?: string });
    });
    await toolstack.migrate("web1", "hostb", {
      migrationId: "m1",
      bridges: { 0: "xrpark0", 1: "xenbr0" },
      guestWrites: { arrived: ARRIVED },
      hold: HOLD,
    });
    const ahead = events.find((e) => e.event === "hold_engaged_ahead");
    t.deepEqual(ahead?.devids, [0], JSON.stringify(events.map((e) => e.event)));
    t.deepEqual(
      calls().find((c) => c.event === "unpause")?.backend,
      { 0: "1", 1: "2" },
      "held when the domain ran, as when engaged in the window",
    );
    const xs = await XenstoreClient.connect(sock);
    t.teardown(() => xs.close());
    await xs.write("/local/domain/6/data/xenroam/status", SWITCHED);
    t.is(
      await waitFor(
        "release",
        5000,
        () => xs.tryRead("/local/domain/0/backend/vif/6/0/state"),
        (v) => v === "2",
      ),
      "2",
      "the hold engaged ahead is released like any other",
    );
  },
);

test.serial("a failed receive fails the migration with xl's reason; nothing is unpaused", async (t) => {
  const { toolstack, calls, dir } = await setup(t);
  writeFileSync(join(dir, "fail-receive"), "");
  const err = await t.throwsAsync(
    toolstack.migrate("web1", "hostb", { migrationId: "m2", bridges: { 0: "xrpark0", 1: "xenbr0" } }),
    { instanceOf: XlError },
  );
  t.regex(err.message, /xl migrate web1 to hostb failed/);
  t.regex(err.message, /restore failed|migrate-receive failed/);
  t.false(calls().some((c) => c.event === "unpause"));
});

test("the receive command line refuses what a shell would misread", (t) => {
  const o = { ...XL_DEFAULTS, stateDir: "/tmp" };
  const rune = receiveRune(o, "web1", "hostb", { migrationId: "m1", bridges: {} });
  t.is(rune, "exec ssh -o BatchMode=yes root@hostb xenroam receive web1 --migration m1 --writes e30");
  t.throws(() => receiveRune(o, "web1", "hostb; reboot", { migrationId: "m1", bridges: {} }), {
    message: /destination "hostb; reboot"/,
  });
  t.throws(() => receiveRune(o, "$(id)", "hostb", { migrationId: "m1", bridges: {} }), {
    message: /VM name/,
  });
});

const HOLD = {
  devids: [0],
  key: "status",
  released: () => false, // the destination decides from the guest's status itself
  timeoutMs: 10_000,
};
const SWITCHED = JSON.stringify({ v: 1, phase: "switched", id: "m1", primary: "eth1", secondary: "eth0" });

async function waitFor<T>(
  what: string,
  ms: number,
  get: () => Promise<T>,
  ok: (v: T) => boolean,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await get();
    if (ok(v) || Date.now() > deadline) return v;
    await new Promise((r) => setTimeout(r, 25));
  }
}

test.serial(
  "carrier hold: the old primary's backend waits at Initialising when the domain runs, until the guest has switched",
  async (t) => {
    const { toolstack, calls, sock, dir } = await setup(t);
    const started = Date.now();
    await toolstack.migrate("web1", "hostb", {
      migrationId: "m1",
      bridges: { 0: "xrpark0", 1: "xenbr0" },
      guestWrites: { arrived: ARRIVED },
      hold: HOLD,
    });
    // The releaser is detached: xl's transport closed with the domain running, not after the hold.
    t.true(Date.now() - started < 5000, `migrate took ${Date.now() - started} ms`);
    const rune = calls()[0]?.argv[6] ?? "";
    t.regex(rune, / --hold 0$/);
    const unpause = calls().find((c) => c.event === "unpause");
    t.deepEqual(unpause?.backend, { 0: "1", 1: "2" }, "vif 0 held (netfront waits), vif 1 free to connect");
    const xs = await XenstoreClient.connect(sock);
    t.teardown(() => xs.close());
    const state0 = () => xs.tryRead("/local/domain/0/backend/vif/6/0/state");
    await new Promise((r) => setTimeout(r, 300));
    t.is(await state0(), "1", "still held while the guest has not switched");
    await xs.write("/local/domain/6/data/xenroam/status", SWITCHED);
    t.is(await waitFor("release", 5000, state0, (v) => v === "2"), "2", "released once the guest switched");
    const lines = await waitFor(
      "the releaser's log",
      2000,
      async () => readFileSync(join(dir, "hold-release.log"), "utf8"),
      (l) => l.includes("hold_released"),
    );
    t.regex(lines, /"event":"hold_released".*"why":"switched"/);
  },
);

test.serial(
  "a restore that fails before ready: the releaser started ahead is told nothing was held",
  async (t) => {
    const { toolstack, dir } = await setup(t);
    writeFileSync(join(dir, "fail-receive"), "");
    await t.throwsAsync(
      toolstack.migrate("web1", "hostb", {
        migrationId: "m1",
        bridges: { 0: "xrpark0", 1: "xenbr0" },
        hold: HOLD,
      }),
      { instanceOf: XlError },
    );
    const log = join(dir, "hold-release.log");
    const lines = await waitFor(
      "the releaser's log",
      5000,
      async () => (existsSync(log) ? readFileSync(log, "utf8") : ""),
      (l) => l.includes("hold_"),
    );
    t.regex(lines, /"event":"hold_not_engaged"/, lines);
  },
);

test.serial(
  "the sender dies after ready: the domain is destroyed unstarted, the migration fails, the releaser lets go",
  async (t) => {
    const { toolstack, calls, dir } = await setup(t);
    writeFileSync(join(dir, "fail-go"), "");
    await t.throwsAsync(
      toolstack.migrate("web1", "hostb", {
        migrationId: "m1",
        bridges: { 0: "xrpark0", 1: "xenbr0" },
        guestWrites: { arrived: ARRIVED },
        hold: HOLD,
      }),
      { instanceOf: XlError, message: /migrate-receive failed/ },
    );
    t.true(calls().some((c) => c.event === "destroyed"));
    t.false(
      calls().some((c) => c.event === "unpause"),
      "never ran at the destination",
    );
    const lines = await waitFor(
      "the releaser's log",
      5000,
      async () =>
        existsSync(join(dir, "hold-release.log")) ? readFileSync(join(dir, "hold-release.log"), "utf8") : "",
      (l) => l.includes("hold_"),
    );
    t.regex(lines, /"event":"hold_released".*"why":"gone"/, lines);
  },
);

test.serial(
  "carrier hold: a release never overwrites a state libxl moved on (Closing stays Closing)",
  async (t) => {
    const { toolstack, sock, dir } = await setup(t);
    await toolstack.migrate("web1", "hostb", {
      migrationId: "m1",
      bridges: { 0: "xrpark0", 1: "xenbr0" },
      guestWrites: { arrived: ARRIVED },
      hold: HOLD,
    });
    const xs = await XenstoreClient.connect(sock);
    t.teardown(() => xs.close());
    // libxl removing the device writes Closing (tools/libs/light/libxl_device.c 1079-1085).
    await xs.write("/local/domain/0/backend/vif/6/0/state", "5");
    await xs.write("/local/domain/6/data/xenroam/status", SWITCHED);
    const log = await waitFor(
      "the releaser's log",
      5000,
      async () => {
        try {
          return readFileSync(join(dir, "hold-release.log"), "utf8");
        } catch {
          return "";
        }
      },
      (l) => l.includes("hold_released"),
    );
    t.regex(log, /"event":"hold_release_skipped".*"backendState":"5"/);
    t.is(await xs.tryRead("/local/domain/0/backend/vif/6/0/state"), "5");
  },
);

test.serial(
  "carrier hold: --no-carrier-hold (carrierHold false) sends no --hold; nothing is held",
  async (t) => {
    const { dir, calls } = await setup(t);
    const sock = join(dir, "xs.sock");
    const toolstack = new XlToolstack({
      configPath: join(dir, "{vm}.cfg"),
      transport: "env XENROAM_FAKE_DEST={host}",
      remoteXenroam: `${process.execPath} ${MAIN} --xenstore ${sock} --state-dir ${dir} --parking-bridge lo`,
      stateDir: dir,
      carrierHold: false,
    });
    await toolstack.migrate("web1", "hostb", {
      migrationId: "m1",
      bridges: { 0: "xrpark0", 1: "xenbr0" },
      hold: HOLD,
    });
    t.notRegex(calls()[0]?.argv[6] ?? "", /--hold/);
    t.deepEqual(calls().find((c) => c.event === "unpause")?.backend, { 0: "2", 1: "2" });
  },
);

test.serial("hold-release: without the guest's switch the frontends are let go at the timeout", async (t) => {
  const { sock } = await setup(t);
  const xs = await XenstoreClient.connect(sock);
  t.teardown(() => xs.close());
  await xs.write(
    "/local/domain/7/data/xenroam/status",
    JSON.stringify({ v: 1, phase: "switching", id: "m9" }),
  );
  await xs.write("/local/domain/0/backend/vif/7/0/state", "1");
  await xs.write("/local/domain/7/name", "web1"); // libxl names every domain (libxl_create.c 810)
  const { execFile } = await import("node:child_process");
  const started = Date.now();
  const out = await new Promise<string>((resolve, reject) =>
    execFile(
      process.execPath,
      [
        MAIN,
        "--xenstore",
        sock,
        "hold-release",
        "web1",
        "--domid",
        "7",
        "--devids",
        "0",
        "--migration",
        "m9",
        "--timeout-ms",
        "400",
      ],
      (err, _stdout, stderr) => (err ? reject(new Error(`hold-release failed: ${stderr}`)) : resolve(stderr)),
    ),
  );
  t.true(Date.now() - started >= 400);
  t.is(await xs.tryRead("/local/domain/0/backend/vif/7/0/state"), "2");
  t.regex(out, /"event":"hold_released".*"why":"timeout"/);
});

/** A control server on loopback with vm (two locators registered, the first active) and host hostb's token. */
async function controlServer(t: ExecutionContext, dir: string) {
  const keys = generateSigningKeys();
  const service = new ControlService({ store: new MemoryStore(), ...keys });
  const srv = createControlServer(service, exportPublicKey(keys.publicKey));
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", () => r()));
  t.teardown(() => new Promise<void>((r) => srv.close(() => r())));
  const url = `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
  await service.putSites({
    sites: ["a", "b"].map((n) => ({
      name: n,
      prefix: `2001:db8:${n}::/64`,
      gateway: { linkLocal: `fe80::${n}:1`, mac: `02:00:00:00:0${n}:01` },
    })),
    hosts: [
      { name: "hosta", site: "a" },
      { name: "hostb", site: "b" },
    ],
  });
  await service.registerVm("web1", "2001:db8:f::5");
  const first = await service.registerStandby("web1", "2001:db8:a::5");
  await service.attest("web1", "2001:db8:a::5");
  await service.activate(first);
  const activation = await service.registerStandby("web1", "2001:db8:b::5");
  await service.attest("web1", "2001:db8:b::5"); // as the source Dom0 does once the guest answered
  const tokenFile = join(dir, "host.token");
  writeFileSync(tokenFile, (await service.registerPeer("hostb")).token);
  const cnToken = (await service.registerPeer("cn")).token;
  return { url, service, activation, tokenFile, cnToken };
}

test.serial(
  "xl relay: receive hands the guest's activation to the control server before it unpauses",
  async (t) => {
    const { dir, calls, sock } = await setup(t);
    const control = await controlServer(t, dir);
    // A server slower than xl's own steps: unpause must wait for it (within RELAY_WAIT_MS).
    const activate = control.service.activate.bind(control.service);
    control.service.activate = async (b) => {
      await new Promise((r) => setTimeout(r, 150));
      return activate(b);
    };
    process.env.FAKE_XL_BINDING_URL = `${control.url}/v1/bindings/2001:db8:f::5`;
    process.env.FAKE_XL_BINDING_TOKEN = control.cnToken;
    t.teardown(() => {
      delete process.env.FAKE_XL_BINDING_URL;
      delete process.env.FAKE_XL_BINDING_TOKEN;
    });
    const toolstack = new XlToolstack({
      configPath: join(dir, "{vm}.cfg"),
      transport: "env XENROAM_FAKE_DEST={host}",
      remoteXenroam: `${process.execPath} ${MAIN} --xenstore ${sock} --state-dir ${dir} --parking-bridge lo --control-token-file ${control.tokenFile}`,
      stateDir: dir,
      relayControl: control.url,
    });
    const answer = encodeMessage({
      v: 1,
      id: "m1",
      status: "prepared",
      moa: "2001:db8:b::5",
      ifname: "eth1",
      activation: control.activation,
    });
    await toolstack.migrate("web1", "hostb", {
      migrationId: "m1",
      bridges: { 0: "xrpark0", 1: "xenbr0" },
      guestWrites: { answer, arrived: ARRIVED },
    });
    const rune = calls()[0]?.argv[6] ?? "";
    t.regex(rune, / --relay [A-Za-z0-9_-]+$/, "one base64url word: nothing a shell could misread");
    const unpause = calls().find((c) => c.event === "unpause");
    t.like(unpause?.binding, { active: "2001:db8:b::5", seq: 2 }, "active when the domain was unpaused");
  },
);

test.serial(
  "xl relay at the source: the guest's activation goes at libxl's suspend, before the last round; receive relays nothing",
  async (t) => {
    const { dir, calls, sock } = await setup(t);
    const control = await controlServer(t, dir);
    const watcher = await XenstoreClient.connect(sock);
    t.teardown(() => watcher.close());
    let pausedAt: number | undefined;
    const phases: string[] = [];
    const toolstack = new XlToolstack({
      configPath: join(dir, "{vm}.cfg"),
      transport: "env XENROAM_FAKE_DEST={host}",
      remoteXenroam: `${process.execPath} ${MAIN} --xenstore ${sock} --state-dir ${dir} --parking-bridge lo`,
      stateDir: dir,
      relayControl: control.url,
      watchSuspend: (vm, onSuspend) => watchSuspend(watcher, vm, onSuspend),
    });
    const answer = encodeMessage({
      v: 1,
      id: "m1",
      status: "prepared",
      moa: "2001:db8:b::5",
      ifname: "eth1",
      activation: control.activation,
    });
    await toolstack.migrate("web1", "hostb", {
      migrationId: "m1",
      bridges: { 0: "xrpark0", 1: "xenbr0" },
      guestWrites: { answer, arrived: ARRIVED },
      mark: (p) => phases.push(p),
      onPaused: () => (pausedAt ??= Date.now()),
    });
    const suspend = calls().find((c) => c.event === "suspend") as (Call & { at: number }) | undefined;
    t.truthy(suspend && pausedAt, "onPaused ran");
    t.true((pausedAt ?? 0) >= (suspend?.at ?? Infinity), "not before libxl asked the guest to suspend");
    t.true((pausedAt ?? Infinity) - (suspend?.at ?? 0) < 100, "while the last round still ran");
    t.deepEqual(phases, ["xl-migrate", "suspended", "running-on-destination"]);
    t.notRegex(calls()[0]?.argv[6] ?? "", /--relay/, "the destination does not relay it again");
  },
);

test.serial(
  "xl relay: no --relay without a control server or an activation; receive goes on when it cannot relay",
  async (t) => {
    const { dir, calls, sock } = await setup(t);
    const control = await controlServer(t, dir);
    const answer = (activation?: unknown) =>
      encodeMessage({
        v: 1,
        id: "m1",
        status: "prepared",
        moa: "2001:db8:b::5",
        ifname: "eth1",
        ...(activation ? { activation } : {}),
      } as PrepareAnswer);
    const o = { ...XL_DEFAULTS, stateDir: dir };
    const request = (writes: Record<string, string>) => ({
      migrationId: "m1",
      bridges: {},
      guestWrites: writes,
    });
    t.notRegex(receiveRune(o, "web1", "hostb", request({ answer: answer(control.activation) })), /--relay/);
    t.notRegex(
      receiveRune({ ...o, relayControl: control.url }, "web1", "hostb", request({ answer: answer() })),
      /--relay/,
    );
    const other = request({ answer: answer({ ...control.activation, vm: "other" }) });
    t.notRegex(
      receiveRune({ ...o, relayControl: control.url }, "web1", "hostb", other),
      /--relay/,
      "only an activation of the VM that moves",
    );
    const order = parseRelayArgument(
      /--relay (\S+)/.exec(
        receiveRune(
          { ...o, relayControl: "http://[2001:db8:c::1]:7360" },
          "web1",
          "hostb",
          request({ answer: answer(control.activation) }),
        ),
      )?.[1] ?? "",
    );
    t.deepEqual(order, { control: "http://[2001:db8:c::1]:7360", activation: control.activation });
    t.throws(() => parseRelayArgument("e30"), { message: /--relay is malformed: control/ });

    // The destination has no token: the relay is logged as unavailable, the migration completes anyway.
    const toolstack = new XlToolstack({
      configPath: join(dir, "{vm}.cfg"),
      transport: "env XENROAM_FAKE_DEST={host}",
      remoteXenroam: `${process.execPath} ${MAIN} --xenstore ${sock} --state-dir ${dir} --parking-bridge lo --control-token-file ${join(dir, "missing.token")}`,
      stateDir: dir,
      relayControl: control.url,
    });
    const info = await toolstack.migrate("web1", "hostb", {
      migrationId: "m1",
      bridges: { 0: "xrpark0", 1: "xenbr0" },
      guestWrites: { answer: answer(control.activation), arrived: ARRIVED },
    });
    t.is(info.domid, 6);
    t.true(calls().some((c) => c.event === "unpause"));
    t.like(
      await control.service.binding("2001:db8:f::5"),
      { active: "2001:db8:a::5", seq: 1 },
      "nothing relayed",
    );
  },
);

test("announce: the rune carries the new primary's address, MAC and bridge as one word; --no-announce leaves it out", (t) => {
  const o = { ...XL_DEFAULTS, stateDir: "/tmp" };
  const request = {
    migrationId: "m1",
    bridges: {},
    announce: { moa: "2001:db8:b::5", mac: "00:16:3e:00:01:10", bridge: "xenbr0" },
  };
  t.regex(receiveRune(o, "web1", "hostb", request), / --announce 2001:db8:b::5\/00:16:3e:00:01:10\/xenbr0$/);
  t.notRegex(receiveRune({ ...o, announce: false }, "web1", "hostb", request), /--announce/);
  t.throws(
    () =>
      receiveRune(o, "web1", "hostb", {
        ...request,
        announce: { moa: "2001:db8:b::5;reboot", mac: "00:16:3e:00:01:10", bridge: "xenbr0" },
      }),
    { message: /MoA "2001:db8:b::5;reboot"/ },
  );
});

test.serial(
  "announce: when it cannot be prepared it is logged, nothing waits for it, and the guest still runs",
  async (t) => {
    const { dir, calls, sock } = await setup(t);
    const lines: string[] = [];
    const toolstack = xlWith(dir, sock, (_e, f) => lines.push(typeof f?.line === "string" ? f.line : ""));
    // A bridge no host has: the announcement must fail here, never touch this machine's own links.
    await toolstack.migrate("web1", "hostb", {
      migrationId: "m1",
      bridges: { 0: "xrpark0", 1: "xrt-nobridge" },
      guestWrites: { arrived: ARRIVED },
      announce: { moa: "2001:db8:b::5", mac: "00:16:3e:00:01:10", bridge: "xrt-nobridge" },
    });
    t.regex(calls()[0]?.argv[6] ?? "", / --announce 2001:db8:b::5\/00:16:3e:00:01:10\/xrt-nobridge/);
    t.truthy(
      calls().find((c) => c.event === "unpause"),
      "the guest ran",
    );
    const failed = lines.find((l) => l.includes('"announce_failed"'));
    t.regex(failed ?? "", /no bridge xrt-nobridge/);
    const unpaused = lines.findIndex((l) => l.includes('"event":"unpaused"'));
    const phases = JSON.parse(lines[unpaused]?.replace(/^[^{]*/, "") ?? "{}") as {
      phases?: Array<{ phase: string }>;
    };
    t.deepEqual(
      phases.phases?.map((p) => p.phase),
      ["found", "written", "ready-sent", "xl-done"],
      "the announcement is not one of the steps xl's ready waits for",
    );
  },
);

test.serial("receive refuses an --announce it cannot read, before it touches anything", async (t) => {
  const { execFile } = await import("node:child_process");
  const r = await new Promise<{ code: number | null; stderr: string }>((resolve) =>
    execFile(
      process.execPath,
      [MAIN, "receive", "web1", "--migration", "m1", "--announce", "not-an-address/00:16:3e:00:01:10/xenbr0"],
      (err, _out, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stderr }),
    ),
  );
  t.not(r.code, 0);
  t.regex(r.stderr, /--announce takes the new primary's address, MAC and bridge/);
});

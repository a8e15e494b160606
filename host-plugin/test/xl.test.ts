// The xl adapter's contract, against a recording fake `xl` first on PATH: the swapped config goes to
// `xl migrate -C` with `xenroam receive` as the transport's far end; the destination runs
// `xl migrate-receive -p`, writes the arrival into the guest's xenstore, and only then unpauses.
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import test, { type ExecutionContext } from "ava";
import { XenstoreServer } from "@xenroam/xenstore";
import { receiveRune, XL_DEFAULTS, XlError, XlToolstack } from "../src/adapters/xl.js";

const FAKE_XL = fileURLToPath(new URL("../../test/fixtures/fake-xl.mjs", import.meta.url));
const MAIN = fileURLToPath(new URL("../src/main.js", import.meta.url));
const XENSTORE_MODULE = import.meta.resolve("@xenroam/xenstore");

const CFG = `name = "web1"
vif = [ 'mac=00:16:3e:00:00:10,bridge=xenbr0', 'mac=00:16:3e:00:01:10,bridge=xrpark0' ]
`;

interface Call {
  argv: string[];
  cfg?: string;
  arrived?: string;
  dest?: string;
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
  const saved = { PATH: process.env.PATH, dir: process.env.FAKE_XL_DIR };
  process.env.PATH = `${bin}:${process.env.PATH ?? ""}`;
  process.env.FAKE_XL_DIR = dir;
  process.env.FAKE_XL_XENSTORE = sock;
  process.env.FAKE_XL_XENSTORE_MODULE = XENSTORE_MODULE;
  t.teardown(async () => {
    process.env.PATH = saved.PATH;
    await xs.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const toolstack = new XlToolstack({
    configPath: join(dir, "{vm}.cfg"),
    transport: "env XENROAM_FAKE_DEST={host}",
    remoteXenroam: `${process.execPath} ${MAIN} --xenstore ${sock} --parking-bridge lo`,
    stateDir: dir,
  });
  const calls = () =>
    readFileSync(join(dir, "log.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Call);
  return { dir, toolstack, calls };
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
      ["migrate", "migrate-receive", "domid", "unpause", "list"],
      "source: migrate; destination: receive paused, find the domain, unpause, report",
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
    t.deepEqual(log[1]?.argv, ["migrate-receive", "-p"], "the destination keeps the domain paused");
    t.is(log[1]?.dest, "hostb");
    t.is(log[3]?.arrived, ARRIVED, "the guest's arrival key was there when the domain was unpaused");
    t.is(info.domid, 6);
    t.is(info.host, "hostb");
    t.deepEqual(
      info.vifs.map((v) => v.bridge),
      ["xrpark0", "xenbr0"],
    );
    t.deepEqual(phases, ["xl-migrate", "running-on-destination"]);
    t.false(existsSync(migrate.argv[2] ?? ""), "the swapped config copy is removed after xl read it");
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
  t.false(calls().some((c) => c.argv[0] === "unpause"));
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

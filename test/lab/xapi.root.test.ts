// Root-only: the method through XAPI, end to end in the lab — `xenroam --toolstack xapi` with the real xen-api
// client against the lab's XAPI (packages/lab/src/xapi.ts: a pool per site, xapi's and xenopsd's order, cited
// there), xenroam's XAPI hooks installed by `xenroam install-xapi` and run where xenopsd runs them, the guest
// agent on XAPI's channel (vm-data), real bridges, radvd and namespaces.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import test from "ava";
import {
  DEFAULT_TOPOLOGY,
  findWorkspaceCommand,
  labDown,
  labUp,
  labVmUuid,
  parseTopology,
  readVmLocation,
  XAPI_MIGRATION_FILE,
  XAPI_PASSWORD_FILE,
  XAPI_XE,
  xapiSocketFile,
  xapiXenroamArgs,
} from "@xenroam/lab";
import type { MigrationReport } from "./support.js";

const run = promisify(execFile);
const XENROAM = findWorkspaceCommand("xenroam");

test("across pools through XAPI: the vif_map swaps before resume, vif-hotplug tells the guest first, nothing is left", async (t) => {
  if (!XENROAM) throw new Error("xenroam is not installed in this workspace");
  const name = `x${randomBytes(2).toString("hex")}`;
  const stateRoot = mkdtempSync(join(tmpdir(), "xr-xapi-"));
  const { mobility: _none, ...base } = DEFAULT_TOPOLOGY;
  const topology = parseTopology({
    ...base,
    name,
    toolstack: { restore: "xapi", reconnectMs: 300, precopyMs: 1000 },
  });
  const stateDir = join(stateRoot, name);
  t.teardown(async () => {
    await labDown(name, { stateRoot, force: true }).catch(() => {});
    rmSync(stateRoot, { recursive: true, force: true });
  });
  await labUp(topology, { stateRoot });
  const xenroam = async (here: string, ...args: string[]) =>
    run("ip", ["netns", "exec", `${name}-${here}`, ...XENROAM, ...args], {
      env: { ...process.env, XENROAM_NETWORK_CONF: join(stateDir, "network.conf") },
    });
  const migrate = async (there: string, ...extra: string[]) => {
    const here = readVmLocation(stateDir).host;
    const { stdout } = await xenroam(
      here,
      ...xapiXenroamArgs(topology, stateDir, here, there),
      "migrate",
      "vm",
      there,
      "--json",
      ...extra,
    );
    return JSON.parse(stdout) as MigrationReport;
  };
  const record = () =>
    JSON.parse(readFileSync(join(stateDir, XAPI_MIGRATION_FILE), "utf8")) as {
      crossPool: boolean;
      pausedMs?: number;
      timeline: Array<{ step: string; at: number }>;
      vifHotplug: { codes: number[]; beforeUnpause: boolean };
      hooks: { preMigrate: number[]; postMigrate: number[] };
    };
  const xe = (host: string, ...args: string[]) =>
    run("ip", ["netns", "exec", `${name}-${host}`, join(stateDir, XAPI_XE), ...args], {
      env: {
        ...process.env,
        XENROAM_LAB_XAPI: join(
          stateDir,
          xapiSocketFile(topology.hosts.find((h) => h.name === host)?.site ?? ""),
        ),
        XENROAM_LAB_XAPI_PASSWORD_FILE: join(stateDir, XAPI_PASSWORD_FILE),
      },
    });

  for (const [there, site] of [
    ["hostb", "b"],
    ["hosta", "a"],
  ] as const) {
    const from = readVmLocation(stateDir).host;
    const r = await migrate(there);
    t.is(r.method, "dual-interface", r.fallback ?? "");
    t.regex(r.moa ?? "", new RegExp(`^2001:db8:${site}:`));
    const m = record();
    t.true(m.crossPool);
    const order = m.timeline.map((s) => s.step);
    t.deepEqual(
      order,
      [
        "networks-attached",
        "pre-migrate-hook",
        "domain-created",
        "vifs-plugged",
        "memory-copied",
        "renamed",
        "unpaused",
        "post-migrate-hook",
      ],
      "xenopsd's order",
    );
    t.deepEqual(m.vifHotplug.codes, [0, 0]);
    t.deepEqual(m.hooks, { preMigrate: [0], postMigrate: [0] }, "xenroam's hooks as xenopsd runs them");
    t.true(m.vifHotplug.beforeUnpause, "the arrival was in the new domain before it resumed");
    t.true((m.pausedMs ?? 0) > 0);
    // The guest answers at its MoA, from the correspondent, through the destination site.
    await run("ip", ["netns", "exec", `${name}-cn`, "ping", "-6", "-c", "1", "-W", "2", r.moa ?? "::"]);
    // Nothing of the method stays: no gateway address on the source's staging bridge, no other_config keys.
    const { stdout } = await run("ip", ["-n", `${name}-${from}`, "-6", "addr", "show", "dev", `xr-${site}`]);
    t.notRegex(stdout, /fe80::/, `the staging bridge on ${from} no longer answers as the gateway`);
    const oc = await xe(there, "vm-param-get", `uuid=${labVmUuid(topology)}`, "param-name=other-config");
    t.notRegex(oc.stdout, /xenroam/, oc.stdout);
  }

  // Inside one pool and one site: no method to use, a plain VM.pool_migrate (the refusal of the method inside a
  // pool that spans sites is host-plugin/test/xapi.test.ts's, with the fake XAPI: the lab's pools are sites).
  const plain = await migrate("hosta2");
  t.is(plain.method, "plain");
  t.false(record().crossPool);
  t.is(readVmLocation(stateDir).host, "hosta2");
});

// Root-only: two VMs of one host prepared to one site at the same moment (issue 12 item 4), in the namespace
// lab with two VMs (`xenroam-lab up --vms 2`), the real xenroam processes and their locks, one staging bridge
// and one radvd for the site they share, both guest agents and the correspondent. Both must migrate with the
// method, both keep their home addresses, and both come back together the same way; nothing stays behind.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import test from "ava";
import {
  cnLocators,
  DEFAULT_TOPOLOGY,
  hoaOf,
  labDown,
  labUp,
  labVms,
  parseTopology,
  readVmLocation,
  withVmCount,
} from "@xenroam/lab";
import { migrateVm, pings } from "./support.js";

const run = promisify(execFile);

test("two VMs prepared to one site at once both migrate with the method, and both come back the same way", async (t) => {
  const name = `m${randomBytes(2).toString("hex")}`;
  const stateRoot = mkdtempSync(join(tmpdir(), "xr-multi-"));
  const topology = parseTopology(withVmCount({ ...DEFAULT_TOPOLOGY, name }, 2));
  t.teardown(async () => {
    await labDown(name, { stateRoot, force: true }).catch(() => {});
    rmSync(stateRoot, { recursive: true, force: true });
  });
  await labUp(topology, { stateRoot });
  const stateDir = join(stateRoot, name);
  const vms = labVms(topology);
  const m = topology.mobility;
  if (!m) throw new Error("the default topology has the mobility layer");
  const cnNs = `${name}-${topology.correspondent.name}`;

  for (const [to, from] of [
    ["hostb", "hosta"],
    ["hosta", "hostb"],
  ] as const) {
    t.deepEqual(
      vms.map((v) => readVmLocation(stateDir, v.name).host),
      [from, from],
    );
    const reports = await Promise.all(vms.map((v) => migrateVm(topology, stateDir, v.name, to)));
    reports.forEach((r, i) =>
      t.is(r.method, "dual-interface", `${vms[i]?.name} ${from} -> ${to}: ${r.fallback ?? ""}`),
    );
    t.deepEqual(
      vms.map((v) => readVmLocation(stateDir, v.name).host),
      [to, to],
    );
    t.not(reports[0]?.domid, reports[1]?.domid, "each its own domid");
    // At once: each migration began before the other ended.
    const spans = reports.map((r) => [r.startedAt, r.startedAt + Math.max(...r.timeline.map((p) => p.atMs))]);
    const [a, b] = spans as [[number, number], [number, number]];
    t.true(a[0] < b[1] && b[0] < a[1], `overlapping: ${JSON.stringify(spans)}`);
    const site = topology.sites.find((s) => s.name === topology.hosts.find((h) => h.name === to)?.site);
    if (!site) throw new Error(`no site for ${to}`);
    // Each VM's MoA in the destination site, and the correspondent maps each HoA to its own VM's.
    const moas = reports.map((r) => r.moa ?? "");
    t.not(moas[0], moas[1]);
    const prefix = site.prefix.replace(/::\/64$/, ":");
    for (const moa of moas) t.true(moa.startsWith(prefix), `${moa} in ${site.prefix}`);
    let mapped: ReadonlyMap<string, string> = new Map();
    for (let i = 0; i < 50; i++) {
      mapped = await cnLocators(topology);
      if (vms.every((v, k) => mapped.get(hoaOf(topology, v) ?? "") === moas[k])) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    vms.forEach((v, k) => t.is(mapped.get(hoaOf(topology, v) ?? ""), moas[k], `${v.name}'s HoA`));
    for (const v of vms) {
      t.true(await pings(`${name}-${v.name}`, topology.correspondent.address), `${v.name} -> CN on ${to}`);
      t.true(await pings(cnNs, hoaOf(topology, v) ?? ""), `CN -> ${v.name}'s HoA on ${to}`);
    }
    // Nothing of either operation is left on the source: no staging bridge, no staging radvd, no state entry.
    const { stdout: links } = await run("ip", [
      "netns",
      "exec",
      `${name}-${from}`,
      "ip",
      "-o",
      "link",
      "show",
    ]);
    t.notRegex(links, /\bxr-[ab]\b/, `staging bridges left on ${from}:\n${links}`);
    const file = join(stateDir, `host-${from}`, "host-state.json");
    const state = existsSync(file) ? (JSON.parse(readFileSync(file, "utf8")) as object) : {};
    t.deepEqual(state, existsSync(file) ? { staging: {}, vms: {} } : {}, `state left on ${from}`);
  }
});

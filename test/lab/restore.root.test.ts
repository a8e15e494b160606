// Root-only: how the lab toolstack restores the VM — the frontends reconnecting after resume (no carrier on any
// vif until then, as netfront on real Xen), and the xl-shaped restore (every vif plugged, no hold), under which
// the guest must still never carry traffic on its old primary.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import test, { type ExecutionContext } from "ava";
import { DEFAULT_TOPOLOGY, labDown, labUp, parseTopology, readVmLocation, type Topology } from "@xenroam/lab";
import { migrate } from "./support.js";

const run = promisify(execFile);

function fresh(
  t: ExecutionContext,
  toolstack: { restore: "lab" | "xl"; reconnectMs: number },
): { topology: Topology; stateRoot: string; stateDir: string } {
  const name = `r${randomBytes(2).toString("hex")}`;
  const stateRoot = mkdtempSync(join(tmpdir(), "xr-restore-"));
  const { mobility: _none, ...base } = DEFAULT_TOPOLOGY;
  const topology = parseTopology({ ...base, name, toolstack });
  t.teardown(async () => {
    await labDown(name, { stateRoot, force: true }).catch(() => {});
    rmSync(stateRoot, { recursive: true, force: true });
  });
  return { topology, stateRoot, stateDir: join(stateRoot, name) };
}

interface Sample {
  readonly at: number;
  /** Per guest interface: [admin up, carrier]. */
  readonly links: Record<string, [boolean, boolean]>;
}

/** Samples the guest's interfaces every ~10 ms until stopped. */
function sampleGuest(t: ExecutionContext, vmNs: string): { stop: () => Promise<Sample[]> } {
  const samples: Sample[] = [];
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      const at = Date.now();
      // Gone namespace (a failed test's teardown): stop sampling.
      const out = await run("ip", ["-n", vmNs, "-j", "link", "show"]).catch(() => undefined);
      if (!out) break;
      const { stdout } = out;
      const links: Record<string, [boolean, boolean]> = {};
      for (const l of JSON.parse(stdout) as Array<{ ifname: string; flags: string[] }>) {
        if (l.ifname.startsWith("eth"))
          links[l.ifname] = [l.flags.includes("UP"), l.flags.includes("LOWER_UP")];
      }
      samples.push({ at, links });
      await new Promise((r) => setTimeout(r, 10));
    }
  })();
  t.teardown(() => {
    stopped = true;
  });
  return {
    stop: async () => {
      stopped = true;
      await loop;
      return samples;
    },
  };
}

/** `xenroam migrate` with its report; `at(phase)` is when that phase was marked (ms since the epoch). */
async function migrateTimed(topology: Topology, stateDir: string, to: string) {
  const report = await migrate(topology, stateDir, to);
  const at = (phase: string) => {
    const m = report.timeline.find((x) => x.phase === phase);
    if (!m) throw new Error(`no ${phase} in the timeline: ${JSON.stringify(report.timeline)}`);
    return report.startedAt + m.atMs;
  };
  return { report, at };
}

test("the frontends reconnect after resume: no carrier on the new primary until reconnectMs has passed", async (t) => {
  const reconnectMs = 800;
  const { topology, stateRoot, stateDir } = fresh(t, { restore: "lab", reconnectMs });
  await labUp(topology, { stateRoot });
  const sampler = sampleGuest(t, `${topology.name}-vm`);
  const { report, at } = await migrateTimed(topology, stateDir, "hostb");
  const samples = await sampler.stop();
  t.is(report.method, "dual-interface", report.fallback ?? "");
  const resumed = at("resumed");
  const carrierBack = samples.find((s) => s.at > resumed && s.links.eth1?.[1] === true);
  t.truthy(carrierBack, "the new primary got its carrier back");
  // Samples are ~10-20 ms apart: allow 50 ms of slack, never more.
  t.true(
    (carrierBack?.at ?? 0) - resumed >= reconnectMs - 50,
    `carrier back ${(carrierBack?.at ?? 0) - resumed} ms after resume; the frontends reconnect after ${reconnectMs} ms`,
  );
  t.true(
    report.timeline.some((m) => m.phase === "frontends-reconnected"),
    JSON.stringify(report.timeline),
  );
});

test("xl-shaped restore: the old primary comes back plugged, and the guest never carries traffic on it", async (t) => {
  // Without a hold this is a race between the agent and the frontends' reconnect (the bench's method-xl measures
  // it); a 1 s reconnect keeps the test about the agent's order of steps, not the machine's load.
  const { topology, stateRoot, stateDir } = fresh(t, { restore: "xl", reconnectMs: 1000 });
  await labUp(topology, { stateRoot });
  const sampler = sampleGuest(t, `${topology.name}-vm`);
  const { report, at } = await migrateTimed(topology, stateDir, "hostb");
  await new Promise((r) => setTimeout(r, 300));
  const samples = await sampler.stop();
  t.is(report.method, "dual-interface", report.fallback ?? "");
  t.false(
    report.timeline.some((m) => m.phase === "held-vifs-plugged"),
    "xl has no hold: nothing is plugged late",
  );
  // Dom0 side: the old primary's vif is up on the parking bridge, like every vif xl restores.
  const domid = readVmLocation(stateDir).domid;
  const { stdout } = await run("ip", ["-n", `${topology.name}-hostb`, "-j", "link", "show", `vif${domid}.0`]);
  const vif = (JSON.parse(stdout) as Array<{ flags: string[]; master?: string }>)[0];
  t.is(vif?.master, topology.bridges.parking);
  t.true(vif?.flags.includes("UP"), "the old primary's vif is plugged");
  // Guest side: after resume, eth0 is never admin-up with carrier (the kernel would route into the parking
  // bridge); the agent downs it before the frontends reconnect.
  const resumed = at("resumed");
  const hole = samples.filter(
    (s) => s.at > resumed && s.links.eth0?.[0] === true && s.links.eth0[1] === true,
  );
  t.deepEqual(
    hole.map((s) => s.at - resumed),
    [],
    "ms after resume at which the old primary was up with carrier",
  );
  const last = samples.at(-1);
  t.is(
    last?.links.eth0?.[0],
    false,
    "old primary: down in the guest (an admin-down link reports no carrier)",
  );
  t.deepEqual(last?.links.eth1, [true, true], "new primary: up with carrier");
});

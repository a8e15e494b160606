// Root-only: guests as their kernels make addresses. The method (never a fallback) with the guest's kernel in
// each addr_gen_mode (EUI-64, stable-privacy, random) and with temporary addresses on: the MoA is the address
// the kernel made from the staged RA, never a temporary one, and the home address works both ways after every
// move. The real kernel's SLAAC, the real guest agent, radvd, the control server and the correspondent.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import test from "ava";
import { formatIpv6, parseIpv6, parsePrefix, prefixContains, slaacAddress } from "@xenroam/core";
import { DEFAULT_TOPOLOGY, labDown, labUp, parseTopology } from "@xenroam/lab";
import { migrate, pings } from "./support.js";

const run = promisify(execFile);

const cases = [
  { addrGenMode: 0, useTempaddr: 0 },
  { addrGenMode: 2, useTempaddr: 0 },
  { addrGenMode: 3, useTempaddr: 0 },
  { addrGenMode: 0, useTempaddr: 2 },
  { addrGenMode: 2, useTempaddr: 2 },
] as const;

for (const c of cases) {
  test(`addr_gen_mode ${c.addrGenMode}, use_tempaddr ${c.useTempaddr}: the method there and back, the HoA both ways`, async (t) => {
    const name = `a${randomBytes(2).toString("hex")}`;
    const stateRoot = mkdtempSync(join(tmpdir(), "xr-addr-"));
    const topology = parseTopology({ ...DEFAULT_TOPOLOGY, name, vm: { ...DEFAULT_TOPOLOGY.vm, ...c } });
    t.teardown(async () => {
      await labDown(name, { stateRoot, force: true }).catch(() => {});
      rmSync(stateRoot, { recursive: true, force: true });
    });
    const m = topology.mobility;
    if (!m) throw new Error("the default topology has no mobility section");
    await labUp(topology, { stateRoot });
    const stateDir = join(stateRoot, name);
    const vmNs = `${name}-${topology.vm.name}`;
    const cnNs = `${name}-${topology.correspondent.name}`;
    for (const to of ["hostb", "hosta"]) {
      const r = await migrate(topology, stateDir, to);
      t.is(r.method, "dual-interface", `to ${to}: ${r.fallback ?? ""}`);
      const host = topology.hosts.find((h) => h.name === to);
      const site = topology.sites.find((s) => s.name === host?.site);
      if (!site || !r.moa) throw new Error(`no site or MoA for ${to}`);
      t.true(
        prefixContains(parsePrefix(site.prefix), parseIpv6(r.moa)),
        `the MoA ${r.moa} is in ${site.prefix}`,
      );
      const eui64 = formatIpv6(slaacAddress(parsePrefix(site.prefix), topology.vm.secondaryMac));
      const eui64Primary = formatIpv6(slaacAddress(parsePrefix(site.prefix), topology.vm.primaryMac));
      if (c.addrGenMode === 0) t.true(r.moa === eui64 || r.moa === eui64Primary, `EUI-64: ${r.moa}`);
      else
        t.false(r.moa === eui64 || r.moa === eui64Primary, `not EUI-64 in mode ${c.addrGenMode}: ${r.moa}`);
      // Never a temporary address: the kernel lists the MoA without the "temporary" flag.
      const { stdout } = await run("ip", ["-n", vmNs, "-j", "-6", "addr", "show"]);
      const flags = (
        JSON.parse(stdout) as Array<{ addr_info: Array<{ local: string; temporary?: boolean }> }>
      )
        .flatMap((l) => l.addr_info)
        .find((a) => a.local === r.moa);
      t.truthy(flags, `the MoA ${r.moa} is on the VM`);
      t.falsy(flags?.temporary, "the MoA is not a temporary address");
      if (c.useTempaddr === 2) t.regex(stdout, /"temporary":true/, "temporary addresses exist beside it");
      t.true(await pings(cnNs, m.hoa), `CN -> HoA after the move to ${to}`);
      t.true(await pings(vmNs, topology.correspondent.address), `VM -> CN after the move to ${to}`);
    }
  });
}

// Root-only: the guest arrives configured for its new site. The destination site's router advertises MTU 1400
// and a DNS server (RDNSS); the sites document says so, and the staging RA carries both: the guest's secondary
// has the site's MTU and its resolver (rdnssd, Debian's, as a guest runs it) knows the server while the
// secondary is still on the staging bridge — before any of the site's own RAs could have reached it — and
// still right after the switch.
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import test from "ava";
import { DEFAULT_TOPOLOGY, findWorkspaceCommand, labDown, labUp, parseTopology } from "@xenroam/lab";
import { migrate, prepare } from "./support.js";

const run = promisify(execFile);
const XENROAM = findWorkspaceCommand("xenroam");
const DNS = "2001:db8:c::53";

test("the staging RA carries the destination site's MTU and DNS server: right from the prepare, and after the switch", async (t) => {
  const name = `d${randomBytes(2).toString("hex")}`;
  const stateRoot = mkdtempSync(join(tmpdir(), "xr-adv-"));
  const topology = parseTopology({
    ...DEFAULT_TOPOLOGY,
    name,
    sites: DEFAULT_TOPOLOGY.sites.map((s) =>
      s.name === "b" ? { ...s, advertise: { mtu: 1400, rdnss: [DNS] } } : s,
    ),
  });
  const started: ChildProcess[] = [];
  t.teardown(async () => {
    for (const p of started) if (p.exitCode === null) p.kill("SIGTERM");
    await labDown(name, { stateRoot, force: true }).catch(() => {});
    rmSync(stateRoot, { recursive: true, force: true });
  });
  // Debian's rdnssd conflicts with network-manager (which the network-manager tests need): scripts/setup.sh
  // unpacks it into its own directory; an installed one does as well.
  const rdnssdBin = [
    process.env.XENROAM_RDNSSD,
    "/var/cache/xenroam-lab/rdnssd/sbin/rdnssd",
    "/usr/sbin/rdnssd",
  ].find((p) => p !== undefined && existsSync(p));
  if (!rdnssdBin) throw new Error("rdnssd is not there (bash scripts/setup.sh unpacks it)");
  await labUp(topology, { stateRoot });
  const stateDir = join(stateRoot, name);
  const vmNs = `${name}-${topology.vm.name}`;
  const resolv = join(stateRoot, "rdnssd-resolv.conf");
  const rdnssd = spawn(
    "ip",
    ["netns", "exec", vmNs, rdnssdBin, "-f", "-u", "root", "-r", resolv, "-p", join(stateRoot, "rdnssd.pid")],
    { stdio: "ignore" },
  );
  started.push(rdnssd);
  await new Promise((r) => setTimeout(r, 300));
  const known = () => (existsSync(resolv) ? readFileSync(resolv, "utf8").includes(DNS) : false);
  t.false(known(), "site a advertises no DNS server");
  const mtu = async (dev: string) =>
    Number((await run("ip", ["netns", "exec", vmNs, "cat", `/proc/sys/net/ipv6/conf/${dev}/mtu`])).stdout);

  if (!XENROAM) throw new Error("xenroam is not installed in this workspace");
  await prepare(topology, stateDir, "hostb");
  // eth1 sits on the isolated staging bridge: only the staging RA reaches it.
  t.is(await mtu("eth1"), 1400, "the site's MTU from the staging RA");
  for (let i = 0; i < 40 && !known(); i++) await new Promise((r) => setTimeout(r, 50));
  t.true(known(), "the resolver learned the site's DNS server from the staging RA");
  t.is(await mtu("eth0"), 1500, "the primary keeps its own site's MTU meanwhile");

  const r = await migrate(topology, stateDir, "hostb");
  t.is(r.method, "dual-interface", r.fallback ?? "");
  t.is(await mtu("eth1"), 1400, "right after the switch: the new primary has the site's MTU");
  t.true(known(), "and the resolver still knows the site's DNS server");
});

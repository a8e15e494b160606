// Dependency direction (STYLE.md 1, 2, 9): packages never import the apps; the apps never import each other;
// only packages/netlink imports the npm `netlink` package; the core imports nothing from Node.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import test from "ava";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));

function sources(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      if (name === "node_modules" || name === "dist") continue;
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else if (p.endsWith(".ts") && !p.endsWith(".d.ts")) out.push(p);
    }
  };
  walk(join(ROOT, dir));
  return out;
}

const IMPORT =
  /(?:^|\n)\s*(?:import|export)\s[^;]*?from\s+["']([^"']+)["']|import\(\s*["']([^"']+)["']\s*\)/g;

function importsOf(file: string): string[] {
  const text = readFileSync(file, "utf8");
  return [...text.matchAll(IMPORT)].map((m) => (m[1] ?? m[2]) as string);
}

const areas = {
  packages: ["packages"],
  guestAgent: ["guest-agent"],
  hostPlugin: ["host-plugin"],
};

function violations(dirs: string[], forbidden: (spec: string, file: string) => boolean): string[] {
  return dirs.flatMap((d) =>
    sources(d).flatMap((f) =>
      importsOf(f)
        .filter((s) => forbidden(s, f))
        .map((s) => `${relative(ROOT, f)} imports ${s}`),
    ),
  );
}

const reaches = (spec: string, file: string, target: string) =>
  spec.startsWith(`@xenroam/${target}`) ||
  (spec.startsWith(".") && join(file, "..", spec).includes(`/${target}/`));

test("packages never import the apps", (t) => {
  t.deepEqual(
    violations(areas.packages, (s, f) => reaches(s, f, "guest-agent") || reaches(s, f, "host-plugin")),
    [],
  );
});

test("the host plugin and the guest agent never import each other", (t) => {
  t.deepEqual(
    violations(areas.hostPlugin, (s, f) => reaches(s, f, "guest-agent")),
    [],
  );
  t.deepEqual(
    violations(areas.guestAgent, (s, f) => reaches(s, f, "host-plugin")),
    [],
  );
});

test("only packages/netlink imports the npm netlink package", (t) => {
  const all = [...areas.packages, ...areas.guestAgent, ...areas.hostPlugin, "test"];
  t.deepEqual(
    violations(
      all,
      (s, f) =>
        (s === "netlink" || s.startsWith("netlink/")) &&
        !relative(ROOT, f).startsWith("packages/netlink/src/rtnetlink.ts"),
    ),
    [],
  );
  // bun:ffi only where the Bun builds put their rtnetlink socket (scripts/bun-bundle.mjs).
  t.deepEqual(
    violations(all, (s, f) => s === "bun:ffi" && relative(ROOT, f) !== "packages/netlink/src/bun-native.ts"),
    [],
  );
});

test("what the guest agent loads takes zod/mini, never the whole of zod (its memory, issue 11)", (t) => {
  const agentSide = ["packages/core", "packages/protocol", "packages/netlink", "packages/xenstore"]
    .concat(["packages/mobility", "packages/control", ...areas.guestAgent])
    .map((d) => (d.endsWith("/src") ? d : `${d}/src`));
  t.deepEqual(
    violations(agentSide, (s) => s === "zod" || (s.startsWith("zod/") && s !== "zod/mini")),
    [],
  );
});

test("only the SQLite store imports better-sqlite3, and only the control server's daemon imports the store", (t) => {
  const all = [...areas.packages, ...areas.guestAgent, ...areas.hostPlugin, "test"];
  t.deepEqual(
    violations(
      all,
      // The store's contract test writes a database of an older schema by hand, to test its upgrade.
      (s, f) =>
        s === "better-sqlite3" &&
        !["packages/control/src/sqlite.ts", "packages/control/test/store.test.ts"].includes(
          relative(ROOT, f),
        ),
    ),
    [],
  );
  // The agents and the host plugin use @xenroam/control without loading the database's native module.
  t.deepEqual(
    violations([...areas.guestAgent, ...areas.hostPlugin], (s) => s === "@xenroam/control/sqlite"),
    [],
  );
});

test("only the etcd store imports etcd3 (and the daemon loads it only for --store etcd://)", (t) => {
  const all = [...areas.packages, ...areas.guestAgent, ...areas.hostPlugin, "test"];
  t.deepEqual(
    violations(all, (s, f) => s === "etcd3" && relative(ROOT, f) !== "packages/control/src/etcd.ts"),
    [],
  );
  // The agents and the host plugin never load it.
  t.deepEqual(
    violations([...areas.guestAgent, ...areas.hostPlugin], (s) => s.includes("etcd")),
    [],
  );
});

test("the core imports nothing from Node", (t) => {
  t.deepEqual(
    violations(["packages/core/src"], (s) => s.startsWith("node:") || !s.startsWith(".")),
    [],
  );
});

test("the dependency scanner sees imports at all (guards the guards)", (t) => {
  const lab = sources("packages/lab/src").flatMap(importsOf);
  t.true(lab.includes("@xenroam/netlink"));
  t.true(lab.includes("node:child_process"));
});

test("only the adapters start processes (radvd, nft, ip, the lab's own helpers)", (t) => {
  const allowed = new Set([
    "host-plugin/src/adapters/radvd.ts",
    "host-plugin/src/adapters/xl.ts",
    "host-plugin/src/adapters/xe.ts",
    "host-plugin/src/adapters/hold-release.ts",
    "host-plugin/src/adapters/dom0-net.ts",
    "host-plugin/src/xapi-hook-main.ts",
    "host-plugin/src/xapi-plugin-main.ts",
    // The one adapter to the DomU's network managers (networkctl reload, nmcli).
    "guest-agent/src/network-setup.ts",
    "packages/mobility/src/nft.ts",
    // The binary resolver asks a program found for its version (`nft --version`) for xenroam doctor.
    "packages/process/src/binaries.ts",
    // A real etcd cluster on loopback, for the control server's tests and the lab's fan-out bench.
    "packages/process/src/etcd-cluster.ts",
    "packages/lab/src/system.ts",
    "packages/lab/src/netns.ts",
    "packages/lab/src/supervisor.ts",
    "packages/lab/src/lab.ts",
    "packages/lab/src/bench.ts",
    // The fault soak runs xenroam as the bench does, and watches its log lines to inject faults.
    "packages/lab/src/soak.ts",
    // The lab toolstack sends the reconnected frontend's NA with iproute2 in the VM's namespace.
    "packages/lab/src/toolstack.ts",
    // The figures at scale run xenroam and the probes as the bench does.
    "packages/lab/src/scale.ts",
    // The fan-out bench: control servers, etcd, simulated watchers and real correspondent agents.
    "packages/lab/src/fanout.ts",
    "packages/lab/src/main.ts",
    "packages/lab/src/xapi.ts",
    // The lab's CA and its control server's certificate, made with the openssl CLI at lab-up.
    "packages/lab/src/openssl.ts",
  ]);
  const spawners = [...areas.packages, ...areas.guestAgent, ...areas.hostPlugin]
    .flatMap((d) => sources(d))
    .filter((f) => f.includes("/src/") && importsOf(f).includes("node:child_process"))
    .map((f) => relative(ROOT, f));
  t.deepEqual(
    spawners.filter((f) => !allowed.has(f)),
    [],
  );
});

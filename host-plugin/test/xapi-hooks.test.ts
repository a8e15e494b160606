// XAPI's hook contract: pre-migrate aborts (exit 2) a xenroam migration the guest has not prepared, and lets
// anything else go; post-migrate tells the guest it arrived (the vif_map swapped the VIFs) — and exits 0 or 1 whatever
// happens, because any other code makes XAPI destroy the VM.
import { execFile } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import test, { type ExecutionContext } from "ava";
import { encodeMessage } from "@xenroam/protocol";
import { XenstoreServer } from "@xenroam/xenstore";
import {
  type HookPorts,
  parseHookArgs,
  parseVifHotplugArgs,
  postMigrate,
  preMigrate,
  vifHotplug,
} from "../src/xapi-hooks.js";

const UUID = "5e1d4f4e-0000-4000-8000-000000000001";
const HOOK = fileURLToPath(new URL("../src/xapi-hook-main.js", import.meta.url));
const FAKE_XE = fileURLToPath(new URL("../../test/fixtures/fake-xe.mjs", import.meta.url));
const ARGS = parseHookArgs(["-vmuuid", UUID, "-reason", "migrate", "-vmdomid", "7"]);
const prepared = encodeMessage({ v: 1, id: "m1", status: "prepared", moa: "2001:db8:b::2", ifname: "eth1" });

function fakePorts(otherConfig: Record<string, string>, guest: Record<string, string> = {}) {
  const oc = { ...otherConfig };
  const written: Record<string, string> = {};
  const ports: HookPorts = {
    otherConfig: async (_vm, k) => oc[k],
    removeOtherConfig: async (_vm, k) => {
      delete oc[k];
    },
    domid: async () => 7,
    readGuest: async (_d, k) => guest[k],
    writeGuest: async (_d, k, v) => {
      written[k] = v;
    },
    log: () => {},
  };
  return { ports, oc, written };
}

test("hook arguments are XAPI's -vmuuid -reason -vmdomid", (t) => {
  t.deepEqual(ARGS, { vmuuid: UUID, reason: "migrate", vmdomid: 7 });
  t.throws(() => parseHookArgs(["-reason", "migrate"]), { message: /-vmuuid/ });
});

test("pre-migrate: not a xenroam migration or a prepared one goes on; an unprepared one aborts cleanly", async (t) => {
  t.is(await preMigrate(ARGS, fakePorts({}).ports), 0);
  t.is(await preMigrate(ARGS, fakePorts({ "xenroam-migration": "m1" }, { answer: prepared }).ports), 0);
  const silent = fakePorts({ "xenroam-migration": "m1", "xenroam-arrival": "{}" });
  t.is(await preMigrate(ARGS, silent.ports), 2);
  t.deepEqual(silent.oc, {}, "an aborted migration leaves nothing of xenroam on the VM");
  const other = fakePorts({ "xenroam-migration": "m2" }, { answer: prepared });
  t.is(await preMigrate(ARGS, other.ports), 2, "prepared for another migration is not prepared");
});

test("post-migrate: the arrival is written, the keys removed; a failure is exit 1", async (t) => {
  const arrived = JSON.stringify({ v: 1, id: "m1", host: "hostb" });
  const f = fakePorts({
    "xenroam-migration": "m1",
    "xenroam-arrival": JSON.stringify({ arrived }),
  });
  t.is(await postMigrate(ARGS, f.ports), 0);
  t.deepEqual(f.written, { arrived });
  t.deepEqual(f.oc, {});
  t.is(await postMigrate(ARGS, fakePorts({}).ports), 0, "not ours: nothing to do");
  // Told already (vif-hotplug, before the resume): the running guest's keys are left as they are now.
  const told = fakePorts(
    { "xenroam-arrival": JSON.stringify({ arrived, status: "prepared" }) },
    { arrived, status: "switched" },
  );
  t.is(await postMigrate(ARGS, told.ports), 0);
  t.deepEqual(told.written, {}, "status stays switched");
  t.deepEqual(told.oc, {});
  const broken = fakePorts({ "xenroam-arrival": JSON.stringify({ arrived }) });
  broken.ports.writeGuest = async () => {
    throw new Error("xenstore is gone");
  };
  t.is(await postMigrate(ARGS, broken.ports), 1);
  t.is(await postMigrate(ARGS, fakePorts({ "xenroam-arrival": "{not json" }).ports), 1);
});

function hook(env: Record<string, string>, ...args: string[]): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [HOOK, ...args], { env: { ...process.env, ...env } }, (err, _o, stderr) =>
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stderr }),
    );
  });
}

async function xeDir(t: ExecutionContext) {
  const dir = mkdtempSync(join(tmpdir(), "xr-hook-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const xe = join(dir, "xe");
  writeFileSync(xe, `#!/bin/sh\nexec "${process.execPath}" "${FAKE_XE}" "$@"\n`);
  chmodSync(xe, 0o755);
  return { dir, xe };
}

test("the installed post-migrate hook exits 0 or 1 whatever fails: no xe, bad arguments, no xenstore", async (t) => {
  const { dir, xe } = await xeDir(t);
  const noXe = await hook(
    { XENROAM_XE: join(dir, "missing-xe") },
    "post-migrate",
    "-vmuuid",
    UUID,
    "-reason",
    "m",
  );
  t.is(noXe.code, 1);
  t.regex(noXe.stderr, /post_migrate_failed/);
  t.is((await hook({}, "post-migrate", "-reason", "m")).code, 1);
  t.is((await hook({}, "post-migrate")).code, 1);
  const noXs = await hook(
    {
      XENROAM_XE: xe,
      XENROAM_XENSTORE: join(dir, "no-xenstored.sock"),
      FAKE_XE_OTHER_CONFIG: JSON.stringify({ "xenroam-arrival": JSON.stringify({ arrived: "x" }) }),
    },
    "post-migrate",
    "-vmuuid",
    UUID,
    "-reason",
    "m",
  );
  t.is(noXs.code, 1);
  t.is((await hook({ XENROAM_XE: xe }, "post-migrate", "-vmuuid", UUID, "-reason", "m")).code, 0);
});

test("the installed pre-migrate hook aborts (2) when the guest's answer says it is not prepared", async (t) => {
  const { dir, xe } = await xeDir(t);
  const server = new XenstoreServer();
  const sock = join(dir, "xs.sock");
  await server.listen(sock, { domid: 0 });
  t.teardown(() => server.close());
  const log = join(dir, "xe.log");
  const env = {
    XENROAM_XE: xe,
    XENROAM_XENSTORE: sock,
    FAKE_XE_LOG: log,
    FAKE_XE_OTHER_CONFIG: JSON.stringify({ "xenroam-migration": "m1" }),
  };
  const { XenstoreClient } = await import("@xenroam/xenstore");
  const xs = await XenstoreClient.connect(sock);
  await xs.write(
    "/local/domain/7/vm-data/xenroam/answer",
    encodeMessage({ v: 1, id: "m1", status: "error", reason: "no RA" }),
  );
  const abort = await hook(env, "pre-migrate", "-vmuuid", UUID, "-reason", "m", "-vmdomid", "7");
  t.is(abort.code, 2);
  t.regex(abort.stderr, /pre_migrate_abort/);
  t.true(readFileSync(log, "utf8").includes("vm-param-remove"), "the keys are removed");
  await xs.write("/local/domain/7/vm-data/xenroam/answer", prepared);
  t.is((await hook(env, "pre-migrate", "-vmuuid", UUID, "-reason", "m", "-vmdomid", "7")).code, 0);
  xs.close();
  t.is(
    (await hook({ XENROAM_XE: join(dir, "missing") }, "pre-migrate", "-vmuuid", UUID)).code,
    1,
    "our failure does not abort",
  );
});

test("install-xapi: hooks and plugin in place; the post-migrate wrapper exits 1 even when node is missing", async (t) => {
  const { installXapi } = await import("../src/install.js");
  const root = mkdtempSync(join(tmpdir(), "xr-inst-"));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const files = installXapi(root, "/nonexistent/node");
  t.deepEqual(
    files.map((f) => f.slice(root.length)),
    [
      "/etc/xapi.d/vm-pre-migrate/10-xenroam",
      "/etc/xapi.d/vm-post-migrate/10-xenroam",
      "/etc/xapi.d/vif-hotplug",
      "/etc/xapi.d/plugins/xenroam",
    ],
  );
  const post = join(root, "etc/xapi.d/vm-post-migrate/10-xenroam");
  const code = await new Promise<number>((resolve) =>
    execFile(post, ["-vmuuid", UUID, "-reason", "migrate"], (err) =>
      resolve(err ? Number((err as { code?: number }).code ?? 1) : 0),
    ),
  );
  t.is(code, 1, "127 (node not found) became 1");
  const real = installXapi(root);
  t.is(real.length, 4);
  const ok = await new Promise<number>((resolve) =>
    execFile(
      post,
      ["-vmuuid", UUID, "-reason", "migrate"],
      { env: { ...process.env, XENROAM_XE: "/nonexistent" } },
      (err) => resolve(err ? Number((err as { code?: number }).code ?? 1) : 0),
    ),
  );
  t.is(ok, 1, "the real hook, failing (no xe), still exits 1");
});

const TMP = "5e1d4f4e-0000-4000-8000-000000000001".slice(0, 24) + "000000000001";

test("vif-hotplug: an incoming migration's arrival is written into the new domain before it resumes", async (t) => {
  const arrived = JSON.stringify({ v: 1, id: "m1", host: "hostb" });
  const xs: Record<string, string> = { [`/vm/${TMP}/final-uuid`]: UUID };
  const f = fakePorts({ "xenroam-arrival": JSON.stringify({ arrived, request: "r" }) });
  let domidWritten: number | undefined;
  const ports: HookPorts = {
    ...f.ports,
    xenstoreRead: async (p) => xs[p],
    xenstoreList: async (p) => (p === `/vm/${TMP}/domains` ? ["12"] : []),
    writeGuest: async (d, k, v) => {
      domidWritten = d;
      f.written[k] = v;
    },
  };
  const args = parseVifHotplugArgs(["-action", "online", "-vifuuid", "v-1", "-vmuuid", TMP]);
  t.is(await vifHotplug(args, ports), 0);
  t.deepEqual(f.written, { arrived, request: "r" });
  t.is(domidWritten, 12);
  t.deepEqual(
    Object.keys(f.oc),
    ["xenroam-arrival"],
    "the keys stay for post-migrate, which writes it again",
  );
  // The rename before unpause has happened (final-uuid gone): too late to write under the running guest.
  const late: HookPorts = { ...ports, writeGuestWhile: async () => false };
  f.written.arrived = "";
  delete f.written.arrived;
  delete f.written.request;
  t.is(await vifHotplug(args, late), 0);
  t.deepEqual(f.written, {});
});

test("vif-hotplug: not an arrival (no final-uuid), not xenroam's, or another action: nothing written", async (t) => {
  const f = fakePorts({ "xenroam-arrival": JSON.stringify({ arrived: "x" }) });
  const ports: HookPorts = {
    ...f.ports,
    xenstoreRead: async () => undefined,
    xenstoreList: async () => ["3"],
  };
  t.is(
    await vifHotplug(parseVifHotplugArgs(["-action", "online", "-vifuuid", "v", "-vmuuid", UUID]), ports),
    0,
  );
  t.is(
    await vifHotplug(parseVifHotplugArgs(["-action", "remove", "-vifuuid", "v", "-vmuuid", TMP]), ports),
    0,
  );
  const plain = fakePorts({});
  const plainPorts: HookPorts = {
    ...plain.ports,
    xenstoreRead: async () => UUID,
    xenstoreList: async () => ["3"],
  };
  t.is(
    await vifHotplug(parseVifHotplugArgs(["-action", "online", "-vifuuid", "v", "-vmuuid", TMP]), plainPorts),
    0,
  );
  t.deepEqual(f.written, {});
  t.deepEqual(plain.written, {});
  const broken: HookPorts = { ...plainPorts, otherConfig: async () => "{not json" };
  t.is(
    await vifHotplug(parseVifHotplugArgs(["-action", "online", "-vifuuid", "v", "-vmuuid", TMP]), broken),
    1,
  );
  t.throws(() => parseVifHotplugArgs(["-action", "online"]), { message: /-vmuuid/ });
});

test("the installed vif-hotplug writes the arrival into the new domain's vm-data through xenstore, and exits 0 whatever fails", async (t) => {
  const { dir, xe } = await xeDir(t);
  const server = new XenstoreServer();
  const sock = join(dir, "xs.sock");
  await server.listen(sock, { domid: 0 });
  t.teardown(() => server.close());
  const { XenstoreClient } = await import("@xenroam/xenstore");
  const xs = await XenstoreClient.connect(sock);
  t.teardown(() => xs.close());
  // As xenopsd's Domain.make leaves it on a migration's destination (ocaml/xenopsd/xc/domain.ml 563-573).
  await xs.write(`/vm/${TMP}/final-uuid`, UUID);
  await xs.write(`/vm/${TMP}/domains/12`, "/local/domain/12");
  const arrived = JSON.stringify({ v: 1, id: "m1", host: "hostb" });
  const { installXapi } = await import("../src/install.js");
  installXapi(dir);
  const hotplug = join(dir, "etc/xapi.d/vif-hotplug");
  const run = (env: Record<string, string>) =>
    new Promise<{ code: number; stderr: string }>((resolve) =>
      execFile(
        hotplug,
        ["-action", "online", "-vifuuid", "v-1", "-vmuuid", TMP],
        { env: { ...process.env, ...env } },
        (err, _o, stderr) =>
          resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stderr }),
      ),
    );
  const r = await run({
    XENROAM_XE: xe,
    XENROAM_XENSTORE: sock,
    FAKE_XE_OTHER_CONFIG: JSON.stringify({ "xenroam-arrival": JSON.stringify({ arrived }) }),
  });
  t.is(r.code, 0, r.stderr);
  t.is(await xs.tryRead("/local/domain/12/vm-data/xenroam/arrived"), arrived);
  t.regex(r.stderr, /guest_notified_before_resume/);
  t.is((await run({ XENROAM_XE: join(dir, "missing-xe"), XENROAM_XENSTORE: sock })).code, 0);
});

test("install-xapi keeps an admin's own vif-hotplug that calls xenroam's, and refuses to replace one that does not", async (t) => {
  const { installXapi, InstallError } = await import("../src/install.js");
  const root = mkdtempSync(join(tmpdir(), "xr-inst-"));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const { mkdirSync } = await import("node:fs");
  mkdirSync(join(root, "etc/xapi.d"), { recursive: true });
  const path = join(root, "etc/xapi.d/vif-hotplug");
  writeFileSync(path, '#!/bin/sh\n/usr/local/bin/my-vif-accounting "$@"\n');
  const err = t.throws(() => installXapi(root), { instanceOf: InstallError });
  t.regex(err?.message ?? "", /is not xenroam's[\s\S]*vif-hotplug "\$@"/);
  t.is(readFileSync(path, "utf8"), '#!/bin/sh\n/usr/local/bin/my-vif-accounting "$@"\n', "untouched");
  const merged = `${readFileSync(path, "utf8")}${(err?.message ?? "")
    .split("\n")
    .slice(1)
    .map((l) => l.trim())
    .join("\n")}\n`;
  writeFileSync(path, merged);
  const files = installXapi(root).map((f) => f.slice(root.length));
  t.false(files.includes("/etc/xapi.d/vif-hotplug"));
  t.is(readFileSync(path, "utf8"), merged, "kept");
});

// The lab's XAPI without root: its database and its refusals, the way xapi answers (the calls that touch the
// lab's namespaces are in test/lab/xapi.root.test.ts), and the lab's xe's syntax.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test, { type ExecutionContext } from "ava";
import {
  DEFAULT_TOPOLOGY,
  destinationTmpUuid,
  LabXapi,
  labVmUuid,
  parseTopology,
  writeVmLocation,
  XapiFailure,
  xapiXenroamArgs,
} from "../src/index.js";
import { parseXe, XeUsageError } from "../src/xe.js";

const topology = parseTopology({ ...DEFAULT_TOPOLOGY, toolstack: { restore: "xapi" } });

function lab(t: ExecutionContext) {
  const stateDir = mkdtempSync(join(tmpdir(), "xr-labxapi-"));
  t.teardown(() => rmSync(stateDir, { recursive: true, force: true }));
  writeVmLocation(stateDir, { vm: "vm", host: "hosta", domid: 5, nextDomid: 6 });
  return { stateDir, xapi: new LabXapi({ stateDir, topology, password: "pw" }) };
}

async function login(x: LabXapi, pool: string): Promise<string> {
  return String(await x.call(pool, "session.login_with_password", ["root", "pw", "1.0", "test"]));
}

const code = async (p: Promise<unknown>) => {
  try {
    await p;
    return "ok";
  } catch (err) {
    return err instanceof XapiFailure ? err.code : String(err);
  }
};

test("a pool per site: the VM is in its host's pool only; sessions are per pool", async (t) => {
  const { xapi } = lab(t);
  const a = await login(xapi, "a");
  const b = await login(xapi, "b");
  t.deepEqual(await xapi.call("a", "VM.get_by_name_label", [a, "vm"]), ["OpaqueRef:vm"]);
  t.deepEqual(await xapi.call("b", "VM.get_by_name_label", [b, "vm"]), []);
  t.deepEqual(await xapi.call("a", "host.get_by_name_label", [a, "hostb"]), [], "hostb is another pool's");
  t.is(await code(xapi.call("b", "VM.get_VIFs", [a, "OpaqueRef:vm"])), "SESSION_INVALID");
  t.is(
    await code(xapi.call("a", "session.login_with_password", ["root", "nope"])),
    "SESSION_AUTHENTICATION_FAILED",
  );
  const rec = (await xapi.call("a", "VM.get_record", [a, "OpaqueRef:vm"])) as Record<string, unknown>;
  t.like(rec, {
    uuid: labVmUuid(topology),
    domid: 5,
    resident_on: "OpaqueRef:host-hosta",
    power_state: "Running",
  });
  const vif1 = (await xapi.call("a", "VIF.get_record", [a, "OpaqueRef:vif-1"])) as { network: string };
  t.is(await xapi.call("a", "network.get_bridge", [a, vif1.network]), "xrpark0");
});

test("network.create: xapi's bridge-name rules (xapi_network.ml 254-270), xapiN when none is given", async (t) => {
  const { xapi } = lab(t);
  const a = await login(xapi, "a");
  const create = (bridge?: string) =>
    xapi.call("a", "network.create", [a, { name_label: "n", ...(bridge !== undefined ? { bridge } : {}) }]);
  const ref = String(await create("xr-b"));
  t.is(await xapi.call("a", "network.get_bridge", [a, ref]), "xr-b");
  t.is(await code(create("xr-b")), "BRIDGE_NAME_EXISTS");
  t.is(await code(create("xapi3")), "INVALID_VALUE");
  t.is(await code(create("thisnameistoolong")), "INVALID_VALUE");
  t.is(await xapi.call("a", "network.get_bridge", [a, String(await create())]), "xapi0");
  t.regex(String(await xapi.call("a", "network.get_uuid", [a, ref])), /^[0-9a-f-]{36}$/);
});

test("other_config: add refuses a duplicate key (MAP_DUPLICATE_KEY); the database survives a restart", async (t) => {
  const { xapi, stateDir } = lab(t);
  const a = await login(xapi, "a");
  await xapi.call("a", "VM.add_to_other_config", [a, "OpaqueRef:vm", "k", "v"]);
  t.is(
    await code(xapi.call("a", "VM.add_to_other_config", [a, "OpaqueRef:vm", "k", "w"])),
    "MAP_DUPLICATE_KEY",
  );
  await xapi.call("a", "network.create", [a, { name_label: "s", bridge: "xr-b" }]);
  const again = new LabXapi({ stateDir, topology, password: "pw" });
  const s = await login(again, "a");
  t.deepEqual(await again.call("a", "VM.get_other_config", [s, "OpaqueRef:vm"]), { k: "v" });
  const nets = (await again.call("a", "network.get_all_records", [s])) as Record<string, { bridge: string }>;
  t.true(Object.values(nets).some((n) => n.bridge === "xr-b"));
});

test("migrate_send: a vif_map within the pool is refused as xapi does (xapi_vm_migrate.ml 1985-1994); across pools it must name the other pool's networks", async (t) => {
  const { xapi } = lab(t);
  const a = await login(xapi, "a");
  const b = await login(xapi, "b");
  const here = await xapi.call("a", "host.migrate_receive", [
    a,
    "OpaqueRef:host-hosta2",
    "OpaqueRef:a-real",
    {},
  ]);
  const map = { "OpaqueRef:vif-0": "OpaqueRef:a-park", "OpaqueRef:vif-1": "OpaqueRef:a-real" };
  t.is(
    await code(xapi.call("a", "VM.assert_can_migrate", [a, "OpaqueRef:vm", here, true, {}, map, {}])),
    "OPERATION_NOT_ALLOWED",
  );
  const there = await xapi.call("b", "host.migrate_receive", [
    b,
    "OpaqueRef:host-hostb",
    "OpaqueRef:b-real",
    {},
  ]);
  t.is(
    await code(xapi.call("a", "VM.assert_can_migrate", [a, "OpaqueRef:vm", there, true, {}, map, {}])),
    "HANDLE_INVALID",
  );
  const theirs = { "OpaqueRef:vif-0": "OpaqueRef:b-park", "OpaqueRef:vif-1": "OpaqueRef:b-real" };
  t.is(
    await code(xapi.call("a", "VM.assert_can_migrate", [a, "OpaqueRef:vm", there, true, {}, theirs, {}])),
    "ok",
  );
  t.is(
    await code(xapi.call("b", "host.migrate_receive", [b, "OpaqueRef:host-hosta", "OpaqueRef:b-real", {}])),
    "HANDLE_INVALID",
  );
});

test("xenopsd's temporary uuid and the xenroam command line a XAPI host's admin would use", (t) => {
  const uuid = labVmUuid(topology);
  t.is(destinationTmpUuid(uuid), `${uuid.slice(0, 24)}000000000001`);
  const args = xapiXenroamArgs(topology, "/s", "hosta", "hostb");
  t.deepEqual(args.slice(0, 2), ["--toolstack", "xapi"]);
  t.true(args.includes("http://[::1]"));
  t.deepEqual(args.slice(-5), [
    "--xapi-remote",
    "http://[2001:db8:b::b]",
    "--xapi-remote-password-file",
    "/s/xapi.password",
    "--xapi-insecure-http",
  ]);
  t.false(
    xapiXenroamArgs(topology, "/s", "hosta", "hosta2").includes("--xapi-remote"),
    "one pool: no remote",
  );
});

test("the lab's xe: xe's syntax for the commands the hooks run, nothing else", (t) => {
  t.deepEqual(parseXe(["vm-param-get", "uuid=u", "param-name=other-config", "param-key=k"]), {
    command: "vm-param-get",
    uuid: "u",
    param: "other-config",
    key: "k",
  });
  t.throws(() => parseXe(["vm-list"]), { instanceOf: XeUsageError });
  t.throws(() => parseXe(["vm-param-remove", "uuid=u", "param-name=other-config"]), { message: /param-key/ });
  t.throws(() => parseXe(["vm-param-get", "uuid"]), { message: /Syntax error/ });
});

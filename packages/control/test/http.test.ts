// The control server over real HTTP on loopback: authorisation, validation, signed bindings, the watch.
import type { AddressInfo } from "node:net";
import test, { type ExecutionContext } from "ava";
import {
  ControlService,
  createControlServer,
  exportPublicKey,
  generateSigningKeys,
  MemoryStore,
  type SignedBinding,
  signBinding,
} from "../src/index.js";

const keys = generateSigningKeys();
const intruder = generateSigningKeys();
const TOKENS = { admin: "adm-secret", vm: "vm-secret", vm2: "vm2-secret", cn: "cn-secret" };

async function server(t: ExecutionContext) {
  const service = new ControlService({ store: new MemoryStore(), ...keys });
  const srv = createControlServer(
    service,
    { admin: [TOKENS.admin], vms: { vm: TOKENS.vm, vm2: TOKENS.vm2 }, peers: { cn: TOKENS.cn } },
    exportPublicKey(keys.publicKey),
  );
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", () => r()));
  t.teardown(() => new Promise<void>((r) => srv.close(() => r())));
  const base = `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
  const call = async (method: string, path: string, token?: string, payload?: unknown) => {
    const res = await fetch(`${base}${path}`, {
      method,
      headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), "content-type": "application/json" },
      ...(payload === undefined
        ? {}
        : { body: typeof payload === "string" ? payload : JSON.stringify(payload) }),
    });
    const text = await res.text();
    let json: unknown = text;
    try {
      json = JSON.parse(text);
    } catch {
      /* PEM */
    }
    return { status: res.status, json: json as Record<string, unknown> };
  };
  return { call, service };
}

test("registry: admins register VMs; bad input and wrong principals get a 4xx with a reason", async (t) => {
  const { call } = await server(t);
  t.is((await call("POST", "/v1/vms", TOKENS.admin, { name: "vm", hoa: "FD00:1::5" })).status, 200);
  t.like((await call("POST", "/v1/vms", TOKENS.vm, { name: "x", hoa: "fd00:1::9" })).json, {
    error: "only an admin may register VMs",
  });
  const bad = await call("POST", "/v1/vms", TOKENS.admin, { name: "vm2", hoa: "fe80::1" });
  t.is(bad.status, 400);
  t.regex(String(bad.json.error), /link-local/);
  const taken = await call("POST", "/v1/vms", TOKENS.admin, { name: "vm2", hoa: "fd00:1::5" });
  t.is(taken.status, 409);
  t.regex(String(taken.json.error), /already belongs to vm/);
  t.is((await call("POST", "/v1/vms", "nope", { name: "a", hoa: "fd00::1" })).status, 403);
  t.is((await call("POST", "/v1/vms", TOKENS.admin, "not json")).status, 400);
  t.is((await call("POST", "/v1/vms", TOKENS.admin, { name: "big", hoa: "x".repeat(20_000) })).status, 400);
  t.is((await call("GET", "/v1/nothing", TOKENS.admin)).status, 404);
  const pem = await call("GET", "/v1/public-key");
  t.is(typeof pem.json, "string");
  t.regex(pem.json as unknown as string, /BEGIN PUBLIC KEY/);
});

test("standby registration, pre-signed activation, and the refusals: replay, forgery, expiry, other VM", async (t) => {
  const { call } = await server(t);
  await call("POST", "/v1/vms", TOKENS.admin, { name: "vm", hoa: "fd00:1::5" });
  await call("POST", "/v1/vms", TOKENS.admin, { name: "vm2", hoa: "fd00:1::6" });
  t.is((await call("POST", "/v1/vms/vm/standby", TOKENS.vm2, { locator: "2001:db8:b::2" })).status, 403);
  const reg = await call("POST", "/v1/vms/vm/standby", TOKENS.vm, { locator: "2001:db8:b::2" });
  t.is(reg.status, 200);
  const activation = reg.json as unknown as SignedBinding;
  t.like(activation, { vm: "vm", hoa: "fd00:1::5", locator: "2001:db8:b::2", seq: 1 });

  t.is((await call("POST", "/v1/bindings", TOKENS.vm2, activation)).status, 403, "vm2 may not activate vm's");
  t.is((await call("POST", "/v1/bindings", TOKENS.vm, activation)).status, 200);
  const replay = await call("POST", "/v1/bindings", TOKENS.cn, activation);
  t.is(replay.status, 409);
  t.regex(String(replay.json.error), /replayed or stale/);
  const forged = signBinding(intruder.privateKey, { ...activation, seq: 2 });
  t.regex(String((await call("POST", "/v1/bindings", TOKENS.cn, forged)).json.error), /signature/);
  const expired = signBinding(keys.privateKey, { ...activation, seq: 2, expiresAt: Date.now() - 1 });
  t.regex(String((await call("POST", "/v1/bindings", TOKENS.cn, expired)).json.error), /expired/);
  const hijack = signBinding(keys.privateKey, {
    vm: "vm2",
    hoa: "fd00:1::5",
    locator: "2001:db8:66::1",
    seq: 5,
    expiresAt: Date.now() + 60_000,
  });
  t.regex(
    String((await call("POST", "/v1/bindings", TOKENS.admin, hijack)).json.error),
    /belongs to vm, not vm2/,
  );
});

test("the watch stream resumes from a revision and long-polls for the next change", async (t) => {
  const { call } = await server(t);
  await call("POST", "/v1/vms", TOKENS.admin, { name: "vm", hoa: "fd00:1::5" });
  const first = await call("GET", "/v1/bindings?since=0", TOKENS.cn);
  const rev = Number(first.json.revision);
  t.true(rev >= 1);
  t.is((await call("GET", "/v1/bindings?since=0", TOKENS.vm)).status, 403, "VMs do not watch");
  const waiting = call("GET", `/v1/bindings?since=${rev}&wait=5000`, TOKENS.cn);
  await new Promise((r) => setTimeout(r, 100));
  await call("POST", "/v1/vms/vm/standby", TOKENS.vm, { locator: "2001:db8:b::2" });
  const next = await waiting;
  const changes = next.json.changes as Array<{ revision: number; binding: { locators: string[] } }>;
  t.is(changes.length, 1);
  t.true((changes[0]?.revision ?? 0) > rev);
  t.deepEqual(
    changes[0]?.binding.locators,
    ["2001:db8:b::2"],
    "correspondents learn the standby locator before it is active",
  );
  t.is(
    (
      (await call("GET", `/v1/bindings?since=${Number(next.json.revision)}`, TOKENS.cn)).json
        .changes as unknown[]
    ).length,
    0,
  );
  t.is((await call("GET", "/v1/bindings?since=-1", TOKENS.cn)).status, 400);
});

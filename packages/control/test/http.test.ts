// The control server over real HTTP on loopback: authorisation, validation, signed bindings, the watch.
import { type AddressInfo, connect, type Socket } from "node:net";
import test, { type ExecutionContext } from "ava";
import {
  ControlService,
  createControlServer,
  exportPublicKey,
  generateSigningKeys,
  MemoryStore,
  type SignedBinding,
  signatureValid,
  signBinding,
} from "../src/index.js";

const keys = generateSigningKeys();
const intruder = generateSigningKeys();
const ADMIN = "adm-secret";

/** Sites a and b (hosts hosta and hostb); every locator a test claims lies in one of them. */
const SITES = {
  sites: [
    {
      name: "a",
      prefix: "2001:db8:a::/64",
      gateway: { linkLocal: "fe80::a:1", mac: "02:00:00:00:0a:01", address: "2001:db8:a::1" },
    },
    { name: "b", prefix: "2001:db8:b::/64", gateway: { linkLocal: "fe80::b:1", mac: "02:00:00:00:0b:01" } },
    {
      name: "c",
      prefix: "2001:db8:c::/64",
      gateway: { linkLocal: "fe80::c:1", mac: "02:00:00:00:0c:01" },
      locatorProof: "eui64",
    },
  ],
  hosts: [
    { name: "hosta", site: "a", address: "2001:db8:a::100" },
    { name: "hostb", site: "b" },
  ],
};
/** vm's MAC, and the address it makes in site b (EUI-64): proven to be vm's without anyone's word. */
const VM_MAC = "00:16:3e:00:00:05";
const VM_EUI64_B = "2001:db8:b:0:216:3eff:fe00:5";
const VM2_MAC = "00:16:3e:00:00:06";

async function server(t: ExecutionContext, options: { sites?: boolean } = {}) {
  const service = new ControlService({
    store: new MemoryStore(),
    ...keys,
    adminTokens: [ADMIN],
    reserved: ["2001:db8:a::7360"],
  });
  if (options.sites !== false) await service.putSites(SITES);
  const srv = createControlServer(service, exportPublicKey(keys.publicKey));
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
  // Tokens are issued by the server: VMs at registration, correspondents as peers.
  const TOKENS = {
    admin: ADMIN,
    vm: (await service.registerVm("vm", "fd00:1::5", [VM_MAC])).token,
    vm2: (await service.registerVm("vm2", "fd00:1::6", [VM2_MAC])).token,
    cn: (await service.registerPeer("cn")).token,
  };
  /** A standby registered by its VM and vouched for by an admin (as the source Dom0 would): its activation. */
  const standby = async (vm: string, token: string, locator: string) => {
    const r = await call("POST", `/v1/vms/${vm}/standby`, token, { locator });
    if (r.status === 200) await service.attest(vm, locator);
    return r;
  };
  return { call, service, TOKENS, standby, base };
}

test("registry: admins register VMs; bad input and wrong principals get a 4xx with a reason", async (t) => {
  const { call, TOKENS } = await server(t);
  const reg = await call("POST", "/v1/vms", TOKENS.admin, {
    name: "vm3",
    hoa: "FD00:1::7",
    macs: ["00:16:3E:00:00:07", "00:16:3e:00:01:07"],
  });
  t.like(reg.json, { name: "vm3", hoa: "fd00:1::7", macs: ["00:16:3e:00:00:07", "00:16:3e:00:01:07"] });
  const token3 = String(reg.json.token);
  t.like((await call("GET", "/v1/vms/vm3", token3)).json, { hoa: "fd00:1::7" }, "a VM reads its own record");
  t.is((await call("GET", "/v1/vms/vm", token3)).status, 403, "but not another's");
  const again = await call("POST", "/v1/vms", TOKENS.admin, { name: "vm3", hoa: "fd00:1::7" });
  t.is((await call("GET", "/v1/vms/vm3", token3)).status, 401, "re-registering revokes the old token");
  t.is((await call("GET", "/v1/vms/vm3", String(again.json.token))).status, 200);
  t.regex(
    String(
      (await call("POST", "/v1/vms", TOKENS.admin, { name: "v", hoa: "fd00::9", macs: ["zz"] })).json.error,
    ),
    /MAC zz/,
  );
  t.like((await call("POST", "/v1/vms", TOKENS.vm, { name: "x", hoa: "fd00:1::9" })).json, {
    error: "this token (vm) may not register VMs",
  });
  const bad = await call("POST", "/v1/vms", TOKENS.admin, { name: "vm2", hoa: "fe80::1" });
  t.is(bad.status, 400);
  t.regex(String(bad.json.error), /link-local/);
  const taken = await call("POST", "/v1/vms", TOKENS.admin, { name: "vm4", hoa: "fd00:1::5" });
  t.is(taken.status, 409);
  t.regex(String(taken.json.error), /already belongs to vm/);
  t.is((await call("POST", "/v1/vms", "nope", { name: "a", hoa: "fd00::1" })).status, 401);
  t.is((await call("POST", "/v1/vms", undefined, { name: "a", hoa: "fd00::1" })).status, 401);
  t.is((await call("POST", "/v1/vms", TOKENS.admin, "not json")).status, 400);
  t.is((await call("POST", "/v1/vms", TOKENS.admin, { name: "big", hoa: "x".repeat(20_000) })).status, 400);
  const none = await call("GET", "/v1/nothing", TOKENS.admin);
  t.is(none.status, 404);
  t.regex(String(none.json.error), /POST \/v1\/vms\/:vm\/standby/, "a 404 lists the routes");
  const pem = await call("GET", "/v1/public-key");
  t.is(typeof pem.json, "string");
  t.regex(pem.json as unknown as string, /BEGIN PUBLIC KEY/);
});

test("standby registration, pre-signed activation, and the refusals: replay, forgery, expiry, other VM", async (t) => {
  const { call, TOKENS, standby } = await server(t);
  t.is((await call("POST", "/v1/vms/vm/standby", TOKENS.vm2, { locator: "2001:db8:b::2" })).status, 403);
  const reg = await standby("vm", TOKENS.vm, "2001:db8:b::2");
  t.is(reg.status, 200);
  const activation = reg.json as unknown as SignedBinding;
  t.like(activation, { vm: "vm", hoa: "fd00:1::5", locator: "2001:db8:b::2", seq: 1 });

  t.is((await call("POST", "/v1/bindings", TOKENS.vm2, activation)).status, 403, "vm2 may not activate vm's");
  t.is((await call("POST", "/v1/bindings", TOKENS.vm, activation)).status, 200);
  const replay = await call("POST", "/v1/bindings", TOKENS.cn, activation);
  t.is(replay.status, 409);
  t.regex(String(replay.json.error), /replayed or stale/);
  // Forged for a current standby at its very sequence number: the key is what gives it away.
  const next = (await standby("vm", TOKENS.vm, "2001:db8:b::3")).json as unknown as SignedBinding;
  const forged = signBinding(intruder.privateKey, next);
  t.regex(String((await call("POST", "/v1/bindings", TOKENS.cn, forged)).json.error), /not the server's key/);
  const expired = signBinding(keys.privateKey, { ...next, expiresAt: Date.now() - 1 });
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
  const { call, TOKENS } = await server(t);
  const first = await call("GET", "/v1/bindings?since=0", TOKENS.cn);
  const rev = Number(first.json.revision);
  t.true(rev >= 1);
  t.is((await call("GET", "/v1/bindings?since=0", TOKENS.vm)).status, 403, "VMs do not watch");
  const waiting = call("GET", `/v1/bindings?since=${rev}&wait=5000`, TOKENS.cn);
  await new Promise((r) => setTimeout(r, 100));
  await call("POST", "/v1/vms/vm/standby", TOKENS.vm, { locator: VM_EUI64_B });
  const next = await waiting;
  const changes = next.json.changes as Array<{ revision: number; binding: { locators: string[] } }>;
  t.is(changes.length, 1);
  t.true((changes[0]?.revision ?? 0) > rev);
  t.deepEqual(
    changes[0]?.binding.locators,
    [VM_EUI64_B],
    "correspondents learn the standby locator (proven by the VM's MAC) before it is active",
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

test("sites: admins upload the sites document, validated as the host plugin validates its file; peers read it, VMs its sites", async (t) => {
  const { call, TOKENS } = await server(t, { sites: false });
  t.is((await call("GET", "/v1/sites", TOKENS.cn)).status, 404);
  const doc = {
    sites: [
      { name: "a", prefix: "2001:db8:a::/64", gateway: { linkLocal: "fe80::a:1", mac: "02:00:00:00:0a:01" } },
    ],
    hosts: [{ name: "hosta", site: "a" }],
  };
  t.is((await call("PUT", "/v1/sites", TOKENS.cn, doc)).status, 403);
  const bad = await call("PUT", "/v1/sites", TOKENS.admin, { ...doc, hosts: [{ name: "h", site: "z" }] });
  t.is(bad.status, 400);
  t.regex(String(bad.json.error), /no site named "z"/);
  t.is((await call("PUT", "/v1/sites", TOKENS.admin, doc)).status, 200);
  t.like((await call("GET", "/v1/sites", TOKENS.cn)).json, {
    sites: [{ name: "a", ra: { minIntervalMs: 30, maxIntervalMs: 70 } }],
  });
  // A VM finds its gateway after a move it did not make (the guest agent's roam): sites, prefixes and
  // gateways — what the sites' own RAs tell it anyway — and nothing of the hosts.
  const vm = await call("GET", "/v1/sites", TOKENS.vm);
  t.is(vm.status, 200);
  t.deepEqual(vm.json, {
    sites: [
      { name: "a", prefix: "2001:db8:a::/64", gateway: { linkLocal: "fe80::a:1", mac: "02:00:00:00:0a:01" } },
    ],
  });
  t.false(JSON.stringify(vm.json).includes("hosta"), "VMs do not read the host plan");
});

test("a locator belongs to one HoA; the locator list keeps only the active, the previous and new standbys", async (t) => {
  const { call, TOKENS, standby } = await server(t);
  const a = await standby("vm", TOKENS.vm, "2001:db8:a::5");
  t.is((await call("POST", "/v1/bindings", TOKENS.vm, a.json)).status, 200);
  const taken = await call("POST", "/v1/vms/vm2/standby", TOKENS.vm2, { locator: "2001:db8:a::5" });
  t.is(taken.status, 409);
  t.regex(String(taken.json.error), /already claimed by HoA fd00:1::5/);
  t.is((await call("POST", "/v1/vms/vm2/standby", TOKENS.vm2, { locator: "fd00:1::5" })).status, 409);
  for (const l of ["2001:db8:b::5", "2001:db8:a::15", "2001:db8:b::25"]) {
    const s = await standby("vm", TOKENS.vm, l);
    t.is((await call("POST", "/v1/bindings", TOKENS.vm, s.json)).status, 200);
  }
  t.like((await call("GET", "/v1/bindings/fd00:1::5", TOKENS.cn)).json, {
    active: "2001:db8:b::25",
    seq: 4,
    locators: ["2001:db8:b::25", "2001:db8:a::15"],
  });
});

test("an aborted prepare withdraws its standby: gone from the binding, idempotent, never the active one, only by its VM", async (t) => {
  const { call, TOKENS, standby } = await server(t);
  const a = await standby("vm", TOKENS.vm, "2001:db8:a::5");
  t.is((await call("POST", "/v1/bindings", TOKENS.vm, a.json)).status, 200);
  t.is((await standby("vm", TOKENS.vm, "2001:db8:b::5")).status, 200);
  const path = `/v1/vms/vm/standby/${encodeURIComponent("2001:db8:b::5")}`;
  t.is((await call("DELETE", path, TOKENS.vm2)).status, 403, "another VM may not");
  t.is((await call("DELETE", path, TOKENS.cn)).status, 403, "a correspondent may not");
  t.deepEqual((await call("DELETE", path, TOKENS.vm)).json, { withdrawn: true });
  t.deepEqual((await call("DELETE", path, TOKENS.vm)).json, { withdrawn: false }, "idempotent");
  t.like((await call("GET", "/v1/bindings/fd00:1::5", TOKENS.cn)).json, {
    active: "2001:db8:a::5",
    locators: ["2001:db8:a::5"],
  });
  const active = await call("DELETE", `/v1/vms/vm/standby/${encodeURIComponent("2001:db8:a::5")}`, TOKENS.vm);
  t.is(active.status, 409);
  t.regex(String(active.json.error), /active locator/);
  t.is((await call("DELETE", "/v1/vms/vm/standby/not-an-address", TOKENS.vm)).status, 400);
  t.is((await call("DELETE", path, TOKENS.admin)).status, 200, "admins may");
  // The withdrawn standby's pre-signed activation is no longer accepted; a fresh registration makes it valid.
  const again = await standby("vm", TOKENS.vm, "2001:db8:b::5");
  t.is((await call("DELETE", path, TOKENS.vm)).status, 200);
  const late = await call("POST", "/v1/bindings", TOKENS.vm, again.json);
  t.is(late.status, 409);
  t.regex(String(late.json.error), /not a current standby/);
  // Registered again: a new sequence number, and the old activation stays stale.
  const fresh = await standby("vm", TOKENS.vm, "2001:db8:b::5");
  t.true(Number(fresh.json.seq) > Number(again.json.seq));
  const revived = await call("POST", "/v1/bindings", TOKENS.vm, again.json);
  t.is(revived.status, 409);
  t.regex(String(revived.json.error), /stale activation: standby 2001:db8:b::5 .* was issued sequence/);
  t.is((await call("POST", "/v1/bindings", TOKENS.vm, fresh.json)).status, 200);
});

/** The sites document names hosta and hostb: their peer tokens are hosts' tokens. */
async function withHosts(s: Awaited<ReturnType<typeof server>>) {
  return (await s.service.registerPeer("hosta")).token;
}

test("a host relays the guest's activation at the pause; the guest's own copy afterwards is flagged already-active", async (t) => {
  const s = await server(t);
  const { call, TOKENS, standby } = s;
  const host = await withHosts(s);
  const first = await standby("vm", TOKENS.vm, "2001:db8:a::5");
  t.is((await call("POST", "/v1/bindings", TOKENS.vm, first.json)).status, 200);
  const next = await standby("vm", TOKENS.vm, "2001:db8:b::5");
  t.is((await call("POST", "/v1/bindings", host, next.json)).status, 200, "relayed by the source host");
  const late = await call("POST", "/v1/bindings", TOKENS.vm, next.json);
  t.is(late.status, 409, "a replay changes nothing");
  t.regex(String(late.json.error), /replayed or stale/);
  t.is(late.json.code, "already-active", "but its sender learns it is the active binding");
  const older = await call("POST", "/v1/bindings", TOKENS.vm, first.json);
  t.is(older.status, 409);
  t.is(older.json.code, undefined, "an older binding is only stale");
  t.like((await call("GET", "/v1/bindings/fd00:1::5", TOKENS.cn)).json, {
    active: "2001:db8:b::5",
    seq: 2,
    previous: "2001:db8:a::5",
  });
});

test("rollback: a host undoes the relayed activation of a failed move once, to the locator it replaced, and nothing else", async (t) => {
  const s = await server(t);
  const { call, TOKENS, standby } = s;
  const host = await withHosts(s);
  const path = "/v1/vms/vm/rollback";
  const a = await standby("vm", TOKENS.vm, "2001:db8:a::5");
  const firstBinding = a.json as unknown as SignedBinding;
  t.is((await call("POST", "/v1/bindings", TOKENS.vm, firstBinding)).status, 200);
  const first = await call("POST", path, host, firstBinding);
  t.is(first.status, 409, "the first activation replaced nothing");
  t.regex(String(first.json.error), /no previous locator/);

  const b = await standby("vm", TOKENS.vm, "2001:db8:b::5");
  const relayed = b.json as unknown as SignedBinding;
  t.is((await call("POST", "/v1/bindings", host, relayed)).status, 200);
  t.is((await call("POST", path, TOKENS.cn, relayed)).status, 403, "a correspondent may not");
  t.is((await call("POST", path, TOKENS.vm, relayed)).status, 403, "nor the VM");
  const unknownHost = (await s.service.registerPeer("hostz")).token;
  t.is((await call("POST", path, unknownHost, relayed)).status, 403, "nor a peer the sites do not name");
  const bare = await call("POST", path, host, { locator: "2001:db8:b::5", seq: 2 });
  t.is(bare.status, 403, "a host must present the activation itself");
  t.regex(String(bare.json.error), /send that signed binding/);
  const forged = signBinding(intruder.privateKey, { ...relayed, expiresAt: relayed.expiresAt + 1 });
  t.is((await call("POST", path, host, forged)).status, 403, "signed by this server");
  t.is((await call("POST", path, host, firstBinding)).status, 409, "only the active activation");
  t.is((await call("POST", path, host, { ...relayed, sig: undefined })).status, 403);
  t.is((await call("POST", path, host, { ...relayed, seq: undefined })).status, 400);
  t.is((await call("POST", "/v1/vms/vm2/rollback", host, relayed)).status, 403, "another VM's activation");
  t.is((await call("POST", "/v1/vms/nope/rollback", host, relayed)).status, 403);
  t.is((await call("POST", "/v1/vms/nope/rollback", TOKENS.admin, relayed)).status, 404);
  t.like((await call("GET", "/v1/bindings/fd00:1::5", TOKENS.cn)).json, { active: "2001:db8:b::5", seq: 2 });

  const back = await call("POST", path, host, relayed);
  t.is(back.status, 200);
  const binding = back.json as unknown as SignedBinding;
  t.like(binding, { vm: "vm", hoa: "fd00:1::5", locator: "2001:db8:a::5", seq: 3 });
  t.true(signatureValid(keys.publicKey, binding), "signed by the server, like any binding");
  const record = (await call("GET", "/v1/bindings/fd00:1::5", TOKENS.cn)).json;
  t.like(record, { active: "2001:db8:a::5", seq: 3, locators: ["2001:db8:a::5", "2001:db8:b::5"] });
  t.is(record.previous, undefined, "nothing left to roll back to");
  t.is((await call("POST", path, host, binding)).status, 409, "once");
  t.is((await call("POST", path, host, relayed)).status, 409);
  t.is((await call("POST", path, TOKENS.admin, { locator: "2001:db8:b::5", seq: 2 })).status, 409);

  // The guest's own copy of the undone activation (a late datagram's twin) is stale now.
  const late = await call("POST", "/v1/bindings", TOKENS.vm, relayed);
  t.is(late.status, 409);
  t.is(late.json.code, undefined);
  // The guest's abort withdraws the undone standby; its next prepare and move work.
  t.deepEqual(
    (await call("DELETE", `/v1/vms/vm/standby/${encodeURIComponent("2001:db8:b::5")}`, TOKENS.vm)).json,
    { withdrawn: true },
  );
  // (the withdrawal advanced the sequence: 3 was the rollback's, 4 the withdrawal's)
  const again = await standby("vm", TOKENS.vm, "2001:db8:b::5");
  t.like(again.json, { seq: 5 });
  t.is((await call("POST", "/v1/bindings", host, again.json)).status, 200);
  t.like((await call("GET", "/v1/bindings/fd00:1::5", TOKENS.cn)).json, {
    active: "2001:db8:b::5",
    seq: 5,
    previous: "2001:db8:a::5",
  });
  // An admin may roll back too.
  t.like((await call("POST", path, TOKENS.admin, { locator: "2001:db8:b::5", seq: 5 })).json, {
    locator: "2001:db8:a::5",
    seq: 6,
  });
});

test("a withdrawn locator is no rollback target", async (t) => {
  const s = await server(t);
  const { call, TOKENS, standby } = s;
  const host = await withHosts(s);
  let last: unknown;
  for (const l of ["2001:db8:a::5", "2001:db8:b::5"]) {
    last = (await standby("vm", TOKENS.vm, l)).json;
    t.is((await call("POST", "/v1/bindings", TOKENS.vm, last)).status, 200);
  }
  t.is(
    (await call("DELETE", `/v1/vms/vm/standby/${encodeURIComponent("2001:db8:a::5")}`, TOKENS.vm)).status,
    200,
  );
  const r = await call("POST", "/v1/vms/vm/rollback", host, last);
  t.is(r.status, 409);
  t.regex(String(r.json.error), /no previous locator/);
});

test("a whole HTTP/1.1 answer is read: Content-Length, chunked, or refused when it is not one", async (t) => {
  const { parseHttpResponse } = await import("../src/client.js");
  const plain = Buffer.from(
    'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 14\r\n\r\n{"revision":7}',
  );
  t.deepEqual(parseHttpResponse(plain), { status: 200, text: '{"revision":7}', keepAlive: true });
  const chunked = Buffer.from(
    'HTTP/1.1 409 Conflict\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n{"erro\r\n8\r\nr":"no"}\r\n0\r\n\r\n',
  );
  t.deepEqual(parseHttpResponse(chunked), { status: 409, text: '{"error":"no"}', keepAlive: true });
  t.throws(() => parseHttpResponse(Buffer.alloc(0)), { message: /without answering/ });
  t.throws(() => parseHttpResponse(Buffer.from("SSH-2.0-OpenSSH\r\n\r\n")), {
    message: /not an HTTP answer/,
  });
  t.throws(() => parseHttpResponse(Buffer.from("HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{}")), {
    message: /cut short/,
  });
  const untilClose = Buffer.from("HTTP/1.1 200 OK\r\n\r\n{}");
  t.throws(() => parseHttpResponse(untilClose, false), { message: /not ended yet/ });
  t.deepEqual(parseHttpResponse(untilClose, true), { status: 200, text: "{}", keepAlive: false });
  t.throws(
    () => parseHttpResponse(Buffer.from("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\n{}")),
    {
      message: /cut short/,
    },
  );
  // Open, a chunked answer ends at the empty line after its last chunk; closed, the last chunk will do.
  const lastChunk = chunked.subarray(0, chunked.length - 2);
  t.throws(() => parseHttpResponse(lastChunk, false), { message: /cut short/ });
  t.like(parseHttpResponse(lastChunk, true), { text: '{"error":"no"}', keepAlive: false });
  // Whether the connection may carry the next request: not when the answer says close, is HTTP/1.0, or is
  // followed by bytes nobody asked for.
  const sized = (head: string, after = "") => Buffer.from(`${head}\r\nContent-Length: 2\r\n\r\n{}${after}`);
  t.false(parseHttpResponse(sized("HTTP/1.1 200 OK\r\nConnection: close")).keepAlive);
  t.false(parseHttpResponse(sized("HTTP/1.0 200 OK")).keepAlive);
  t.false(parseHttpResponse(sized("HTTP/1.1 200 OK", "HTTP/1.1")).keepAlive);
  t.true(parseHttpResponse(sized("HTTP/1.1 200 OK\r\nConnection: keep-alive")).keepAlive);
});

test("a malformed percent-escape in a route is the client's error (400), never the server's (500)", async (t) => {
  const { call, TOKENS } = await server(t);
  for (const [method, path, token] of [
    ["GET", "/v1/vms/%zz", TOKENS.admin],
    ["POST", "/v1/vms/%E0%A4%A/standby", TOKENS.vm],
    ["DELETE", "/v1/vms/vm/standby/%", TOKENS.vm],
    ["GET", "/v1/bindings/%G1", TOKENS.cn],
  ] as const) {
    const r = await call(method, path, token, method === "POST" ? { locator: "fd00:2::5" } : undefined);
    t.is(r.status, 400, `${method} ${path}: ${JSON.stringify(r.json)}`);
    t.regex(String(r.json.error), /malformed percent-escape/);
  }
});

test("a VM claims only locators that can be its own: each kind of other address is refused with its reason", async (t) => {
  const { call, TOKENS, service } = await server(t);
  const claim = (locator: string) => call("POST", "/v1/vms/vm/standby", TOKENS.vm, { locator });
  const cases: Array<[string, number, RegExp]> = [
    ["::", 403, /unspecified/],
    ["::1", 403, /loopback/],
    ["ff02::1", 403, /multicast/],
    ["ff05::1:3", 403, /multicast/],
    ["fe80::5", 400, /link-local/],
    ["::ffff:c000:201", 403, /IPv4-mapped/],
    ["::c000:201", 403, /IPv4-compatible/],
    ["2001:db8:99::1", 403, /no registered site's prefix/],
    ["2001:db8:a::", 403, /subnet-router anycast/],
    ["2001:db8:a::fdff:ffff:ffff:ff80", 403, /reserved subnet anycast/],
    ["2001:db8:a::100", 403, /host hosta's address/],
    ["2001:db8:a::1", 403, /site a's gateway's address/],
    ["2001:db8:a::7360", 403, /control server's own address/],
    // vm2's future MoA in site a: the SLAAC address its MAC makes there.
    ["2001:db8:a:0:216:3eff:fe00:6", 403, /MAC of VM vm2 .* reserved for that VM/],
    ["fd00:1::6", 409, /already claimed by HoA fd00:1::6/],
    ["fd00:1::5", 400, /must differ from the HoA/],
    ["2001:db8:c::5", 403, /site c takes only locators derived from the VM's registered MACs/],
    ["not-an-address", 400, /locator/],
  ];
  for (const [locator, status, reason] of cases) {
    const r = await claim(locator);
    t.is(r.status, status, `${locator}: ${JSON.stringify(r.json)}`);
    t.regex(String(r.json.error), reason, locator);
  }
  // Its own EUI-64 address is proven by its MAC, in a site that requires it too.
  t.like((await claim("2001:db8:c:0:216:3eff:fe00:5")).json, { locator: "2001:db8:c:0:216:3eff:fe00:5" });
  t.like((await service.binding("fd00:1::5")).standbys, [
    { locator: "2001:db8:c:0:216:3eff:fe00:5", proven: true },
  ]);
  // Nothing refused left a trace.
  t.is((await service.binding("fd00:1::5")).standbys.length, 1);
  // No sites, no locators.
  const bare = await server(t, { sites: false });
  const none = await bare.call("POST", "/v1/vms/vm/standby", bare.TOKENS.vm, { locator: "2001:db8:a::5" });
  t.is(none.status, 409);
  t.regex(String(none.json.error), /no sites registered yet/);
});

test("an unproven standby is not published and waits: a host's attestation publishes it and activates what the VM asked", async (t) => {
  const s = await server(t);
  const { call, TOKENS } = s;
  const host = await withHosts(s);
  const reg = await call("POST", "/v1/vms/vm/standby", TOKENS.vm, { locator: "2001:db8:b::77" });
  t.is(reg.status, 200);
  const record = async () => (await call("GET", "/v1/bindings/fd00:1::5", TOKENS.cn)).json;
  t.like(await record(), { locators: [], standbys: [{ locator: "2001:db8:b::77", proven: false }] });
  const early = await call("POST", "/v1/bindings", TOKENS.vm, reg.json);
  t.is(early.status, 409);
  t.is(early.json.code, "awaiting-proof");
  t.regex(String(early.json.error), /not proven to be vm's yet/);
  const attest = "/v1/vms/vm/attest";
  t.is(
    (await call("POST", attest, TOKENS.vm, { locator: "2001:db8:b::77" })).status,
    403,
    "not the VM itself",
  );
  t.is(
    (await call("POST", attest, TOKENS.cn, { locator: "2001:db8:b::77" })).status,
    403,
    "not a correspondent",
  );
  t.is(
    (await call("POST", attest, host, { locator: "2001:db8:b::78" })).status,
    404,
    "only a registered standby",
  );
  const ok = await call("POST", attest, host, { locator: "2001:db8:b::77" });
  t.like(ok.json, { attested: true, activated: true, seq: Number(reg.json.seq) });
  t.like(await record(), {
    active: "2001:db8:b::77",
    seq: Number(reg.json.seq),
    locators: ["2001:db8:b::77"],
  });
  t.like(
    (await call("POST", attest, host, { locator: "2001:db8:b::77" })).json,
    { attested: false },
    "idempotent",
  );
  // One not asked for is only published.
  const next = await call("POST", "/v1/vms/vm/standby", TOKENS.vm, { locator: "2001:db8:a::78" });
  t.like((await call("POST", attest, TOKENS.admin, { locator: "2001:db8:a::78" })).json, {
    attested: true,
    activated: false,
  });
  t.like(await record(), { active: "2001:db8:b::77", locators: ["2001:db8:b::77", "2001:db8:a::78"] });
  t.is((await call("POST", "/v1/bindings", TOKENS.vm, next.json)).status, 200);
});

test("standbys per VM are capped: registering past the cap drops the oldest, whose activation is then stale", async (t) => {
  const { call, TOKENS, standby, service } = await server(t);
  const { MAX_STANDBYS } = await import("../src/service.js");
  const made = [];
  for (let i = 1; i <= MAX_STANDBYS + 2; i++)
    made.push((await standby("vm", TOKENS.vm, `2001:db8:b::${i}`)).json);
  const b = await service.binding("fd00:1::5");
  t.is(b.standbys.length, MAX_STANDBYS);
  t.is(b.locators.length, MAX_STANDBYS);
  t.false(b.locators.includes("2001:db8:b::1"));
  const old = await call("POST", "/v1/bindings", TOKENS.vm, made[0]);
  t.is(old.status, 409);
  t.regex(String(old.json.error), /not a current standby/);
  t.is((await call("POST", "/v1/bindings", TOKENS.vm, made.at(-1))).status, 200);
});

test("an admin resets a hijacked HoA: every standby goes, every earlier activation is stale, the HoA is bound anew", async (t) => {
  const { call, TOKENS, standby } = await server(t);
  const a = await standby("vm", TOKENS.vm, "2001:db8:a::5");
  t.is((await call("POST", "/v1/bindings", TOKENS.vm, a.json)).status, 200);
  const pending = await standby("vm", TOKENS.vm, "2001:db8:b::5");
  t.is((await call("POST", "/v1/vms/vm/reset", TOKENS.vm, {})).status, 403, "not the VM");
  t.is((await call("POST", "/v1/vms/vm/reset", TOKENS.cn, {})).status, 403);
  const reset = await call("POST", "/v1/vms/vm/reset", TOKENS.admin, {});
  t.is(reset.status, 200);
  t.like(reset.json.binding, { active: undefined, locators: [], standbys: [] });
  t.true(Number((reset.json.binding as { seq: number }).seq) > Number(pending.json.seq));
  for (const old of [a.json, pending.json]) {
    const r = await call("POST", "/v1/bindings", TOKENS.vm, old);
    t.is(r.status, 409);
    t.regex(String(r.json.error), /replayed or stale|not a current standby/);
  }
  // Bound to a locator an admin names (its word is the proof), with a fresh signed binding.
  const to = await call("POST", "/v1/vms/vm/reset", TOKENS.admin, { to: "2001:db8:b::99" });
  t.like(to.json.binding, { active: "2001:db8:b::99", locators: ["2001:db8:b::99"] });
  t.like(to.json.activation, { locator: "2001:db8:b::99" });
  t.is((await call("POST", "/v1/vms/vm/reset", TOKENS.admin, { to: "ff02::1" })).status, 403);
  t.is((await call("POST", "/v1/vms/nope/reset", TOKENS.admin, {})).status, 404);
  // The VM moves on from there as usual.
  const next = await standby("vm", TOKENS.vm, "2001:db8:a::6");
  t.is((await call("POST", "/v1/bindings", TOKENS.vm, next.json)).status, 200);
});

test("each token's requests and long polls are bounded (429 with Retry-After), admins are not", async (t) => {
  const { call, TOKENS } = await server(t);
  const statuses: number[] = [];
  for (let i = 0; i < 40; i++) statuses.push((await call("GET", "/v1/vms/vm", TOKENS.vm)).status);
  t.true(statuses.includes(429), "a VM's token is rate limited");
  t.is(statuses.filter((x) => x === 200).length >= 20, true, "after its burst");
  t.is((await call("GET", "/v1/vms/vm2", TOKENS.vm2)).status, 200, "per token, not for everyone");
  for (let i = 0; i < 40; i++) t.is((await call("GET", "/v1/vms", TOKENS.admin)).status, 200);
  const polls = [1, 2, 3, 4].map(() => call("GET", "/v1/bindings?since=999&wait=2000", TOKENS.cn));
  await new Promise((r) => setTimeout(r, 150));
  const fifth = await call("GET", "/v1/bindings?since=999&wait=2000", TOKENS.cn);
  t.is(fifth.status, 429);
  t.regex(String(fifth.json.error), /long polls open already/);
  t.is(
    (await call("GET", "/v1/bindings?since=999", TOKENS.cn)).status,
    200,
    "a poll that does not wait is fine",
  );
  for (const p of await Promise.all(polls)) t.is(p.status, 200);
  t.is((await call("GET", "/v1/bindings?since=999&wait=10", TOKENS.cn)).status, 200, "freed once answered");
});

test("a long poll whose watcher hangs up frees its slot at once, not when its wait ends", async (t) => {
  const { call, TOKENS, base } = await server(t);
  const hangUps = [1, 2, 3, 4].map(() => new AbortController());
  const polls = hangUps.map((c) =>
    fetch(`${base}/v1/bindings?since=999&wait=20000`, {
      headers: { authorization: `Bearer ${TOKENS.cn}` },
      signal: c.signal,
    }).catch(() => undefined),
  );
  await new Promise((r) => setTimeout(r, 150));
  t.is((await call("GET", "/v1/bindings?since=999&wait=10", TOKENS.cn)).status, 429, "four open: the limit");
  for (const c of hangUps) c.abort();
  await Promise.all(polls);
  await new Promise((r) => setTimeout(r, 100));
  const started = Date.now();
  t.is((await call("GET", "/v1/bindings?since=999&wait=10", TOKENS.cn)).status, 200, "their slots are free");
  t.true(Date.now() - started < 2000);
});

test("review fixes: proof survives re-registration, the first claim of a locator wins, expired and re-homed claims are not activated, malformed bindings are a 400", async (t) => {
  const s = await server(t);
  const { call, TOKENS, service, standby } = s;
  const host = await withHosts(s);
  // Proven once stays proven: the guest takes its previous (privacy) locator back after a failed move.
  const a = await standby("vm", TOKENS.vm, "2001:db8:a::51");
  t.is((await call("POST", "/v1/bindings", TOKENS.vm, a.json)).status, 200);
  const again = await call("POST", "/v1/vms/vm/standby", TOKENS.vm, { locator: "2001:db8:a::51" });
  t.like((await service.binding("fd00:1::5")).standbys, [{ locator: "2001:db8:a::51", proven: true }]);
  t.is((await call("POST", "/v1/bindings", TOKENS.vm, again.json)).status, 200, "no proof to wait for");
  // Two VMs claim one privacy address (one saw the other's DAD on a shared staging bridge): the first wins.
  await call("POST", "/v1/vms/vm2/standby", TOKENS.vm2, { locator: "2001:db8:b::99" });
  await call("POST", "/v1/vms/vm/standby", TOKENS.vm, { locator: "2001:db8:b::99" });
  const late = await call("POST", "/v1/vms/vm/attest", host, { locator: "2001:db8:b::99" });
  t.is(late.status, 409);
  t.regex(String(late.json.error), /registered first by HoA fd00:1::6/);
  t.like((await call("POST", "/v1/vms/vm2/attest", host, { locator: "2001:db8:b::99" })).json, {
    attested: true,
  });
  // A malformed binding is the client's error.
  const bad = await call("POST", "/v1/bindings", TOKENS.vm, { ...(again.json as object), kid: "x" });
  t.is(bad.status, 400);
  t.regex(String(bad.json.error), /malformed binding: "kid"/);
  t.is(
    (await call("POST", "/v1/bindings", TOKENS.vm, { ...(again.json as object), vm: "v\ud800" })).status,
    400,
  );
  // A HoA that is special is refused at registration.
  t.is((await call("POST", "/v1/vms", TOKENS.admin, { name: "m", hoa: "ff02::1" })).status, 400);
});

test("review fixes: an activation asked for long ago is not applied by a late attestation; a locator that became a HoA is not attested", async (t) => {
  let now = Date.now();
  const service = new ControlService({
    store: new MemoryStore(),
    ...keys,
    adminTokens: [ADMIN],
    now: () => now,
  });
  await service.putSites(SITES);
  await service.registerVm("vm", "fd00:1::5", [VM_MAC]);
  const act = await service.registerStandby("vm", "2001:db8:b::44");
  t.like(await service.activate(act), { ok: false, awaitingProof: true });
  now += 11 * 60_000; // past the activation's 10 min
  t.like(await service.attest("vm", "2001:db8:b::44"), { attested: true, activated: false });
  t.is((await service.binding("fd00:1::5")).active, undefined);
  await service.registerStandby("vm", "2001:db8:b::45");
  await service.registerVm("other", "2001:db8:b::45");
  await t.throwsAsync(service.attest("vm", "2001:db8:b::45"), {
    message: /already claimed by HoA 2001:db8:b::45/,
  });
});

/** A server with some of its limits changed, and a way to open raw connections to it. */
async function limitedServer(t: ExecutionContext, limits: Record<string, number>) {
  const service = new ControlService({ store: new MemoryStore(), ...keys, adminTokens: [ADMIN] });
  const { DEFAULT_LIMITS } = await import("../src/http.js");
  const srv = createControlServer(service, exportPublicKey(keys.publicKey), () => {}, {
    ...DEFAULT_LIMITS,
    ...limits,
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", () => r()));
  t.teardown(() => {
    srv.closeAllConnections();
    srv.close();
  });
  const port = (srv.address() as AddressInfo).port;
  const open = () =>
    new Promise<Socket>((resolve) => {
      const s = connect(port, "127.0.0.1", () => resolve(s));
      s.on("error", () => {});
    });
  return { open, port };
}

test("review fixes: connections are capped per source address before any token", async (t) => {
  const { open, port } = await limitedServer(t, { connectionsPerSource: 3 });
  const idle = await Promise.all([open(), open(), open()]);
  const fourth = await open();
  const closed = await new Promise<boolean>((r) => {
    fourth.once("close", () => r(true));
    setTimeout(() => r(false), 1000);
  });
  t.true(closed, "the fourth idle connection from one address is cut");
  for (const s of idle) s.destroy();
  await new Promise((r) => setTimeout(r, 100));
  const res = await fetch(`http://127.0.0.1:${port}/v1/health`);
  t.is(res.status, 200, "once they are gone, it is served again");
});

/** Writes `request` on `socket` and reads one whole answer from it (the connection left open). */
async function roundTrip(
  socket: Socket,
  request: string,
): Promise<{ head: string; text: string; keepAlive: boolean }> {
  const { parseHttpResponse } = await import("../src/client.js");
  return new Promise((resolve, reject) => {
    let raw = Buffer.alloc(0);
    const data = (c: Buffer) => {
      raw = Buffer.concat([raw, c]);
      try {
        const { text, keepAlive } = parseHttpResponse(raw, false);
        socket.off("data", data);
        resolve({ head: raw.subarray(0, raw.indexOf("\r\n\r\n")).toString(), text, keepAlive });
      } catch {
        /* not whole yet */
      }
    };
    socket.on("data", data);
    socket.once("close", () => reject(new Error("closed")));
    socket.write(request);
  });
}

test("a kept connection: answers are sized, and long polls longer than the keep-alive timeout are answered on it", async (t) => {
  const service = new ControlService({ store: new MemoryStore(), ...keys, adminTokens: [ADMIN] });
  const srv = createControlServer(service, exportPublicKey(keys.publicKey));
  t.is(srv.keepAliveTimeout, 5000);
  // The idle and request timers as short as they go: neither runs while a poll waits for its answer.
  srv.keepAliveTimeout = 100;
  srv.headersTimeout = 200;
  srv.requestTimeout = 300;
  let connections = 0;
  srv.on("connection", () => (connections += 1));
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", () => r()));
  t.teardown(() => {
    srv.closeAllConnections();
    srv.close();
  });
  const socket = connect((srv.address() as AddressInfo).port, "127.0.0.1");
  t.teardown(() => socket.destroy());
  // Past the keep-alive and request timeouts, and a check of them (every second), then the next at once.
  for (const wait of [1500, 0]) {
    const answer = await roundTrip(
      socket,
      `GET /v1/bindings?since=0&wait=${wait} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${ADMIN}\r\n\r\n`,
    );
    t.regex(answer.head, /\r\ncontent-length: 27\r\n/i);
    t.notRegex(answer.head, /transfer-encoding/i);
    t.deepEqual(JSON.parse(answer.text), { revision: 0, changes: [] });
    t.true(answer.keepAlive);
  }
  const key = await roundTrip(socket, "GET /v1/public-key HTTP/1.1\r\nHost: x\r\n\r\n");
  t.regex(key.head, /\r\ncontent-type: application\/x-pem-file\r\ncontent-length: \d+\r\n/i);
  t.regex(key.text, /^-----BEGIN PUBLIC KEY-----\n[\s\S]*-----END PUBLIC KEY-----\n$/);
  t.is(connections, 1);
});

test("three quarters of the connections taken: those kept idle between requests are closed, new ones are not", async (t) => {
  const { open } = await limitedServer(t, { maxConnections: 8 });
  const kept = await Promise.all([open(), open(), open(), open()]);
  for (const s of kept) await roundTrip(s, "GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n");
  const fresh = [await open(), await open()];
  await new Promise((r) => setTimeout(r, 100));
  t.deepEqual(
    [...kept, ...fresh].map((s) => s.closed),
    [false, false, false, false, false, false],
  );
  fresh.push(await open());
  await new Promise((r) => setTimeout(r, 100));
  t.deepEqual(
    kept.map((s) => s.closed),
    [true, true, true, true],
    "the seventh of eight closes the idle ones",
  );
  t.deepEqual(
    fresh.map((s) => s.closed),
    [false, false, false],
    "connections yet to ask stay",
  );
  for (const s of fresh)
    t.like(await roundTrip(s, "GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n"), { keepAlive: true });
  for (const s of fresh) s.destroy();
});

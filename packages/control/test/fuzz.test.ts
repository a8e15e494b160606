// Property-based fuzzing (issue 12 item 6) of what strangers send the mobility layer: binding datagrams
// (to a correspondent's UDP port, to the server's POST /v1/bindings) and the control HTTP API itself (random
// methods, paths, headers and bodies). Properties: a forgery is never taken, nothing throws, every answer
// to a malformed request is a 4xx (never a 500), and the server answers normally afterwards. Fixed seeds in
// CI; XENROAM_FUZZ_RUNS=N and XENROAM_FUZZ_SEED=S for a longer run.
import { request } from "node:http";
import type { AddressInfo } from "node:net";
import test from "ava";
import fc from "fast-check";
import {
  BindingBook,
  ControlService,
  createControlServer,
  exportPublicKey,
  generateSigningKeys,
  MemoryStore,
  type SignedBinding,
  signBinding,
} from "../src/index.js";

const RUNS = Number(process.env.XENROAM_FUZZ_RUNS ?? 2000);
const SEED = Number(process.env.XENROAM_FUZZ_SEED ?? 1212);
const keys = generateSigningKeys();
const NOW = 1_800_000_000_000;
const HOA = "fd00:1::5";
const LOCATOR = "2001:db8:b:0:216:3eff:fe00:2";

const genuine = signBinding(keys.privateKey, {
  vm: "vm",
  hoa: HOA,
  locator: LOCATOR,
  seq: 4,
  expiresAt: NOW + 60_000,
});

/** A value of any JSON type, with a bias to near-misses of each field. */
const field = fc.oneof(
  fc.jsonValue({ maxDepth: 2 }),
  fc.constantFrom(
    "",
    "::",
    "FD00:1::5",
    "fd00:1:0:0:0:0:0:5",
    "2001:db8:b::2",
    4,
    5,
    3,
    "4",
    4.5,
    -4,
    2 ** 53,
    NOW + 60_000,
    genuine.sig.toUpperCase(),
    `${genuine.sig.slice(0, -1)}B`,
    `${genuine.sig}=`,
    genuine.kid.toLowerCase(),
    null,
  ),
);

const datagram = fc.oneof(
  fc.anything(),
  fc
    .tuple(fc.constantFrom("vm", "hoa", "locator", "seq", "expiresAt", "kid", "sig", "extra"), field)
    .map(([k, v]) => ({ ...genuine, [k]: v })),
  fc
    .tuple(fc.constantFrom("vm", "hoa", "locator", "seq", "expiresAt", "kid", "sig"))
    .map(([k]) => Object.fromEntries(Object.entries(genuine).filter(([x]) => x !== k))),
);

test(`binding datagrams: nothing throws, and only the genuine binding (any textual form of it) is taken (seed ${SEED})`, (t) => {
  const book = () =>
    new BindingBook(
      keys.publicKey,
      (hoa) => (hoa === HOA ? "vm" : undefined),
      () => NOW,
      (hoa, locator) => (hoa === HOA && locator === LOCATOR ? 4 : undefined),
    );
  fc.assert(
    fc.property(datagram, (d) => {
      const v = book().accept(d as SignedBinding);
      if (!v.ok) return typeof v.reason === "string";
      // Taken: it must be the genuine claim (addresses may be written another way), its very signature.
      const o = d as SignedBinding;
      return (
        o.vm === "vm" &&
        o.seq === 4 &&
        o.expiresAt === genuine.expiresAt &&
        o.sig === genuine.sig &&
        o.kid === genuine.kid
      );
    }),
    { numRuns: RUNS, seed: SEED },
  );
  t.deepEqual(book().accept(genuine), { ok: true });
});

async function server() {
  const service = new ControlService({
    store: new MemoryStore(),
    ...keys,
    adminTokens: ["adm-secret-token"],
  });
  await service.putSites({
    sites: [
      { name: "b", prefix: "2001:db8:b::/64", gateway: { linkLocal: "fe80::b:1", mac: "02:00:00:00:0b:01" } },
    ],
    hosts: [{ name: "hostb", site: "b" }],
  });
  const vm = (await service.registerVm("vm", HOA, ["00:16:3e:00:00:02"])).token;
  const peer = (await service.registerPeer("hostb")).token;
  const srv = createControlServer(service, exportPublicKey(keys.publicKey), () => {}, {
    vmRate: 1e6,
    vmBurst: 1e6,
    peerRate: 1e6,
    peerBurst: 1e6,
    pollsPerToken: 4,
    maxConnections: 4096,
    connectionsPerSource: 64,
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", () => r()));
  return { srv, port: (srv.address() as AddressInfo).port, tokens: ["adm-secret-token", vm, peer, "nope"] };
}

function send(
  port: number,
  method: string,
  path: string,
  headers: Record<string, string>,
  body: Buffer | undefined,
): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, method, path, headers, timeout: 5000 }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
    });
    req.on("timeout", () => req.destroy(new Error(`no answer to ${method} ${path}`)));
    req.on("error", reject);
    req.end(body);
  });
}

const segment = fc.oneof(
  fc.constantFrom(
    "v1",
    "vms",
    "vm",
    "standby",
    "attest",
    "reset",
    "rollback",
    "bindings",
    "sites",
    "peers",
    "health",
  ),
  fc.constantFrom(
    "%",
    "%zz",
    "%E0%A4%A",
    "%00",
    "..",
    ".",
    "",
    "fd00:1::5",
    encodeURIComponent(LOCATOR),
    "%2F",
  ),
  fc.string({ maxLength: 12 }).map((s) => encodeURIComponent(s)),
);
const path = fc.oneof(
  fc.array(segment, { minLength: 1, maxLength: 6 }).map((p) => `/${p.join("/")}`),
  fc
    .tuple(
      fc.array(segment, { maxLength: 4 }),
      fc.constantFrom("?since=0", "?since=-1&wait=x", "?since=1e3", "?wait=99999999"),
    )
    .map(([p, q]) => `/v1/bindings${p.length ? `/${p.join("/")}` : ""}${q}`),
);

test(`the control HTTP API: random methods, paths, headers and bodies get an answer, never a 500 (seed ${SEED})`, async (t) => {
  const { srv, port, tokens } = await server();
  t.teardown(() => new Promise<void>((r) => srv.close(() => r())));
  const req = fc.record({
    method: fc.constantFrom("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"),
    path,
    // Mostly a real token (admin, VM, host, unknown): past authentication is where the routes are.
    token: fc.oneof(
      { weight: 6, arbitrary: fc.constantFrom(...tokens) },
      { weight: 1, arbitrary: fc.string({ maxLength: 40 }) },
      { weight: 1, arbitrary: fc.constant(undefined) },
    ),
    contentType: fc.option(
      fc.constantFrom("application/json", "text/plain", "application/x-www-form-urlencoded"),
      { nil: undefined },
    ),
    body: fc.option(
      fc.oneof(
        fc.jsonValue({ maxDepth: 3 }).map((v) => Buffer.from(JSON.stringify(v) ?? "null")),
        fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b)),
        fc
          .record({ locator: field, to: field, seq: field, name: field, hoa: field, macs: field })
          .map((o) => Buffer.from(JSON.stringify(o))),
        fc.constant(Buffer.from(JSON.stringify(genuine))),
      ),
      { nil: undefined },
    ),
  });
  const samples = fc.sample(req, { numRuns: Math.min(RUNS, 600), seed: SEED });
  const statuses = new Map<number, number>();
  for (const r of samples) {
    const headers: Record<string, string> = {};
    // A token with characters no header may carry is the client library's refusal, not the server's.
    if (r.token !== undefined && /^[\x21-\x7e]*$/.test(r.token)) headers.authorization = `Bearer ${r.token}`;
    if (r.contentType) headers["content-type"] = r.contentType;
    const status = await send(
      port,
      r.method,
      r.path,
      headers,
      r.method === "GET" || r.method === "HEAD" ? undefined : r.body,
    );
    statuses.set(status, (statuses.get(status) ?? 0) + 1);
    if (status >= 500 || status < 200) t.fail(`${r.method} ${r.path}: ${status}`);
  }
  t.log(
    `answers: ${[...statuses]
      .sort()
      .map(([s, n]) => `${s}×${n}`)
      .join(" ")}`,
  );
  t.is(await send(port, "GET", "/v1/health", {}, undefined), 200, "and it still answers");
});

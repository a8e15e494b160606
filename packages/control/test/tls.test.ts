// The control API over TLS with a CA made by openssl: clients that pin the CA are answered (calls, a watch,
// an activation rendered ahead); a certificate from another CA, for another address, or checked against the
// system's CAs is refused; bad certificate and key files are named with the reason.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { Agent, request } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test, { type ExecutionContext } from "ava";
import {
  ControlClient,
  ControlService,
  createControlServer,
  exportPublicKey,
  generateSigningKeys,
  MemoryStore,
} from "../src/index.js";
import { DEFAULT_LIMITS } from "../src/http.js";
import { loadTlsCredentials } from "../src/tls.js";
import { makePki, type Pki } from "./pki.js";

const ADMIN = "admin-secret-0123456";

function tempDir(t: ExecutionContext): string {
  const dir = mkdtempSync(join(tmpdir(), "xr-tls-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function serveTls(t: ExecutionContext, pki: Pki, host = "::1") {
  const keys = generateSigningKeys();
  const service = new ControlService({ store: new MemoryStore(), ...keys, adminTokens: [ADMIN] });
  const server = createControlServer(
    service,
    exportPublicKey(keys.publicKey),
    () => {},
    DEFAULT_LIMITS,
    loadTlsCredentials(pki.cert, pki.key),
  );
  await new Promise<void>((r) => server.listen(0, host, () => r()));
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  const port = (server.address() as AddressInfo).port;
  return { service, server, port, url: `https://${host.includes(":") ? `[${host}]` : host}:${port}` };
}

test("over TLS, clients that pin the CA are answered: calls, the watch, an activation rendered ahead", async (t) => {
  const dir = tempDir(t);
  const pki = makePki(dir, ["::1"]);
  const { service, url } = await serveTls(t, pki);
  const ca = readFileSync(pki.ca, "utf8");
  const admin = new ControlClient(url, { token: ADMIN, ca });
  t.like(await admin.health(), { ok: true });
  const { token } = await admin.registerVm("vm", "2001:db8:f::5", ["00:16:3e:00:00:05"]);
  const { token: cnToken } = await admin.registerPeer("cn");
  const vm = new ControlClient(url, { token, ca });
  const cn = new ControlClient(url, { token: cnToken, ca });
  await service.putSites({
    sites: [
      { name: "a", prefix: "2001:db8:a::/64", gateway: { linkLocal: "fe80::1", mac: "02:00:00:00:0a:01" } },
    ],
    hosts: [{ name: "hosta", site: "a" }],
  });
  const { revision } = await cn.changes(0, 0);
  const watching = cn.changes(revision, 5000);
  // Its interface identifier derives from the registered MAC (00:16:3e:00:00:05): the VM may hold it.
  const activation = await vm.registerStandby("vm", "2001:db8:a:0:216:3eff:fe00:5");
  t.true((await watching).revision > revision, "the long poll answered over the same TLS server");
  const sent = vm.prepareActivate(activation);
  t.true((await sent()).revision > revision, "the request rendered ahead went over TLS and was taken");
  t.like(await cn.binding("2001:db8:f::5"), { active: "2001:db8:a:0:216:3eff:fe00:5" });
});

test("answers keep the TLS connection open while the server listens, and close it once shutdown began", async (t) => {
  const dir = tempDir(t);
  const pki = makePki(dir, ["::1"]);
  const { service, server, port } = await serveTls(t, pki);
  const { token } = await service.registerPeer("cn");
  const agent = new Agent({ keepAlive: true, ca: readFileSync(pki.ca, "utf8") });
  t.teardown(() => agent.destroy());
  const get = (path: string) =>
    new Promise<{ status: number; connection: string | undefined }>((resolve, reject) => {
      const req = request(
        { host: "::1", port, path, agent, headers: { authorization: `Bearer ${token}` } },
        (res) => {
          res.resume();
          res.on("end", () => resolve({ status: res.statusCode ?? 0, connection: res.headers.connection }));
        },
      );
      req.on("error", reject);
      req.end();
    });
  t.deepEqual(await get("/v1/health"), { status: 200, connection: "keep-alive" });
  const polling = get("/v1/bindings?since=0&wait=20000");
  await new Promise((r) => setTimeout(r, 200));
  server.close();
  service.wakeWatchers();
  t.deepEqual(await polling, { status: 200, connection: "close" });
});

test("the TLS server has the API server's limits: connections, header, request and keep-alive timeouts", (t) => {
  const dir = tempDir(t);
  const pki = makePki(dir, ["::1"]);
  const keys = generateSigningKeys();
  const service = new ControlService({ store: new MemoryStore(), ...keys, adminTokens: [ADMIN] });
  const limits = { ...DEFAULT_LIMITS, maxConnections: 7 };
  const secure = createControlServer(
    service,
    exportPublicKey(keys.publicKey),
    () => {},
    limits,
    loadTlsCredentials(pki.cert, pki.key),
  );
  t.like(secure, {
    maxConnections: 7,
    headersTimeout: 10_000,
    requestTimeout: 45_000,
    keepAliveTimeout: 5000,
  });
});

test("a client refuses a certificate from another CA, for another address, or checked against the system's CAs", async (t) => {
  const dir = tempDir(t);
  const pki = makePki(dir, ["::1"]);
  const other = makePki(dir, ["::1"], "other");
  const { url } = await serveTls(t, pki);
  const binding = {
    vm: "vm",
    hoa: "2001:db8:f::5",
    locator: "2001:db8:a::5",
    seq: 1,
    expiresAt: 0,
    sig: "x",
  };
  const refused = async (client: ControlClient, why: RegExp) => {
    await t.throwsAsync(client.health(), { message: why });
    await t.throwsAsync(client.prepareActivate(binding as never)(), { message: why });
  };
  await refused(
    new ControlClient(url, { ca: readFileSync(other.ca, "utf8") }),
    /^control server https:\/\/\[::1\]:\d+: .*: its certificate is not trusted: .* \(checked against the CA given\)$/,
  );
  await refused(
    new ControlClient(url),
    /its certificate is not trusted: .*\(checked against the system's CAs \(give the server's CA\)\)$/,
  );
  // The same certificate on a server at an address it does not name.
  const elsewhere = await serveTls(t, pki, "127.0.0.1");
  await refused(
    new ControlClient(elsewhere.url, { ca: readFileSync(pki.ca, "utf8") }),
    /its certificate is for another name: .*127\.0\.0\.1/,
  );
});

test("a client told the wrong scheme says so: https:// to a plain server, http:// to a TLS one", async (t) => {
  const dir = tempDir(t);
  const pki = makePki(dir, ["::1"]);
  const { port } = await serveTls(t, pki);
  await t.throwsAsync(new ControlClient(`http://[::1]:${port}`).health(), {
    message:
      /GET \/v1\/health: the server closed the connection without answering \(if it serves https:\/\/, use an https:\/\/ URL\)$/,
  });
  const keys = generateSigningKeys();
  const service = new ControlService({ store: new MemoryStore(), ...keys, adminTokens: [ADMIN] });
  const plain = createControlServer(service, exportPublicKey(keys.publicKey));
  await new Promise<void>((r) => plain.listen(0, "::1", () => r()));
  t.teardown(() => void plain.close());
  const url = `https://[::1]:${(plain.address() as AddressInfo).port}`;
  await t.throwsAsync(new ControlClient(url, { ca: readFileSync(pki.ca, "utf8") }).health(), {
    message: /GET \/v1\/health: it does not answer in TLS; if it serves plain HTTP, use an http:\/\/ URL$/,
  });
});

test("a CA is for https:// only, and must be a PEM certificate", (t) => {
  const dir = tempDir(t);
  const pki = makePki(dir, ["::1"]);
  const ca = readFileSync(pki.ca, "utf8");
  t.throws(() => new ControlClient("http://[::1]:7360", { ca }), {
    message: /a CA certificate was given, but the server is reached over plain http:\/\/; use https:\/\//,
  });
  t.throws(() => new ControlClient("https://[::1]:7360", { ca: "not a certificate" }), {
    message: /holds no PEM certificate/,
  });
  t.notThrows(() => new ControlClient("https://[::1]:7360", { ca }));
});

test("certificate and key files: missing, not PEM, or a key that is not the certificate's are named", (t) => {
  const dir = tempDir(t);
  const pki = makePki(dir, ["::1"]);
  const other = makePki(dir, ["::1"], "other");
  t.notThrows(() => loadTlsCredentials(pki.cert, pki.key));
  t.throws(() => loadTlsCredentials(join(dir, "nope.pem"), pki.key), {
    message: `--tls-cert ${join(dir, "nope.pem")} does not exist`,
  });
  t.throws(() => loadTlsCredentials(pki.cert, join(dir, "nope.key")), {
    message: /--tls-key .* does not exist/,
  });
  writeFileSync(join(dir, "junk.pem"), "hello\n");
  t.throws(() => loadTlsCredentials(join(dir, "junk.pem"), pki.key), {
    message: /^--tls-cert .*junk\.pem is not a PEM certificate: /,
  });
  t.throws(() => loadTlsCredentials(pki.cert, join(dir, "junk.pem")), {
    message: /^--tls-key .*junk\.pem is not a PEM private key/,
  });
  t.throws(() => loadTlsCredentials(pki.cert, pki.ca), { message: /^--tls-key .* is not a PEM private key/ });
  t.throws(() => loadTlsCredentials(pki.cert, other.key), {
    message:
      /^--tls-key .*other-server\.key is not the key of the certificate in --tls-cert .*ca-server\.pem/,
  });
});

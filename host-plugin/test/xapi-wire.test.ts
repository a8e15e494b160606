// Every XAPI connection is checked before anything is sent: an https:// XAPI whose certificate is neither
// pinned nor signed by the CA given never receives the login (the password) nor a session id; the right
// pin or CA works, a wrong one is refused; xapi's Unix socket needs no password; plain HTTP leaves the host
// only in a lab. Certificates are made here by the `openssl` command, as an admin would read one.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test, { type ExecutionContext } from "ava";
import { connectXapi, XapiAdapterError } from "../src/adapters/xapi.js";
import { normalizeFingerprint, readCaFile, xapiEndpoint, XapiTrustError } from "../src/adapters/xapi-wire.js";
import { FakeXapi, poolA } from "./support/fake-xapi.js";

/** A self-signed certificate as XAPI's gencert makes one (its names and addresses as SANs), and its pin. */
function certificate(dir: string, name: string, san: string) {
  const key = join(dir, `${name}.key`);
  const cert = join(dir, `${name}.pem`);
  execFileSync(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-keyout",
      key,
      "-out",
      cert,
      "-days",
      "2",
      "-subj",
      `/CN=${name}`,
      "-addext",
      `subjectAltName=${san}`,
    ],
    { stdio: "ignore" },
  );
  // What the admin runs on the pool master (README): `sha256 Fingerprint=AB:CD:…`.
  const fingerprint = execFileSync("openssl", ["x509", "-noout", "-fingerprint", "-sha256", "-in", cert], {
    encoding: "utf8",
  }).trim();
  return { key: readFileSync(key, "utf8"), cert: readFileSync(cert, "utf8"), certFile: cert, fingerprint };
}

async function tlsPool(t: ExecutionContext) {
  const dir = mkdtempSync(join(tmpdir(), "xr-xapi-tls-"));
  const pki = certificate(dir, "pool-a", "DNS:pool-a.example,IP:127.0.0.1");
  const other = certificate(dir, "intruder", "IP:127.0.0.1");
  const xapi = await new FakeXapi(poolA()).start({ tls: { key: pki.key, cert: pki.cert } });
  t.teardown(async () => {
    await xapi.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  return { dir, pki, other, xapi };
}

const loggedIn = (xapi: FakeXapi) => xapi.bodies.some((b) => b.includes("session.login_with_password"));

test("an unchecked certificate gets nothing, not the password: the refusal gives its fingerprint and how to pin it", async (t) => {
  const { pki, xapi } = await tlsPool(t);
  const err = await t.throwsAsync(connectXapi(xapi.url, "root", "secret"), { instanceOf: XapiAdapterError });
  const pin = normalizeFingerprint(pki.fingerprint);
  t.regex(err?.message ?? "", /certificate is not trusted \(DEPTH_ZERO_SELF_SIGNED_CERT\)/);
  t.true(err?.message.includes(`SHA-256 fingerprint is ${pin}`), err?.message);
  t.true(err?.message.includes(`--xapi-fingerprint ${pin}`), err?.message);
  t.regex(err?.message ?? "", /openssl x509 -noout -fingerprint -sha256 -in \/etc\/xensource\/xapi-ssl\.pem/);
  t.true(xapi.connections > 0, "the client did reach the server");
  t.deepEqual(xapi.bodies, [], "and sent it nothing: no login, no password");
});

test("a pinned fingerprint: the right one logs in, a wrong one is refused before the login", async (t) => {
  const { pki, other, xapi } = await tlsPool(t);
  const wrong = await t.throwsAsync(
    connectXapi(xapi.url, "root", "secret", {
      trust: { flag: "--xapi-remote", fingerprints: [normalizeFingerprint(other.fingerprint)] },
    }),
    { instanceOf: XapiAdapterError },
  );
  t.regex(
    wrong?.message ?? "",
    /is not pinned \(--xapi-remote-fingerprint [0-9A-F:]{95}\): xenroam sent it nothing/,
  );
  t.deepEqual(xapi.bodies, []);

  // openssl's own output is accepted as is; any pin of the list will do (a pool whose master may change).
  const x = await connectXapi(xapi.url, "root", "secret", {
    trust: { fingerprints: [normalizeFingerprint(other.fingerprint), normalizeFingerprint(pki.fingerprint)] },
  });
  t.teardown(() => x.close());
  t.deepEqual(await x.call("VM.get_by_name_label", "web1"), ["OpaqueRef:vm"]);
  t.true(loggedIn(xapi));
});

test("a CA file: the certificate must chain to it and name the host of the URL", async (t) => {
  const { pki, xapi } = await tlsPool(t);
  const x = await connectXapi(xapi.url, "root", "secret", { trust: { ca: readCaFile(pki.certFile) } });
  t.teardown(() => x.close());
  t.deepEqual(await x.call("VM.get_by_name_label", "web1"), ["OpaqueRef:vm"]);

  // The same server under a name its certificate does not list: refused, nothing sent on that connection.
  const before = xapi.bodies.length;
  const port = new URL(xapi.url).port;
  const err = await t.throwsAsync(
    connectXapi(`https://localhost:${port}`, "root", "secret", { trust: { ca: readCaFile(pki.certFile) } }),
    { instanceOf: XapiAdapterError },
  );
  t.regex(err?.message ?? "", /not trusted \(ERR_TLS_CERT_ALTNAME_INVALID\).*does not name localhost/);
  t.is(xapi.bodies.length, before);
});

test("a CA file that holds a private key (xapi-ssl.pem itself) is refused", (t) => {
  const dir = mkdtempSync(join(tmpdir(), "xr-xapi-ca-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const { key, cert } = certificate(dir, "master", "IP:127.0.0.1");
  writeFileSync(join(dir, "xapi-ssl.pem"), `${key}${cert}`);
  t.throws(() => readCaFile(join(dir, "xapi-ssl.pem"), "--xapi-remote"), {
    instanceOf: XapiTrustError,
    message: /--xapi-remote-ca: .* holds a private key; give the certificate alone/,
  });
  writeFileSync(join(dir, "empty.pem"), "nothing\n");
  t.throws(() => readCaFile(join(dir, "empty.pem")), { message: /holds no PEM certificate/ });
});

test("xapi's Unix socket: a login with no password, nothing to check", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "xr-xapi-sock-"));
  const xapi = await new FakeXapi(poolA()).start({ socketPath: join(dir, "xapi") });
  t.teardown(async () => {
    await xapi.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const x = await connectXapi(xapi.url, "root", "");
  t.teardown(() => x.close());
  t.deepEqual(await x.call("VM.get_by_name_label", "web1"), ["OpaqueRef:vm"]);
  const login = JSON.parse(xapi.bodies.find((b) => b.includes("login_with_password")) ?? "{}") as {
    params?: unknown[];
  };
  t.deepEqual(login.params?.slice(0, 2), ["root", ""]);
});

test("which URLs and settings are refused, and why", (t) => {
  const refused = (url: string, trust = {}) =>
    t.throws(() => xapiEndpoint(url, trust), { instanceOf: XapiTrustError })?.message ?? "";
  t.regex(
    refused("http://[2001:db8:b::1]"),
    /plain HTTP to another host: the password would cross the network in clear/,
  );
  t.deepEqual(xapiEndpoint("http://[2001:db8:b::1]", { insecureHttp: true }), {
    kind: "http",
    host: "2001:db8:b::1",
    port: 80,
  });
  t.is(xapiEndpoint("http://[::1]").kind, "http", "the loopback stays on the host");
  t.is(xapiEndpoint("http://127.0.0.1:8080").kind, "http");
  t.regex(refused("https://root:hunter2@pool-b"), /a password in the URL would be on the command line/);
  t.false(refused("https://root:hunter2@pool-b").includes("hunter2"), "and the message does not repeat it");
  t.regex(
    refused("https://pool-b", { ca: "x", fingerprints: ["AA"] }),
    /give --xapi-ca or --xapi-fingerprint, not both/,
  );
  t.regex(refused("unix:/var/lib/xcp/xapi", { ca: "x" }), /Unix socket .* has no certificate and needs none/);
  t.regex(refused("ftp://pool-b"), /https:\/\//);
  t.deepEqual(xapiEndpoint("unix:/var/lib/xcp/xapi"), { kind: "unix", path: "/var/lib/xcp/xapi" });
  t.like(xapiEndpoint("https://[2001:db8:b::1]:8443"), { kind: "https", host: "2001:db8:b::1", port: 8443 });
});

test("fingerprints are read as openssl and XAPI print them, and nothing else", (t) => {
  const pin = `${"AB:".repeat(31)}AB`;
  t.is(normalizeFingerprint(`sha256 Fingerprint=${pin}`), pin);
  t.is(normalizeFingerprint(pin.toLowerCase()), pin);
  t.is(normalizeFingerprint(pin.replace(/:/g, "")), pin);
  t.throws(() => normalizeFingerprint("AB:CD", "--xapi-remote"), {
    message: /--xapi-remote-fingerprint takes a certificate's SHA-256 fingerprint/,
  });
});

test("a pool member that names the master: the master is checked too before it gets the login", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "xr-xapi-member-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const memberPki = certificate(dir, "member", "IP:127.0.0.1");
  const masterPki = certificate(dir, "master", "IP:127.0.0.2");
  // The client keeps the port when it follows HOST_IS_SLAVE: both listen on one, on two loopback addresses.
  const master = await new FakeXapi(poolA()).start({
    tls: { key: masterPki.key, cert: masterPki.cert },
    address: "127.0.0.2",
  });
  t.teardown(() => master.stop());
  const port = Number(new URL(master.url).port);
  const member = new FakeXapi(poolA());
  member.memberOf = "127.0.0.2";
  await member.start({ tls: { key: memberPki.key, cert: memberPki.cert }, port });
  t.teardown(() => member.stop());

  const onlyMember = [normalizeFingerprint(memberPki.fingerprint)];
  const err = await t.throwsAsync(
    connectXapi(member.url, "root", "secret", { trust: { fingerprints: onlyMember } }),
    {
      instanceOf: XapiAdapterError,
    },
  );
  t.regex(
    err?.message ?? "",
    /XAPI at https:\/\/127\.0\.0\.2:\d+ presented a certificate .* which is not pinned/,
  );
  t.deepEqual(master.bodies, [], "the master was sent nothing");

  const both = [...onlyMember, normalizeFingerprint(masterPki.fingerprint)];
  const x = await connectXapi(member.url, "root", "secret", { trust: { fingerprints: both } });
  t.teardown(() => x.close());
  t.deepEqual(await x.call("VM.get_by_name_label", "web1"), ["OpaqueRef:vm"]);
  t.true(loggedIn(master));
});

test("a session XAPI handed the plugin (its caller's) is used and never logged out", async (t) => {
  const xapi = await new FakeXapi(poolA()).start();
  t.teardown(() => xapi.stop());
  const x = await connectXapi(xapi.url, "root", "", { sessionId: "OpaqueRef:session" });
  t.deepEqual(await x.call("VM.get_by_name_label", "web1"), ["OpaqueRef:vm"]);
  await x.close();
  await new Promise((r) => setTimeout(r, 100));
  t.false(loggedIn(xapi), "no login: the caller's session");
  t.false(
    xapi.bodies.some((b) => b.includes("session.logout")),
    "and no logout of it",
  );
});

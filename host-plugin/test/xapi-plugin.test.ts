// XAPI's host-plugin protocol: a methodCall in argv[1] as XAPI writes it (Python's xmlrpc.client.dumps), an
// XML-RPC response with {Status, Value | ErrorDescription} on stdout, exit 0 whatever happens.
import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import test from "ava";
import { parseXml } from "@vates/xml/parse";
import { xmlRpcParser } from "@vates/xml-rpc/parser";
import { parsePluginCall, pluginFailure, pluginSuccess } from "../src/xapi-plugin.js";
import { FakeXapi, poolA } from "./support/fake-xapi.js";

const PLUGIN = fileURLToPath(new URL("../src/xapi-plugin-main.js", import.meta.url));

const methodCall = (fn: string, args: Record<string, string>) =>
  `<?xml version='1.0'?>\n<methodCall>\n<methodName>${fn}</methodName>\n<params>\n<param>\n<value><string>OpaqueRef:3c5a</string></value>\n</param>\n<param>\n<value><struct>\n${Object.entries(
    args,
  )
    .map(([k, v]) => `<member>\n<name>${k}</name>\n<value><string>${v}</string></value>\n</member>\n`)
    .join("")}</struct></value>\n</param>\n</params>\n</methodCall>\n`;

const answer = (xml: string) =>
  (xmlRpcParser.parse(parseXml(xml)).params ?? [])[0] as Record<string, unknown>;

test("a methodCall as XAPI sends it is read: function, session, arguments", (t) => {
  t.deepEqual(parsePluginCall(methodCall("prepare", { vm: "web1", to: "hostb" })), {
    fn: "prepare",
    session: "OpaqueRef:3c5a",
    args: { vm: "web1", to: "hostb" },
  });
  t.throws(() => parsePluginCall("<nope"), { message: /not an XML-RPC methodCall/ });
});

test("answers are XML-RPC structs with Status and Value or ErrorDescription", (t) => {
  t.deepEqual(answer(pluginSuccess("web1: prepared")), { Status: "Success", Value: "web1: prepared" });
  t.deepEqual(answer(pluginFailure("abort", "no such VM")), {
    Status: "Failure",
    ErrorDescription: ["XENAPI_PLUGIN_FAILURE", "abort", "no such VM"],
  });
});

function plugin(xml: string): Promise<{ code: number; stdout: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [PLUGIN, xml],
      { env: { ...process.env, XENROAM_XAPI_URL: "http://127.0.0.1:1" } },
      (err, stdout) => resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout }),
    );
  });
}

test("the plugin exits 0 with a Failure answer for bad input, unknown functions and failing work", async (t) => {
  for (const [xml, reason] of [
    ["garbage", /not an XML-RPC methodCall/],
    [methodCall("reboot", {}), /unknown function reboot; the functions are status, prepare, abort/],
    [methodCall("prepare", { vm: "web1" }), /prepare needs args:vm=VM args:to=HOST/],
    [methodCall("abort", { vm: "$(id)" }), /bad vm/],
    [methodCall("status", {}), /cannot log in to XAPI|sites|xenstore/],
  ] as const) {
    const r = await plugin(xml);
    t.is(r.code, 0);
    const a = answer(r.stdout);
    t.is(a.Status, "Failure");
    t.regex(String((a.ErrorDescription as string[])[2]), reason);
  }
});

// XAPI hands the plugin the caller's session on the plugin's command line (ocaml/xapi/xapi_plugins.ml 31-41);
// the plugin hands it to xenroam on stdin, so no process of xenroam's shows it in /proc/PID/cmdline.
test("the caller's session reaches xenroam on its stdin, never on its command line", async (t) => {
  const session = `OpaqueRef:${randomUUID()}`;
  const xapi = await new FakeXapi(poolA()).start();
  xapi.session = session;
  t.teardown(() => xapi.stop());
  const holders = new Set<number>();
  // While xenroam waits for XAPI's answer, every process whose command line holds the session.
  xapi.onRequest = () => {
    for (const pid of readdirSync("/proc").filter((d) => /^\d+$/.test(d))) {
      try {
        if (readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(session)) holders.add(Number(pid));
      } catch {
        // gone meanwhile
      }
    }
  };
  let pluginPid: number | undefined;
  const r = await new Promise<{ stdout: string }>((resolve) => {
    const child = execFile(
      process.execPath,
      [PLUGIN, methodCall("status", {}).replace("OpaqueRef:3c5a", session)],
      { env: { ...process.env, XENROAM_XAPI_URL: xapi.url, XENROAM_XENSTORE: "/nonexistent" } },
      (_err, stdout) => resolve({ stdout }),
    );
    pluginPid = child.pid;
  });
  t.is(answer(r.stdout).Status, "Failure", "no xenstore here: status fails after logging in");
  t.true(
    xapi.calls.some((c) => c.method === "pool.get_all_records"),
    "xenroam used the session it read on stdin",
  );
  t.true(holders.has(pluginPid ?? -1), "the look does see a command line that holds it (the plugin's)");
  t.deepEqual(
    [...holders].filter((pid) => pid !== pluginPid),
    [],
    "no process but XAPI's plugin shows it",
  );
});

test("xenroam refuses a session id on its command line, saying how to pass it", async (t) => {
  const main = fileURLToPath(new URL("../src/main.js", import.meta.url));
  const r = await new Promise<{ code: number; stderr: string }>((resolve) =>
    execFile(
      process.execPath,
      [main, "--toolstack", "xapi", "--xapi-session", "OpaqueRef:abc", "status"],
      (err, _stdout, stderr) =>
        resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stderr }),
    ),
  );
  t.is(r.code, 1);
  t.regex(r.stderr, /--xapi-session puts the XAPI session id on the command line.*--xapi-session-file -/);
});

test("xenroam refuses plain HTTP to the other pool before anything of a migration starts", async (t) => {
  const xapi = await new FakeXapi(poolA()).start();
  t.teardown(() => xapi.stop());
  const dir = mkdtempSync(join(tmpdir(), "xr-remote-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, "pw"), "secret\n", { mode: 0o600 });
  const main = fileURLToPath(new URL("../src/main.js", import.meta.url));
  const run = (...extra: string[]) =>
    new Promise<{ code: number; stderr: string }>((resolve) =>
      execFile(
        process.execPath,
        [
          main,
          "--toolstack",
          "xapi",
          "--xapi-url",
          xapi.url,
          "--xapi-password-file",
          join(dir, "pw"),
          "--xapi-remote-password-file",
          join(dir, "pw"),
          "--state-dir",
          dir,
          ...extra,
          "status",
        ],
        (err, _stdout, stderr) =>
          resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stderr }),
      ),
    );
  const plain = await run("--xapi-remote", "http://[2001:db8:b::1]");
  t.is(plain.code, 1);
  t.regex(plain.stderr, /plain HTTP to another host: the password would cross the network in clear/);
  const pins = await run("--xapi-remote", "https://pool-b", "--xapi-remote-fingerprint", "AB:CD");
  t.regex(pins.stderr, /--xapi-remote-fingerprint takes a certificate's SHA-256 fingerprint/);
});

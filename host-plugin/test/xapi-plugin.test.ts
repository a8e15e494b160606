// XAPI's host-plugin protocol: a methodCall in argv[1] as XAPI writes it (Python's xmlrpc.client.dumps), an
// XML-RPC response with {Status, Value | ErrorDescription} on stdout, exit 0 whatever happens.
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import test from "ava";
import { parseXml } from "@vates/xml/parse";
import { xmlRpcParser } from "@vates/xml-rpc/parser";
import { parsePluginCall, pluginFailure, pluginSuccess } from "../src/xapi-plugin.js";

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

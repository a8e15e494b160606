// XAPI's host-plugin protocol (`xe host-call-plugin host-uuid=… plugin=xenroam fn=status args:vm=web1`): XAPI
// runs /etc/xapi.d/plugins/xenroam with argv[1] = an XML-RPC methodCall whose methodName is the function and
// whose params are [session id, {arg: value}]; the plugin prints an XML-RPC response holding the struct
// {Status: "Success", Value} or {Status: "Failure", ErrorDescription: [...]}. Parsing and formatting with the
// xen-api client's own XML and XML-RPC packages.

import { formatXml } from "@vates/xml/format";
import { parseXml } from "@vates/xml/parse";
import { xmlRpcFormatter } from "@vates/xml-rpc/formatter";
import { xmlRpcParser } from "@vates/xml-rpc/parser";

export class PluginCallError extends Error {}

export interface PluginCall {
  readonly fn: string;
  readonly session: string;
  readonly args: Readonly<Record<string, string>>;
}

export function parsePluginCall(xml: string): PluginCall {
  let call: { methodName?: string; params?: unknown[] };
  try {
    call = xmlRpcParser.parse(parseXml(xml));
  } catch (err) {
    throw new PluginCallError(`not an XML-RPC methodCall: ${(err as Error).message}`);
  }
  const [session, args] = call.params ?? [];
  if (typeof call.methodName !== "string") throw new PluginCallError("the methodCall has no methodName");
  if (typeof session !== "string") throw new PluginCallError("the first parameter must be the session id");
  const map = (args ?? {}) as Record<string, unknown>;
  if (
    typeof map !== "object" ||
    Array.isArray(map) ||
    Object.values(map).some((v) => typeof v !== "string")
  ) {
    throw new PluginCallError("the second parameter must be a struct of strings");
  }
  return { fn: call.methodName, session, args: map as Record<string, string> };
}

const response = (struct: Record<string, unknown>) =>
  formatXml(xmlRpcFormatter.format_methodResponse({ params: [struct] }), { indent: 0 });

export const pluginSuccess = (value: string): string => response({ Status: "Success", Value: value });

export const pluginFailure = (fn: string, message: string): string =>
  response({ Status: "Failure", ErrorDescription: ["XENAPI_PLUGIN_FAILURE", fn, message] });

#!/usr/bin/env node
// xenroam-xapi-plugin: installed as /etc/xapi.d/plugins/xenroam, so that
//   xe host-call-plugin host-uuid=H plugin=xenroam fn=status [args:vm=web1]
//   xe host-call-plugin host-uuid=H plugin=xenroam fn=prepare args:vm=web1 args:to=hostb
//   xe host-call-plugin host-uuid=H plugin=xenroam fn=abort args:vm=web1
// run xenroam on that host with the caller's XAPI session, handed to it on its stdin (XAPI puts it on this
// plugin's own command line; xenroam's stays free of it). Whatever happens, the answer is an XML-RPC
// response on stdout (Success with xenroam's output, or Failure with its reason) and the exit code is 0.

import { execFile } from "node:child_process";
import { sibling } from "./install.js";
import { parsePluginCall, pluginFailure, pluginSuccess } from "./xapi-plugin.js";

const XENROAM = sibling("./main.js", "../xenroam/xenroam.mjs");
const VM = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/;

function reply(xml: string): void {
  process.stdout.write(`${xml}\n`);
  process.exit(0);
}

/** Runs xenroam with the caller's session on its stdin: a command line is readable by every user of the host. */
function xenroam(args: string[], session: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      [XENROAM, ...args],
      { timeout: 120_000 },
      (err, stdout, stderr) =>
        resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
    child.stdin?.on("error", () => {});
    child.stdin?.end(`${session}\n`);
  });
}

async function main(): Promise<void> {
  let call;
  try {
    call = parsePluginCall(process.argv[2] ?? "");
  } catch (err) {
    reply(pluginFailure("?", (err as Error).message));
    return;
  }
  const { fn, session, args } = call;
  const vm = args.vm;
  if (vm !== undefined && !VM.test(vm)) return reply(pluginFailure(fn, `bad vm "${vm}"`));
  const base = ["--toolstack", "xapi", "--xapi-session-file", "-"];
  let argv: string[];
  if (fn === "status") argv = [...base, "status", "--json", ...(vm ? [vm] : [])];
  else if (fn === "prepare") {
    if (!vm || !args.to || !VM.test(args.to))
      return reply(pluginFailure(fn, "prepare needs args:vm=VM args:to=HOST"));
    argv = [...base, "prepare", vm, "--to", args.to];
  } else if (fn === "abort") {
    if (!vm) return reply(pluginFailure(fn, "abort needs args:vm=VM"));
    argv = [...base, "abort", vm];
  } else return reply(pluginFailure(fn, `unknown function ${fn}; the functions are status, prepare, abort`));
  const r = await xenroam(argv, session);
  if (r.code === 0) reply(pluginSuccess(r.stdout.trim()));
  else reply(pluginFailure(fn, r.stderr.trim().split("\n").at(-1) ?? `exit ${r.code}`));
}

main().catch((err: unknown) => reply(pluginFailure("?", String(err))));

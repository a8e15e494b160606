#!/usr/bin/env node
// xenroam-xenstored: the lab's xenstored. One Dom0 socket, any number of guest sockets each bound to a
// domain id. JSON logs on stderr; SIGTERM/SIGINT close every socket and remove the socket files. With
// --state-file, a stop hands the tree to the next start (a restart keeps the store, as a live update does).

import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { Command, InvalidArgumentError } from "commander";
import { XenstoreServer, type XenstoreSnapshot } from "./server.js";

interface GuestSocket {
  domid: number;
  path: string;
}

function guestSocket(value: string, previous: GuestSocket[] = []): GuestSocket[] {
  const m = /^(\d{1,5}):(\/.+)$/.exec(value);
  if (!m || Number(m[1]) === 0) {
    throw new InvalidArgumentError(`expected DOMID:/abs/path/to/socket with DOMID >= 1, got "${value}"`);
  }
  return [...previous, { domid: Number(m[1]), path: m[2] as string }];
}

const log = (event: string, fields: Record<string, unknown> = {}) =>
  process.stderr.write(
    `${JSON.stringify({ ts: new Date().toISOString(), component: "xenstored", event, ...fields })}\n`,
  );

const program = new Command("xenroam-xenstored")
  .description(
    "A small xenstored speaking the real xenstore wire protocol over unix sockets, for the xenroam lab and tests. Connections on --socket act as Dom0 (privileged); connections on each --guest socket act as that domain, with xenstored's permission rules (a guest writes only where it is allowed).",
  )
  .requiredOption("--socket <path>", "Dom0 socket path (absolute)")
  .option("--guest <domid:path>", "a guest socket bound to a domain id (repeatable)", guestSocket, [])
  .option("--introduce", "create /local/domain/<domid> owned by each --guest domain at start")
  .option(
    "--state-file <path>",
    "on SIGTERM/SIGINT write the tree and the guest sockets served here; at start, when it exists, carry on from it (and delete it) instead of --guest/--introduce: a restart keeps the store, as xenstored's live update does",
  )
  .addHelpText(
    "after",
    "\nExample:\n  xenroam-xenstored --socket /run/xr/hosta.sock --guest 5:/run/xr/vm5.sock --introduce\n",
  );

async function main(): Promise<void> {
  // A supervisor that dies takes our stderr pipe with it; logging must never stop a clean shutdown.
  process.stderr.on("error", () => {});
  program.parse();
  const opts = program.opts<{
    socket: string;
    guest: GuestSocket[];
    introduce?: boolean;
    stateFile?: string;
  }>();
  if (!opts.socket.startsWith("/")) program.error("--socket must be an absolute path");
  const server = new XenstoreServer(log);
  const carried = opts.stateFile && existsSync(opts.stateFile) ? opts.stateFile : undefined;
  if (carried) {
    // What the previous process left at its stop: the guest sockets it served replace the command line's
    // (a guest may have moved to another host since this one was started).
    await server.restore(JSON.parse(readFileSync(carried, "utf8")) as XenstoreSnapshot);
    rmSync(carried);
    log("restored", { from: carried });
  } else {
    for (const g of opts.guest) {
      if (opts.introduce) server.introduceDomain(g.domid);
      await server.listen(g.path, { domid: g.domid });
    }
  }
  await server.listen(opts.socket, { domid: 0 });
  log("ready", { pid: process.pid });
  const stop = async (signal: string) => {
    log("stopping", { signal });
    if (opts.stateFile) {
      // Taken before the sockets close, in the same turn: no request is served in between.
      writeFileSync(`${opts.stateFile}.tmp`, JSON.stringify(server.snapshot()));
      renameSync(`${opts.stateFile}.tmp`, opts.stateFile);
    }
    await server.close();
    log("stopped");
    process.exit(0);
  };
  process.once("SIGTERM", () => void stop("SIGTERM"));
  process.once("SIGINT", () => void stop("SIGINT"));
}

main().catch((err: unknown) => {
  log("fatal", { error: err instanceof Error ? err.message : String(err) });
  process.exit(1);
});

#!/usr/bin/env node
// xenroam-agent: the DomU daemon. Wires xenstore (the guest channel, reconnecting across migrations) and
// rtnetlink to the agent core; logs JSON lines; stops cleanly on SIGTERM.

import { Command, Option } from "commander";
import { createNetlink } from "@xenroam/netlink";
import { CHANNEL_DIR, type Channel } from "@xenroam/protocol";
import { GUEST_DEVICE, XenstoreClient } from "@xenroam/xenstore";
import { Agent, type GuestChannel, type Log } from "./core.js";

const log: Log = (event, fields = {}) =>
  process.stdout.write(
    `${JSON.stringify({ ts: new Date().toISOString(), component: "xenroam-agent", event, ...fields })}\n`,
  );

/** The guest channel over xenstore; read/write fail while the connection is being re-established. */
class XenstoreChannel implements GuestChannel {
  client: XenstoreClient | undefined;
  constructor(private readonly dir: string) {}
  private need(): XenstoreClient {
    if (!this.client) throw new Error("xenstore is reconnecting");
    return this.client;
  }
  read(key: string): Promise<string | undefined> {
    return this.need().tryRead(`${this.dir}/${key}`);
  }
  write(key: string, value: string): Promise<void> {
    return this.need().write(`${this.dir}/${key}`, value);
  }
}

const program = new Command("xenroam-agent")
  .description(
    "The xenroam guest agent. Runs in the DomU: on a prepare request from Dom0 it brings up the secondary interface and takes its address in the destination subnet (MoA); when the destination Dom0 says the VM has arrived, it makes the secondary the primary. Talks to Dom0 only through xenstore.",
  )
  .option("--xenstore <path>", "xenbus device or xenstored socket", GUEST_DEVICE)
  .addOption(
    new Option("--channel <toolstack>", "where Dom0 writes requests").choices(["xl", "xapi"]).default("xl"),
  )
  .addHelpText("after", "\nExample (in a DomU, as root):\n  xenroam-agent --channel xl\n");

async function main(): Promise<void> {
  program.parse();
  const opts = program.opts<{ xenstore: string; channel: Channel }>();
  if (process.getuid?.() !== 0) {
    program.error("xenroam-agent configures network interfaces and must run as root");
  }
  const dir = CHANNEL_DIR[opts.channel];
  const netlink = createNetlink();
  const channel = new XenstoreChannel(dir);
  const agent = new Agent({ netlink, channel, log });
  const stop = new AbortController();
  const kick = (reason: string) => {
    // While xenstore reconnects there is nothing to read; the reconnection's own watch event will kick.
    if (!channel.client) return;
    void agent.converge(reason).catch((err: unknown) => {
      // A lost connection is expected right after a resume; reconnecting kicks again.
      if (channel.client) log("converge_failed", { reason, error: String(err) });
    });
  };

  // A carrier change on a NIC is a hint that the VM moved: re-read the channel now. Never acted on alone.
  void (async () => {
    for await (const ev of netlink.events({ signal: stop.signal })) {
      if (ev.type === "link" && ev.action === "new" && ev.link.name !== "lo") kick("carrier");
    }
  })();

  log("started", { pid: process.pid, xenstore: opts.xenstore, dir });
  let delay = 5;
  let madeDir = false;
  while (!stop.signal.aborted) {
    let client: XenstoreClient;
    try {
      client = await XenstoreClient.connect(opts.xenstore);
    } catch (err) {
      if (delay === 5 || delay >= 500)
        log("xenstore_unavailable", { error: (err as Error).message, retryMs: delay });
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(500, delay * 2);
      continue;
    }
    delay = 5;
    channel.client = client;
    stop.signal.addEventListener("abort", () => client.close(), { once: true });
    try {
      if (!madeDir) {
        await client.mkdir(dir).catch(() => {});
        madeDir = true;
      }
      // Look at once (a resume is the moment that matters), while the watch is being registered.
      kick("connected");
      const watch = await client.watch(dir, "xenroam-agent");
      log("connected", { xenstore: opts.xenstore });
      // Every watch fires once on registration, and again after a resume: each event is a reason to look.
      for await (const _ of watch) kick("xenstore");
    } catch (err) {
      if (!stop.signal.aborted) log("xenstore_lost", { error: (err as Error).message });
    } finally {
      channel.client = undefined;
      client.close();
    }
  }
}

process.once("SIGTERM", () => {
  log("stopping", { signal: "SIGTERM" });
  process.exit(0);
});
process.once("SIGINT", () => process.exit(0));

main().catch((err: unknown) => {
  log("fatal", { error: err instanceof Error ? err.message : String(err) });
  process.exit(1);
});

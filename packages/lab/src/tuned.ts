// The strongest baseline without the method: a best-tuned guest. No DAD; the moment its interface regains
// carrier it bounces the link, which drops the old site's address and default route and sends a Router
// Solicitation at once. What remains is the wait for the new site's RA.

import { createNetlink } from "@xenroam/netlink";

export async function runTunedGuest(dev: string): Promise<void> {
  const nl = createNetlink();
  await nl.writeSysctl(dev, "accept_dad", 0);
  await nl.writeSysctl(dev, "router_solicitation_delay", 0);
  const stop = new AbortController();
  process.once("SIGTERM", () => stop.abort());
  process.once("SIGINT", () => stop.abort());
  let carrier = (await nl.link(dev))?.carrier ?? false;
  for await (const ev of nl.events({ signal: stop.signal })) {
    if (ev.type !== "link" || ev.link.name !== dev || ev.action !== "new") continue;
    const now = ev.link.carrier;
    if (now && !carrier && ev.link.up) {
      await nl.setLink(dev, { up: false });
      await nl.setLink(dev, { up: true });
    }
    carrier = now;
  }
  nl.close();
}

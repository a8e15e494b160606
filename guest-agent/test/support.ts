// Shared by the agent's tests: a prepare request for site b and the guest channel in memory.
import { FakeNetlink } from "@xenroam/netlink";
import type { PrepareRequest } from "@xenroam/protocol";
import type { GuestChannel } from "../src/index.js";

export const request: PrepareRequest = {
  v: 1,
  kind: "prepare",
  id: "m1",
  site: "b",
  prefix: "2001:db8:b::/64",
  gateway: { linkLocal: "fe80::b:1", mac: "02:00:00:00:0b:01" },
  secondaryMac: "00:16:3e:00:00:02",
  timeoutMs: 2000,
};

export class MemoryChannel implements GuestChannel {
  readonly keys = new Map<string, string>();
  async read(key: string) {
    return this.keys.get(key);
  }
  async write(key: string, value: string) {
    this.keys.set(key, value);
  }
  json(key: string): Record<string, unknown> | undefined {
    const v = this.keys.get(key);
    return v === undefined ? undefined : (JSON.parse(v) as Record<string, unknown>);
  }
}

/** A guest on site a: eth0 up with the site's RA default route, eth1 (the secondary) down. */
export function guestNetlink(): FakeNetlink {
  const netlink = new FakeNetlink(["lo"]);
  netlink.seedLink("eth0", { mac: "00:16:3e:00:00:01", up: true });
  netlink.seedLink("eth1", { mac: "00:16:3e:00:00:02", up: false });
  netlink.seedRoute({
    dst: "default",
    dev: "eth0",
    gateway: "fe80::a:1",
    metric: 1024,
    table: 254,
    protocol: "ra",
  });
  return netlink;
}

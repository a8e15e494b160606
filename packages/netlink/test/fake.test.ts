import test from "ava";
import { FakeNetlink, isNetlinkError } from "../src/index.js";

test("FakeNetlink records effects as ip-style text", async (t) => {
  const nl = new FakeNetlink(["lo", "vif3.1"]);
  await nl.createBridge("xr-site-b", { mac: "02:00:00:00:0B:01" });
  await nl.setLink("vif3.1", { master: "xr-site-b", up: true });
  await nl.setLink("xr-site-b", { up: true });
  await nl.addAddress("xr-site-b", "fe80::b:1/64", { nodad: true });
  await nl.addRoute({ dst: "default", gateway: "fe80::b:1", dev: "xr-site-b", metric: 4242 });
  await nl.writeSysctl("xr-site-b", "accept_ra", 0);
  t.deepEqual(nl.effects, [
    "link add xr-site-b address 02:00:00:00:0b:01 type bridge",
    "link set vif3.1 master xr-site-b up",
    "link set xr-site-b up",
    "addr add fe80::b:1/64 dev xr-site-b nodad",
    "route add default via fe80::b:1 dev xr-site-b metric 4242",
    "sysctl -w net.ipv6.conf.xr-site-b.accept_ra=0",
  ]);
  t.true(isNetlinkError(await t.throwsAsync(nl.createBridge("xr-site-b")), "EEXIST"));
  t.true(isNetlinkError(await t.throwsAsync(nl.setLink("nope", { up: true })), "ENODEV"));
});

test("FakeNetlink waitAddress follows DAD through events", async (t) => {
  const nl = new FakeNetlink(["lo", "eth1"]);
  nl.seedAddress("eth1", "2001:db8:b::5/64", { tentative: true });
  const waiting = nl.waitAddress("eth1", "2001:db8:b::5", { timeoutMs: 1000 });
  nl.settle();
  t.false((await waiting).tentative);
  nl.seedAddress("eth1", "2001:db8:b::6/64", { tentative: true });
  const failing = nl.waitAddress("eth1", "2001:db8:b::6");
  nl.settle(true);
  t.true(isNetlinkError(await t.throwsAsync(failing), "EADDRNOTAVAIL"));
  t.true(
    isNetlinkError(
      await t.throwsAsync(nl.waitAddress("eth1", "2001:db8:b::7", { timeoutMs: 10 })),
      "ETIMEDOUT",
    ),
  );
});

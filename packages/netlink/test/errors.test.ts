import test from "ava";
import { isNetlinkError, NetlinkError, toNetlinkError } from "../src/index.js";

test("the npm package's error text becomes a typed error, once", (t) => {
  const e = toNetlinkError(new Error("Request rejected: EEXIST"), "create bridge", "xr-site-b");
  t.is(e.code, "EEXIST");
  t.is(e.errno, 17);
  t.is(e.message, "create bridge xr-site-b: EEXIST");
  t.is(toNetlinkError(e, "other", "x"), e, "already converted errors pass through");
  const sys = Object.assign(new Error("ENOENT: no such file"), { code: "ENOENT" });
  t.is(toNetlinkError(sys, "read sysctl", "eth9").code, "ENOENT");
  t.is(toNetlinkError(new Error("weird"), "op", undefined).code, "EIO");
  t.true(isNetlinkError(new NetlinkError("ENODEV", "x", "y"), "ENODEV"));
  t.false(isNetlinkError(new Error("ENODEV")));
});

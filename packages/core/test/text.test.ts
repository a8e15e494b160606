import test from "ava";
import { printable } from "../src/index.js";

test("printable shows control characters, DEL, C1 and bidi overrides as escapes, keeps the rest, caps the length", (t) => {
  t.is(
    printable("wait address eth1: ETIMEDOUT (2001:db8:b::/64)"),
    "wait address eth1: ETIMEDOUT (2001:db8:b::/64)",
  );
  t.is(printable("a\u001b[31mb\r\nc\u007f\u009b"), "a\\x1b[31mb\\x0d\\x0ac\\x7f\\x9b");
  t.is(printable("\u202eevil\u2066"), "\\u202eevil\\u2066");
  t.is(printable("é ü 日本"), "é ü 日本");
  t.is(printable("x".repeat(10), 4), "xxxx…");
});

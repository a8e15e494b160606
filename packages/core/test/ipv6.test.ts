import test from "ava";
import {
  canonicalIpv6,
  formatIpv6,
  isLinkLocal,
  linkLocalFromMac,
  parseIpv6,
  parsePrefix,
  prefixContains,
  prefixesOverlap,
  slaacAddress,
} from "../src/index.js";

test("formats RFC 5952 canonical text", (t) => {
  t.is(canonicalIpv6("2001:0DB8:0000:0000:0000:0000:0000:0001"), "2001:db8::1");
  t.is(canonicalIpv6("2001:db8:0:1:0:0:0:1"), "2001:db8:0:1::1");
  t.is(canonicalIpv6("2001:db8:0:0:1:0:0:1"), "2001:db8::1:0:0:1");
  t.is(canonicalIpv6("::"), "::");
  t.is(canonicalIpv6("::1"), "::1");
  t.is(canonicalIpv6("fe80::"), "fe80::");
  t.is(canonicalIpv6("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2:3:4:5:6");
  t.is(canonicalIpv6("2001:db8:0:2:3:4:5:6"), "2001:db8:0:2:3:4:5:6");
});

test("refuses malformed addresses with the reason", (t) => {
  for (const bad of [
    "",
    "1::2::3",
    "12345::",
    "g::1",
    "1:2:3:4:5:6:7",
    "1:2:3:4:5:6:7:8:9",
    "fe80::1%eth0",
  ]) {
    t.throws(() => parseIpv6(bad), { name: "AddressError" }, bad);
  }
  t.throws(() => parseIpv6("1:2:3:4:5:6:7:8::"), { message: /too many groups/ });
});

test("prefixes: parse, contain, overlap, host bits refused", (t) => {
  const a = parsePrefix("2001:db8:a::/64");
  t.true(prefixContains(a, parseIpv6("2001:db8:a::1")));
  t.false(prefixContains(a, parseIpv6("2001:db8:b::1")));
  t.true(prefixesOverlap(a, parsePrefix("2001:db8::/32")));
  t.false(prefixesOverlap(a, parsePrefix("2001:db8:b::/64")));
  t.throws(() => parsePrefix("2001:db8:a::1/64"), {
    message: /host bits set; the prefix is 2001:db8:a::\/64/,
  });
  t.throws(() => parsePrefix("2001:db8:a::/129"), { message: /0-128/ });
  t.throws(() => parsePrefix("2001:db8:a::"), { message: /ADDRESS\/LENGTH/ });
});

test("EUI-64 addresses match what the kernel derives", (t) => {
  // 52:54:00:12:34:56 -> fe80::5054:ff:fe12:3456 (well-known QEMU example)
  t.is(formatIpv6(linkLocalFromMac("52:54:00:12:34:56")), "fe80::5054:ff:fe12:3456");
  t.is(
    formatIpv6(slaacAddress(parsePrefix("2001:db8:b::/64"), "00:16:3e:00:00:01")),
    "2001:db8:b:0:216:3eff:fe00:1",
  );
  t.true(isLinkLocal(parseIpv6("fe80::1")));
  t.false(isLinkLocal(parseIpv6("2001:db8::1")));
});

import test from "ava";
import { canonicalMac, interfaceNameProblem, isMac, parseMac } from "../src/index.js";

test("interface names follow the kernel's rules", (t) => {
  t.is(interfaceNameProblem("xenbr0"), undefined);
  t.regex(interfaceNameProblem("a-very-long-bridge-name") ?? "", /at most 15/);
  t.regex(interfaceNameProblem("eth0:1") ?? "", /must not contain/);
  t.regex(interfaceNameProblem("") ?? "", /empty/);
});

test("MAC addresses parse and format canonically", (t) => {
  t.is(canonicalMac("02:00:00:00:0B:01"), "02:00:00:00:0b:01");
  t.false(isMac("02:00:00:00:0b"));
  t.throws(() => parseMac("zz:00:00:00:00:00"), { message: /six hex pairs/ });
});

// Run under Bun, bundled by scripts/bun-bundle.mjs --rtnetlink ffi (bun-contract.root.test.ts builds and runs
// it): the Netlink contract (contract.ts) against the real kernel through bun-native.ts, the socket xenroam's Bun
// builds use in place of the netlink addon. Prints one JSON line per case: its title and its failures.
import { isDeepStrictEqual } from "node:util";
import type { ExecutionContext } from "ava";
import { createNetlink } from "../src/index.js";
import { CONTRACT, kernelFixture } from "./contract.js";

/** The assertions contract.ts uses, with ava's meaning: a failure is recorded and the case goes on. */
function assertions(failures: string[]) {
  const check = (ok: boolean, what: string, message?: string) => {
    if (!ok) failures.push(message ? `${message}: ${what}` : what);
    return ok;
  };
  const show = (v: unknown) => {
    try {
      return JSON.stringify(v);
    } catch {
      return String(v);
    }
  };
  const like = (actual: unknown, selector: unknown): boolean =>
    selector !== null && typeof selector === "object"
      ? actual !== null &&
        typeof actual === "object" &&
        Object.entries(selector).every(([k, v]) => like((actual as Record<string, unknown>)[k], v))
      : isDeepStrictEqual(actual, selector);
  return {
    is: (a: unknown, b: unknown, m?: string) => check(Object.is(a, b), `${show(a)} is not ${show(b)}`, m),
    not: (a: unknown, b: unknown, m?: string) => check(!Object.is(a, b), `${show(a)} is ${show(b)}`, m),
    true: (v: unknown, m?: string) => check(v === true, `${show(v)} is not true`, m),
    false: (v: unknown, m?: string) => check(v === false, `${show(v)} is not false`, m),
    deepEqual: (a: unknown, b: unknown, m?: string) =>
      check(isDeepStrictEqual(a, b), `${show(a)} does not deep-equal ${show(b)}`, m),
    like: (a: unknown, s: unknown, m?: string) => check(like(a, s), `${show(a)} is not like ${show(s)}`, m),
    regex: (s: string, re: RegExp, m?: string) =>
      check(re.test(s), `${show(s)} does not match ${String(re)}`, m),
    throwsAsync: async (pending: Promise<unknown>, _expect?: unknown, m?: string) => {
      try {
        await pending;
      } catch (err) {
        return err;
      }
      check(false, "did not throw", m);
      return undefined;
    },
  };
}

for (const c of CONTRACT) {
  const failures: string[] = [];
  const { fixture, cleanup } = kernelFixture(createNetlink(), "y");
  try {
    await c.run(assertions(failures) as unknown as ExecutionContext, fixture);
  } catch (err) {
    failures.push(`threw: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  } finally {
    await cleanup();
  }
  process.stdout.write(`${JSON.stringify({ title: c.title, failures })}\n`);
}
process.exit(0);

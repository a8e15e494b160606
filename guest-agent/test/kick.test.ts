import test from "ava";
import { createKicker, REOPEN_AFTER } from "../src/kick.js";

interface Conn {
  readonly n: number;
}

function harness(outcomes: Array<Error | undefined>, opts: { channelErrors?: boolean } = {}) {
  const reasons: string[] = [];
  const logs: Array<{ event: string; fields?: Record<string, unknown> }> = [];
  const reopened: Conn[] = [];
  let conn: Conn | undefined = { n: 1 };
  const stop = new AbortController();
  let settle: () => void = () => {};
  const idle = new Promise<void>((r) => (settle = r));
  const kick = createKicker<Conn>({
    converge: async (reason) => {
      reasons.push(reason);
      const outcome = outcomes.shift();
      if (outcomes.length === 0) setTimeout(settle, 10);
      if (outcome) throw outcome;
    },
    connection: () => conn,
    isChannelError: () => opts.channelErrors === true,
    reopen: (c) => {
      reopened.push(c);
      conn = undefined;
      settle();
    },
    log: (event, fields) => logs.push({ event, ...(fields ? { fields } : {}) }),
    signal: stop.signal,
  });
  return { kick, reasons, logs, reopened, stop, idle, setConn: (c: Conn | undefined) => (conn = c) };
}

test("a failed pass is retried with backoff until one succeeds, without a further event", async (t) => {
  const h = harness([new Error("READ data/xenroam/answer: EINVAL"), new Error("again"), undefined]);
  h.kick("xenstore");
  await h.idle;
  t.deepEqual(h.reasons, ["xenstore", "retry", "retry"]);
  t.deepEqual(
    h.logs.map((l) => [l.event, l.fields?.retryMs]),
    [
      ["converge_failed", 100],
      ["converge_failed", 200],
    ],
  );
  h.stop.abort();
});

test("channel errors that persist reopen the connection instead of retrying on it", async (t) => {
  const h = harness(
    Array.from({ length: REOPEN_AFTER + 2 }, () => new Error("ETIMEDOUT")),
    { channelErrors: true },
  );
  h.kick("xenstore");
  await h.idle;
  t.deepEqual(h.reopened, [{ n: 1 }]);
  t.is(h.reasons.length, REOPEN_AFTER);
  t.like(h.logs.at(-1)?.fields, { next: "reopen", failures: REOPEN_AFTER });
  h.stop.abort();
});

test("no retry once the connection is gone or the daemon stops", async (t) => {
  const h = harness([new Error("EIO"), undefined]);
  h.setConn(undefined);
  h.kick("xenstore");
  t.deepEqual(h.reasons, []);
  h.setConn({ n: 2 });
  h.stop.abort();
  h.kick("xenstore");
  t.deepEqual(h.reasons, []);
});

test("a failure after the connection changed is left to the new connection's kick", async (t) => {
  let fail: (e: Error) => void = () => {};
  const h = harness([]);
  const reasons: string[] = [];
  const logs: string[] = [];
  let conn: Conn | undefined = { n: 1 };
  const kick = createKicker<Conn>({
    converge: (reason) => {
      reasons.push(reason);
      return new Promise((_, reject) => (fail = reject));
    },
    connection: () => conn,
    isChannelError: () => true,
    reopen: () => t.fail("no reopen"),
    log: (event) => logs.push(event),
    signal: h.stop.signal,
  });
  kick("xenstore");
  conn = { n: 2 };
  fail(new Error("connection closed"));
  await new Promise((r) => setTimeout(r, 250));
  t.deepEqual(reasons, ["xenstore"]);
  t.deepEqual(logs, []);
  h.stop.abort();
});

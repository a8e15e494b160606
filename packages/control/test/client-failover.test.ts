// The client given several control servers, against raw socket servers: which failures move a call on to the
// next server and which do not, which calls are sent again when the first server may have acted on them, the
// `control_failover` log, and one server given working exactly as before. The watch's kept connection to a
// server that dies, against servers in this process.
import { createServer, type Socket } from "node:net";
import type { AddressInfo } from "node:net";
import test, { type ExecutionContext } from "ava";
import { ControlClient, ControlClientError, parseControlUrls, type SignedBinding } from "../src/index.js";
import { freePort, inProcess } from "./client-replicas.js";

type Behaviour = "answer" | "drop" | "silent" | `status ${number}`;

/**
 * A server on 127.0.0.1 that reads each whole request, records its first line, and then answers 200 `{}`
 * ("answer"), closes without a word ("drop": the request was sent, its outcome unknown), never answers
 * ("silent") or answers that status with a JSON error.
 */
async function rawServer(t: ExecutionContext, behaviour: Behaviour = "answer") {
  const seen: string[] = [];
  const hosts: string[] = [];
  const sockets = new Set<Socket>();
  const state = { behaviour };
  const server = createServer((s) => {
    sockets.add(s);
    let text = "";
    s.on("data", (c) => {
      text += String(c);
      const end = text.indexOf("\r\n\r\n");
      if (end < 0) return;
      const length = Number(/content-length: (\d+)/i.exec(text)?.[1] ?? 0);
      if (text.length < end + 4 + length) return;
      seen.push(text.slice(0, text.indexOf(" HTTP/1.1")));
      hosts.push(/\r\nHost: ([^\r]+)/.exec(text)?.[1] ?? "");
      const b = state.behaviour;
      if (b === "drop") s.destroy();
      else if (b === "answer") s.end("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}");
      else if (b.startsWith("status ")) {
        const body = JSON.stringify({
          error: "it says no",
          ...(b === "status 409" ? { code: "already-active" } : {}),
        });
        s.end(`HTTP/1.1 ${b.slice(7)} X\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
      }
    });
    s.on("error", () => {});
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { url, seen, hosts, state };
}

const logger = () => {
  const events: Array<Record<string, unknown>> = [];
  return {
    events,
    log: (event: string, fields: Record<string, unknown>) => events.push({ event, ...fields }),
  };
};

/** `text` as a regular expression that matches it literally. */
const literally = (text: string) => text.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");

const BINDING: SignedBinding = {
  vm: "vm",
  hoa: "2001:db8:f::5",
  locator: "2001:db8:a::5",
  seq: 1,
  expiresAt: 1,
  kid: "A".repeat(11),
  sig: "s",
};

test("control URLs: a list, or separated by commas; each checked; one given twice counts once", (t) => {
  t.deepEqual(parseControlUrls("https://[2001:db8:c::1]:7360"), ["https://[2001:db8:c::1]:7360"]);
  t.deepEqual(
    parseControlUrls([
      "http://127.0.0.1:1/,http://127.0.0.1:2",
      "http://127.0.0.1:1",
      " http://127.0.0.1:3 ",
    ]),
    ["http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3"],
  );
  t.throws(() => parseControlUrls("http://127.0.0.1:1,ftp://x"), {
    message: /"ftp:\/\/x": the control server is reached over http:\/\/ or https:\/\//,
  });
  t.throws(() => parseControlUrls(","), { message: /no control server URL given/ });
  t.throws(
    () => new ControlClient(["https://[::1]:1", "http://[::1]:2"], { ca: "-----BEGIN CERTIFICATE-----" }),
    {
      message:
        /^http:\/\/\[::1\]:2: a CA certificate was given, but the server is reached over plain http:\/\//,
    },
  );
  const client = new ControlClient("http://[::1]:1,http://[::1]:2");
  t.deepEqual(client.servers, ["http://[::1]:1", "http://[::1]:2"]);
  t.is(client.base, "http://[::1]:1");
});

test("one server given: its failure is the call's, as before — no second try, no failover logged", async (t) => {
  const a = await rawServer(t, "status 500");
  const { events, log } = logger();
  const client = new ControlClient(a.url, { log });
  const err = await t.throwsAsync<ControlClientError>(client.sites(), {
    message: `control server ${a.url}: GET /v1/sites: 500 it says no`,
  });
  t.is(err?.status, 500);
  const down = new ControlClient(`http://127.0.0.1:${await freePort()}`, { log });
  await t.throwsAsync<ControlClientError>(down.health(), {
    message: /^control server http:\/\/127\.0\.0\.1:\d+: GET \/v1\/health: connect ECONNREFUSED/,
  });
  t.deepEqual(a.seen, ["GET /v1/sites"]);
  t.deepEqual(events, []);
});

test("a call the server may have acted on goes to the next only when sending it twice is safe", async (t) => {
  // The first server reads each request and drops the connection: the outcome is unknown.
  const a = await rawServer(t, "drop");
  const b = await rawServer(t);
  // A client of its own for each call: each starts at the first server.
  type Call = (c: ControlClient) => Promise<unknown>;
  const again: Record<string, Call> = {
    "GET /v1/health": (c) => c.health(),
    "GET /v1/sites": (c) => c.sites(),
    "PUT /v1/sites": (c) => c.putSites({}),
    "GET /v1/vms/vm": (c) => c.vm("vm"),
    "POST /v1/vms/vm/standby": (c) => c.registerStandby("vm", "2001:db8:a::5"),
    "DELETE /v1/vms/vm/standby/2001%3Adb8%3Aa%3A%3A5": (c) => c.withdrawStandby("vm", "2001:db8:a::5"),
    "POST /v1/vms/vm/attest": (c) => c.attest("vm", "2001:db8:a::5"),
    "POST /v1/bindings": (c) => c.activate(BINDING),
    "GET /v1/bindings/2001%3Adb8%3Af%3A%3A5": (c) => c.binding("2001:db8:f::5"),
    "GET /v1/bindings?since=3&wait=0": (c) => c.changes(3, 0),
  };
  for (const [request, call] of Object.entries(again)) {
    a.seen.length = b.seen.length = 0;
    await call(new ControlClient([a.url, b.url]));
    t.deepEqual([a.seen, b.seen], [[request], [request]], request);
  }
  const once: Record<string, Call> = {
    "POST /v1/vms": (c) => c.registerVm("vm", "2001:db8:f::5"),
    "POST /v1/peers": (c) => c.registerPeer("cn"),
    "POST /v1/vms/vm/reset": (c) => c.reset("vm"),
    "POST /v1/vms/vm/rollback": (c) => c.rollback("vm", { locator: "2001:db8:a::5", seq: 1 }),
  };
  for (const [request, call] of Object.entries(once)) {
    a.seen.length = b.seen.length = 0;
    const err = await t.throwsAsync<ControlClientError>(call(new ControlClient([a.url, b.url])), {
      message: `control server ${a.url}: ${request}: the server closed the connection without answering (if it serves https://, use an https:// URL)`,
    });
    t.is(err?.status, undefined);
    t.deepEqual([a.seen, b.seen], [[request], []], `${request} is not sent twice`);
  }
});

test("no connection at all: every call goes on, a registration too (no server saw it)", async (t) => {
  const b = await rawServer(t);
  const client = new ControlClient([`http://127.0.0.1:${await freePort()}`, b.url], { log: () => {} });
  await client.registerVm("vm", "2001:db8:f::5");
  await client.reset("vm");
  t.deepEqual(b.seen, ["POST /v1/vms", "POST /v1/vms/vm/reset"]);
});

test("a 5xx moves a call on; a 4xx and a 429 are the answer", async (t) => {
  const a = await rawServer(t, "status 500");
  const b = await rawServer(t);
  const client = () => new ControlClient([a.url, b.url]);
  for (const status of [500, 502, 503, 504]) {
    a.state.behaviour = `status ${status}`;
    await client().changes(0, 0);
  }
  t.is(b.seen.length, 4);
  // A reset answered 500 may have been written (etcd took it, then the answer failed): not sent again.
  a.state.behaviour = "status 500";
  const err = await t.throwsAsync<ControlClientError>(client().reset("vm"), {
    message: `control server ${a.url}: POST /v1/vms/vm/reset: 500 it says no`,
  });
  t.is(err?.status, 500);
  for (const status of [400, 401, 404, 409, 429]) {
    a.state.behaviour = `status ${status}`;
    const refused = await t.throwsAsync<ControlClientError>(client().activate(BINDING), {
      instanceOf: ControlClientError,
    });
    t.is(refused?.status, status);
  }
  t.is(b.seen.length, 4, "the other server was not asked again");
});

test("control_failover is logged when a server fails, not at each retry while it stays down; the live one is kept", async (t) => {
  const a = await rawServer(t, "drop");
  const b = await rawServer(t);
  const { events, log } = logger();
  const client = new ControlClient([a.url, b.url], { log });
  await client.health();
  t.is(client.base, b.url);
  await client.health();
  t.deepEqual(a.seen, ["GET /v1/health"], "calls go to the server that answered");
  t.deepEqual(events, [
    {
      event: "control_failover",
      from: a.url,
      to: b.url,
      method: "GET",
      path: "/v1/health",
      error: `control server ${a.url}: GET /v1/health: the server closed the connection without answering (if it serves https://, use an https:// URL)`,
    },
  ]);
  // Both down: each call fails with every server's reason; the move away from each is logged once.
  b.state.behaviour = "drop";
  for (let i = 0; i < 3; i++) {
    await t.throwsAsync<ControlClientError>(client.health(), {
      message: new RegExp(
        `^${literally(`no control server answered GET /v1/health (control server ${b.url}: GET /v1/health: `)}.*; ${literally(`control server ${a.url}: GET /v1/health: `)}.*\\)$`,
      ),
    });
  }
  t.deepEqual(
    events.map((e) => [e.from, e.to]),
    [
      [a.url, b.url],
      [b.url, a.url],
    ],
  );
  // The first is back: calls go there, and its next failure is news again — a server that died, not one that
  // speaks TLS, now that it has answered in plain HTTP.
  a.state.behaviour = "answer";
  await client.health();
  t.is(client.base, a.url);
  a.state.behaviour = "drop";
  b.state.behaviour = "answer";
  await client.health();
  t.is(events.length, 3);
  t.deepEqual(events[2], {
    ...events[0],
    error: `control server ${a.url}: GET /v1/health: the server closed the connection without answering`,
  });
});

test("a server that does not answer in time is passed over after the call's deadline; an abort stops the call", async (t) => {
  const a = await rawServer(t, "silent");
  const b = await rawServer(t);
  const client = new ControlClient([a.url, b.url], { timeoutMs: 200, log: () => {} });
  const started = Date.now();
  await client.health();
  const ms = Date.now() - started;
  t.true(ms >= 190 && ms < 1500, `${ms} ms`);
  // A long poll cut short by its caller is not taken elsewhere.
  const stop = new AbortController();
  setTimeout(() => stop.abort(), 100);
  await t.throwsAsync<ControlClientError>(new ControlClient([a.url, b.url]).changes(0, 20_000, stop.signal), {
    message: `control server ${a.url}: GET /v1/bindings?since=0&wait=20000: aborted`,
  });
  t.deepEqual(b.seen, ["GET /v1/health"]);
});

test("a long poll to a server that takes no connection goes on at the next within a call's deadline, not the poll's", async (t) => {
  // TCP accepted, the TLS handshake never answered: as a replica whose host is gone, the connection not made.
  const mute = await rawServer(t, "silent");
  const b = await rawServer(t);
  const stalled = mute.url.replace("http:", "https:");
  const { events, log } = logger();
  const client = new ControlClient([stalled, b.url], { timeoutMs: 300, log });
  const started = Date.now();
  await client.changes(0, 20_000);
  const ms = Date.now() - started;
  t.true(ms >= 290 && ms < 2000, `${ms} ms`);
  t.deepEqual(b.seen, ["GET /v1/bindings?since=0&wait=20000"]);
  t.is(
    events[0]?.error,
    `control server ${stalled}: GET /v1/bindings?since=0&wait=20000: no connection in time`,
  );
});

test("with three servers the later tries pause briefly; a relay prepared before the pause names each server", async (t) => {
  const c = await rawServer(t);
  const [dead1, dead2] = [`http://127.0.0.1:${await freePort()}`, `http://127.0.0.1:${await freePort()}`];
  const client = new ControlClient([dead1, dead2, c.url], { failoverPauseMs: 150, log: () => {} });
  const send = client.prepareActivate(BINDING);
  const started = Date.now();
  await send();
  t.true(Date.now() - started >= 140);
  t.deepEqual(c.seen, ["POST /v1/bindings"]);
  t.deepEqual(c.hosts, [c.url.slice("http://".length)], "the request rendered for the server it went to");
  // A copy of an activation the first server took before it died: 409 already-active from the next.
  const a = await rawServer(t, "drop");
  const b = await rawServer(t, "status 409");
  const relay = new ControlClient([a.url, b.url], { log: () => {} });
  const err = await t.throwsAsync<ControlClientError>(relay.prepareActivate(BINDING)(), {
    instanceOf: ControlClientError,
  });
  t.like(err, { status: 409, code: "already-active" });
});

test("the watch's kept connection to a server that dies, between polls or under one: the watch goes on at the next", async (t) => {
  const [a, b, c] = [await inProcess(t), await inProcess(t), await inProcess(t)];
  await b.service.registerVm("vm1", "fd00:1::1");
  await c.service.registerVm("vm1", "fd00:1::1");
  await c.service.registerVm("vm2", "fd00:1::2");
  const { events, log } = logger();
  const watcher = new ControlClient([a.url, b.url, c.url], { token: "adm", log });
  await watcher.changes(0, 0);
  await watcher.changes(0, 0);
  t.is(a.seen.connections, 1);
  // Dead while its connection is kept: the next poll is written on it before the client has seen it close.
  a.kill();
  t.is((await watcher.changes(0, 5000)).revision, 1);
  t.is(watcher.base, b.url);
  // Dead while a poll waits on its kept connection.
  const polling = watcher.changes(1, 5000);
  await new Promise((r) => setTimeout(r, 50));
  b.kill();
  t.like(await polling, { revision: 2, changes: [{ revision: 2 }] });
  t.is(watcher.base, c.url);
  t.is(b.seen.connections, 1, "both polls at b on one connection");
  t.deepEqual(
    events.map((e) => [e.event, e.from, e.to]),
    [
      ["control_failover", a.url, b.url],
      ["control_failover", b.url, c.url],
    ],
  );
});

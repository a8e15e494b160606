// The client's transport against a raw socket server: the HTTP/1.1 request it writes, one deadline per call,
// a caller's abort, and an answer cut short. The watch's kept connection, against the real server too: one
// connection for many polls, and a new one when the server closed the kept one.
import { createServer, type Socket } from "node:net";
import type { AddressInfo } from "node:net";
import test, { type ExecutionContext } from "ava";
import { ControlClient } from "../src/index.js";
import { inProcess } from "./client-replicas.js";

/** A server on [::1] that hands each connection's bytes so far to `answer`, which may write back. */
async function rawServer(t: ExecutionContext, answer: (request: string, socket: Socket) => void) {
  const sockets = new Set<Socket>();
  const server = createServer((s) => {
    sockets.add(s);
    let text = "";
    s.on("data", (c) => {
      text += String(c);
      answer(text, s);
    });
    s.on("error", () => {});
  });
  await new Promise<void>((r) => server.listen(0, "::1", () => r()));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  return `http://[::1]:${(server.address() as AddressInfo).port}`;
}

test("a call is one HTTP/1.1 request on a connection of its own: host, token, JSON body, Connection: close", async (t) => {
  let seen = "";
  const url = await rawServer(t, (request, s) => {
    if (!request.includes("\r\n\r\n") || !request.endsWith("}")) return;
    seen = request;
    s.end('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 14\r\n\r\n{"revision":7}');
  });
  const client = new ControlClient(url, { token: "tok-0123456789abcdef" });
  const b = { vm: "vm", hoa: "2001:db8:f::5", locator: "2001:db8:a::5", seq: 1, expiresAt: 1, sig: "s" };
  t.deepEqual(await client.activate(b as never), { revision: 7 });
  const [head, body] = seen.split("\r\n\r\n");
  t.deepEqual(head?.split("\r\n"), [
    "POST /v1/bindings HTTP/1.1",
    `Host: ${url.slice("http://".length)}`,
    "Authorization: Bearer tok-0123456789abcdef",
    "Content-Type: application/json",
    `Content-Length: ${Buffer.byteLength(body ?? "")}`,
    "Connection: close",
  ]);
  t.deepEqual(JSON.parse(body ?? ""), b);
});

test("one deadline per call however the server trickles; a caller's abort cuts a long poll; a cut answer is named", async (t) => {
  const url = await rawServer(t, (request, s) => {
    if (!request.includes("\r\n\r\n")) return;
    if (request.startsWith("GET /v1/health")) s.write("HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{");
    if (request.startsWith("GET /v1/sites")) s.end("HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{");
  });
  const client = new ControlClient(url, { timeoutMs: 300 });
  const t0 = Date.now();
  await t.throwsAsync(client.health(), {
    message: /^control server http:\/\/\[::1\]:\d+: GET \/v1\/health: no answer in time$/,
  });
  t.true(Date.now() - t0 < 1000);
  const stop = new AbortController();
  setTimeout(() => stop.abort(), 100);
  await t.throwsAsync(client.changes(0, 20_000, stop.signal), {
    message: /GET \/v1\/bindings\?since=0&wait=20000: aborted$/,
  });
  await t.throwsAsync(client.sites(), { message: /GET \/v1\/sites: an answer cut short$/ });
});

test("the watch keeps one connection from poll to poll, across changes; other calls close theirs", async (t) => {
  const { service, seen, url } = await inProcess(t);
  const watcher = new ControlClient(url, { token: "adm" });
  let { revision } = await watcher.changes(0, 0);
  for (let i = 1; i <= 5; i++) {
    const polling = watcher.changes(revision, 5000);
    await new Promise((r) => setTimeout(r, 20));
    await service.registerVm(`vm${i}`, `fd00:1::${i}`);
    const answer = await polling;
    t.is(answer.changes.at(-1)?.binding.hoa, `fd00:1::${i}`);
    revision = answer.revision;
  }
  t.is(seen.connections, 1, "six polls, five of them woken by a change: one connection");
  await watcher.health();
  await watcher.sites().catch(() => undefined);
  t.is(seen.connections, 3, "a call that is not a poll has a connection of its own, as before");
  await watcher.changes(revision, 0);
  t.is(seen.connections, 3, "and the watch's is still there");
});

test("a poll on a kept connection that is aborted ends there: nothing is sent again", async (t) => {
  const { seen, url } = await inProcess(t);
  const watcher = new ControlClient(url, { token: "adm" });
  await watcher.changes(0, 0);
  for (let i = 0; i < 2; i++) {
    const stop = new AbortController();
    setTimeout(() => stop.abort(), 100);
    await t.throwsAsync(watcher.changes(0, 20_000, stop.signal), { message: /aborted$/ });
  }
  await new Promise((r) => setTimeout(r, 300));
  // Before: the close after each settled poll sent the same poll again on a new connection (which then held
  // one of the token's long-poll slots for its whole wait).
  t.is(
    seen.connections,
    2,
    "the first aborted poll went on the kept connection, the second on a new one; nothing else",
  );
});

test("a connection the server closed while kept: the next poll goes on a new one, whether it saw the close or not", async (t) => {
  const { server, seen, url } = await inProcess(t);
  const watcher = new ControlClient(url, { token: "adm" });
  await watcher.changes(0, 0);
  // The client has seen the server close it (its keep-alive timeout, as at the server's shutdown).
  server.closeIdleConnections();
  await new Promise((r) => setTimeout(r, 50));
  t.deepEqual(await watcher.changes(0, 0), { revision: 0, changes: [] });
  t.is(seen.connections, 2);
  // It has not: the poll is written on the connection the server has just closed, and goes again.
  server.closeIdleConnections();
  t.deepEqual(await watcher.changes(0, 0), { revision: 0, changes: [] });
  t.is(seen.connections, 3);
});

test("a poll the server drops unanswered on the kept connection goes again on a new one, once", async (t) => {
  const answer = 'HTTP/1.1 200 OK\r\nContent-Length: 27\r\n\r\n{"revision":1,"changes":[]}';
  let connections = 0;
  let answered = 0;
  let answers = 2;
  const requests: string[] = [];
  const url = await rawServer(t, (text, s) => {
    if (!text.endsWith("\r\n\r\n")) return;
    const on = text.split("\r\n\r\n").length - 1;
    if (on === 1) connections += 1;
    requests.push(text.split("\r\n\r\n").at(-2) ?? "");
    // The first request on each connection is answered (while answers last); the next, on a kept one, dropped.
    if (on === 1 && answered < answers) {
      answered += 1;
      s.write(answer);
    } else s.destroy();
  });
  const client = new ControlClient(url);
  t.deepEqual(await client.changes(0, 1000), { revision: 1, changes: [] });
  t.true(requests[0]?.includes("\r\nConnection: keep-alive"));
  t.deepEqual(await client.changes(1, 1000), { revision: 1, changes: [] });
  t.is(connections, 2, "dropped on the kept connection, answered on a new one");
  answers = 0;
  await t.throwsAsync(client.changes(1, 1000), {
    message: /the server closed the connection without answering$/,
  });
  t.is(connections, 3, "dropped on the kept one and on the new one: no third try");
});

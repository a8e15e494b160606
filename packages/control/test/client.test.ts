// The client's transport against a raw socket server: the HTTP/1.1 request it writes, one deadline per call,
// a caller's abort, and an answer cut short.
import { createServer, type Socket } from "node:net";
import type { AddressInfo } from "node:net";
import test, { type ExecutionContext } from "ava";
import { ControlClient } from "../src/index.js";

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

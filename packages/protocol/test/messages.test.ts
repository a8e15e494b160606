import test from "ava";
import {
  encodeMessage,
  MESSAGE_MAX_BYTES,
  parseAnswer,
  parseRequest,
  type PrepareRequest,
} from "../src/index.js";

const request: PrepareRequest = {
  v: 1,
  kind: "prepare",
  id: "m-20261122-1",
  site: "b",
  prefix: "2001:DB8:B::/64",
  gateway: { linkLocal: "FE80::B:1", mac: "02:00:00:00:0B:01" },
  secondaryMac: "00:16:3E:00:00:02",
  timeoutMs: 10_000,
};

test("a prepare request round-trips and comes out canonical", (t) => {
  const r = parseRequest(encodeMessage(request));
  t.true(r.ok);
  if (!r.ok || r.value.kind !== "prepare") return;
  t.is(r.value.prefix, "2001:db8:b::/64");
  t.is(r.value.gateway.linkLocal, "fe80::b:1");
  t.is(r.value.gateway.mac, "02:00:00:00:0b:01");
});

test("malformed messages are refused with a reason", (t) => {
  const reason = (text: string) => {
    const r = parseRequest(text);
    return r.ok ? "accepted" : r.reason;
  };
  t.regex(reason("not json"), /not JSON/);
  t.regex(reason(JSON.stringify({ ...request, v: 2 })), /protocol version 2; this side speaks 1/);
  t.regex(
    reason(JSON.stringify({ ...request, gateway: { linkLocal: "2001:db8::1", mac: "02:00:00:00:0b:01" } })),
    /not link-local/,
  );
  t.regex(reason(JSON.stringify({ ...request, prefix: "2001:db8:b::/48" })), /must be a \/64/);
  t.regex(reason(JSON.stringify({ ...request, id: "bad id!" })), /id: must be/);
  t.regex(reason(JSON.stringify({ ...request, extra: 1 })), /malformed/);
  t.regex(reason(`{"pad":"${"x".repeat(MESSAGE_MAX_BYTES)}"}`), /larger than/);
  const answer = parseAnswer(
    JSON.stringify({ v: 1, id: "m1", status: "prepared", moa: "fe80::1", ifname: "eth1" }),
  );
  t.false(answer.ok);
  t.regex(answer.ok ? "" : answer.reason, /link-local, not a routable address/);
});

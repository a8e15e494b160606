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

test("a prepared answer may carry the guest's activation of its MoA; checked for shape, size and locator", (t) => {
  const activation = {
    vm: "web1",
    hoa: "2001:DB8:F::5",
    locator: "2001:db8:b:0:216:3eff:fe00:2",
    seq: 7,
    expiresAt: 1_800_000_000_000,
    kid: "AAAAAAAAAAA",
    sig: "A".repeat(86),
  };
  const answer = {
    v: 1,
    id: "m1",
    status: "prepared",
    moa: "2001:db8:b:0:216:3eff:fe00:2",
    ifname: "eth1",
    activation,
  };
  const r = parseAnswer(JSON.stringify(answer));
  t.true(r.ok, r.ok ? "" : r.reason);
  t.like(r.ok ? r.value : {}, { activation: { hoa: "2001:db8:f::5", seq: 7 } });
  const reason = (a: unknown) => {
    const x = parseAnswer(JSON.stringify({ ...answer, activation: a }));
    return x.ok ? "accepted" : x.reason;
  };
  t.regex(reason({ ...activation, locator: "2001:db8:a::5" }), /activation\.locator: .*another locator/);
  t.regex(reason({ ...activation, sig: "A".repeat(129) }), /activation\.sig/);
  t.regex(reason({ ...activation, seq: 0 }), /activation\.seq/);
  t.regex(reason({ ...activation, extra: 1 }), /malformed/);
  t.regex(reason({ ...activation, vm: "a b" }), /activation\.vm/);
  const { activation: _none, ...without } = answer;
  t.true(parseAnswer(JSON.stringify(without)).ok, "the activation is optional");
});

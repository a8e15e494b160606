import test from "ava";
import {
  FakeNft,
  MobilityError,
  renderCorrespondent,
  renderCorrespondentSwitch,
  renderMobileNode,
  renderRemoval,
} from "../src/index.js";

test("mobile node: one transaction that replaces the table; NDP accepted before any rewrite", (t) => {
  const script = renderMobileNode({
    hoa: "FD00:1::5",
    locators: [
      { ifname: "eth0", moa: "2001:db8:a::5" },
      { ifname: "eth1", moa: "2001:db8:b:0:216:3eff:fe00:2" },
    ],
  });
  const lines = script.split("\n");
  t.deepEqual(lines.slice(0, 3), ["table ip6 xenroam {}", "delete table ip6 xenroam", "table ip6 xenroam {"]);
  t.true(
    script.includes(
      "ip6 daddr { 2001:db8:a::5, 2001:db8:b:0:216:3eff:fe00:2 } notrack ip6 daddr set fd00:1::5",
    ),
    "both own locators are accepted: the standby before the switch, the old one for packets in flight",
  );
  t.true(
    script.includes(
      'ip6 saddr fd00:1::5 notrack ip6 saddr set oifname map { "eth0" : 2001:db8:a::5, "eth1" : 2001:db8:b:0:216:3eff:fe00:2 }',
    ),
    "the source follows the interface the kernel routes by",
  );
  for (const chain of ["ingress", "egress"]) {
    const body = script.slice(script.indexOf(`chain ${chain}`));
    t.true(body.indexOf("nd-neighbor-solicit") < body.indexOf("notrack"), `NDP first in ${chain}`);
  }
  t.is(
    renderMobileNode({ hoa: "fd00:1::5", locators: [] }),
    "table ip6 xenroam {}\ndelete table ip6 xenroam\ntable ip6 xenroam {\n}\n",
  );
});

test("correspondent: maps HoA to the active locator, every locator back to its HoA", (t) => {
  const script = renderCorrespondent([
    { hoa: "fd00:1::5", active: "2001:db8:b::2", locators: ["2001:db8:a::1", "2001:db8:b::2"] },
  ]);
  t.true(
    script.includes(
      "map hoa_to_locator { type ipv6_addr : ipv6_addr; elements = { fd00:1::5 : 2001:db8:b::2 }; }",
    ),
  );
  t.true(
    script.includes(
      "map locator_to_hoa { type ipv6_addr : ipv6_addr; elements = { 2001:db8:b::2 : fd00:1::5, 2001:db8:a::1 : fd00:1::5 }; }",
    ),
  );
  t.true(script.includes("ip6 daddr set ip6 daddr map @hoa_to_locator"));
  t.true(renderCorrespondent([]).includes("map hoa_to_locator { type ipv6_addr : ipv6_addr; }"));
});

test("bad bindings are refused with the reason", (t) => {
  const one = (ifname: string, moa: string) => [{ ifname, moa }];
  t.throws(() => renderMobileNode({ hoa: "fe80::1", locators: one("eth0", "2001:db8::2") }), {
    instanceOf: MobilityError,
    message: /link-local/,
  });
  t.throws(() => renderMobileNode({ hoa: "fd00::1", locators: one("eth0", "fd00::1") }), {
    message: /must differ/,
  });
  t.throws(() => renderMobileNode({ hoa: "nope", locators: [] }), {
    message: /HoA: "nope" is not an IPv6 address/,
  });
  t.throws(() => renderMobileNode({ hoa: "fd00::1", locators: one('eth0" accept', "2001:db8::2") }), {
    message: /interface "eth0" accept"/,
  });
  t.throws(
    () =>
      renderMobileNode({
        hoa: "fd00::1",
        locators: [...one("eth0", "2001:db8::2"), ...one("eth1", "2001:db8::2")],
      }),
    { message: /given for two interfaces/ },
  );
  t.throws(
    () =>
      renderCorrespondent([
        { hoa: "fd00::1", active: "2001:db8::9", locators: [] },
        { hoa: "fd00::2", active: "2001:db8::9", locators: [] },
      ]),
    { message: /locator 2001:db8::9 is claimed by fd00::1 and fd00::2/ },
  );
  t.is(renderRemoval(), "table ip6 xenroam {}\ndelete table ip6 xenroam\n");
});

test("correspondent fast switch: additions only (an override rule at the head, new ingress locators)", (t) => {
  t.is(
    renderCorrespondentSwitch("fd00:1::5", "2001:db8:b::2", ["2001:db8:B::2"]),
    "insert rule ip6 xenroam egress ip6 daddr fd00:1::5 notrack ip6 daddr set 2001:db8:b::2\n" +
      "add element ip6 xenroam locator_to_hoa { 2001:db8:b::2 : fd00:1::5 }\n",
  );
  t.false(renderCorrespondentSwitch("fd00:1::5", "2001:db8:b::2", []).includes("delete"));
  t.throws(() => renderCorrespondentSwitch("fd00:1::5", "fe80::1", []), { message: /link-local/ });
});

test("the fake nft reads a map's elements back from the last script, as the real one lists them", async (t) => {
  const nft = new FakeNft();
  t.is(await nft.mapElements("xenroam", "hoa_to_locator"), undefined);
  await nft.apply(
    renderCorrespondent([{ hoa: "2001:db8:f::5", active: "2001:db8:b::5", locators: ["2001:db8:b::5"] }]),
  );
  t.deepEqual(
    await nft.mapElements("xenroam", "hoa_to_locator"),
    new Map([["2001:db8:f::5", "2001:db8:b::5"]]),
  );
});

import test from "ava";
import { RadvdConfigError, radvdIntervalProblem, renderRadvdConf } from "../src/index.js";

test("renders fast-interval radvd config with the impersonated source address", (t) => {
  const conf = renderRadvdConf([
    {
      ifname: "xr-site-b",
      prefix: "2001:db8:b::/64",
      minIntervalMs: 30,
      maxIntervalMs: 70,
      sourceLinkLocal: "FE80::B:1",
    },
  ]);
  t.regex(conf, /interface xr-site-b \{/);
  t.regex(conf, /MinRtrAdvInterval 0\.03;/);
  t.regex(conf, /MaxRtrAdvInterval 0\.07;/);
  t.regex(conf, /AdvIntervalOpt on;/);
  t.regex(conf, /prefix 2001:db8:b::\/64 \{/);
  t.regex(conf, /AdvRASrcAddress \{\n {4}fe80::b:1;/);
  t.notRegex(conf, /AdvSourceLLAddress/, "radvd's default (on) unless asked");
});

test("a staging RA without the router's link-layer address (sourceLinkLayer false)", (t) => {
  const base = { ifname: "xr-b", prefix: "2001:db8:b::/64", minIntervalMs: 30, maxIntervalMs: 70 };
  t.regex(renderRadvdConf([{ ...base, sourceLinkLayer: false }]), /\n {2}AdvSourceLLAddress off;\n/);
  t.notRegex(renderRadvdConf([{ ...base, sourceLinkLayer: true }]), /AdvSourceLLAddress/);
});

test("refuses what radvd would refuse, with the reason", (t) => {
  t.regex(radvdIntervalProblem(10, 70) ?? "", /floor of 30 ms/);
  t.regex(radvdIntervalProblem(3000, 3500) ?? "", /at most 0\.75/);
  t.is(radvdIntervalProblem(3000, 4000), undefined);
  const base = { ifname: "lan-a", prefix: "2001:db8:a::/64", minIntervalMs: 3000, maxIntervalMs: 4000 };
  t.throws(() => renderRadvdConf([base, base]), { instanceOf: RadvdConfigError, message: /appears twice/ });
  t.throws(() => renderRadvdConf([{ ...base, prefix: "2001:db8::/48" }]), { message: /needs a \/64/ });
  t.throws(() => renderRadvdConf([{ ...base, sourceLinkLocal: "2001:db8::1" }]), {
    message: /not link-local/,
  });
  t.throws(() => renderRadvdConf([{ ...base, ifname: "a-name-that-is-too-long" }]), {
    message: /at most 15/,
  });
});

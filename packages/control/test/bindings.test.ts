import test from "ava";
import {
  BindingBook,
  type BindingClaim,
  exportPrivateKey,
  exportPublicKey,
  generateSigningKeys,
  importPrivateKey,
  importPublicKey,
  signBinding,
} from "../src/index.js";

const server = generateSigningKeys();
const intruder = generateSigningKeys();
const NOW = 1_800_000_000_000;
const owners = new Map([
  ["fd00:1::5", "vm"],
  ["fd00:1::6", "other"],
]);
const book = () =>
  new BindingBook(
    server.publicKey,
    (hoa) => owners.get(hoa),
    () => NOW,
  );
const claim = (over: Partial<BindingClaim> = {}): BindingClaim => ({
  vm: "vm",
  hoa: "fd00:1::5",
  locator: "2001:db8:b:0:216:3eff:fe00:2",
  seq: 2,
  expiresAt: NOW + 60_000,
  ...over,
});

test("a binding signed by the server, fresh and newer, becomes active", (t) => {
  const b = book();
  t.deepEqual(b.accept(signBinding(server.privateKey, claim())), { ok: true });
  t.like(b.get("FD00:1::5"), { locator: "2001:db8:b:0:216:3eff:fe00:2", seq: 2 });
  t.deepEqual(b.accept(signBinding(server.privateKey, claim({ seq: 3, locator: "2001:db8:a::9" }))), {
    ok: true,
  });
  t.is(b.get("fd00:1::5")?.locator, "2001:db8:a::9");
});

test("forged, replayed, expired, tampered and other-VM bindings are refused with a reason", (t) => {
  const b = book();
  b.accept(signBinding(server.privateKey, claim({ seq: 5 })));
  const refused = (x: ReturnType<typeof signBinding>) => {
    const v = b.accept(x);
    return v.ok ? "accepted" : v.reason;
  };
  t.regex(refused(signBinding(intruder.privateKey, claim({ seq: 6 }))), /signature does not verify/);
  t.regex(
    refused(signBinding(server.privateKey, claim({ seq: 5 }))),
    /replayed or stale: sequence 5 is not after 5/,
  );
  t.regex(refused(signBinding(server.privateKey, claim({ seq: 4 }))), /replayed or stale/);
  t.regex(refused(signBinding(server.privateKey, claim({ seq: 6, expiresAt: NOW }))), /expired/);
  t.regex(
    refused({ ...signBinding(server.privateKey, claim({ seq: 6 })), locator: "2001:db8:666::1" }),
    /signature/,
  );
  t.regex(
    refused(signBinding(server.privateKey, claim({ seq: 9, hoa: "fd00:1::6" }))),
    /belongs to other, not vm/,
  );
  t.regex(refused(signBinding(server.privateKey, claim({ seq: 9, hoa: "fd00:9::1" }))), /not registered/);
  t.regex(
    refused({ ...signBinding(server.privateKey, claim({ seq: 9 })), hoa: "not-an-address" }),
    /malformed/,
  );
  t.is(b.get("fd00:1::5")?.seq, 5, "nothing refused changed the active binding");
});

test("keys survive a PEM round trip", (t) => {
  const priv = importPrivateKey(exportPrivateKey(server.privateKey));
  const pub = importPublicKey(exportPublicKey(server.publicKey));
  const b = new BindingBook(
    pub,
    (hoa) => owners.get(hoa),
    () => NOW,
  );
  t.deepEqual(b.accept(signBinding(priv, claim())), { ok: true });
  t.throws(() => signBinding(priv, claim({ seq: 0 })), { message: /positive whole number/ });
});

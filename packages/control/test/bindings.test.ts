import test from "ava";
import {
  BindingBook,
  type BindingClaim,
  exportPrivateKey,
  exportPublicKey,
  generateSigningKeys,
  importPrivateKey,
  importPublicKey,
  keyId,
  canonicalPayload,
  signBinding,
  type SignedBinding,
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
  t.regex(refused(signBinding(intruder.privateKey, claim({ seq: 6 }))), /not the server's key/);
  // The intruder claims the server's key id: the signature is what fails.
  t.regex(
    refused({ ...signBinding(intruder.privateKey, claim({ seq: 6 })), kid: keyId(server.publicKey) }),
    /signature does not verify/,
  );
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

test("the signed encoding is typed and length-prefixed: no two claims encode alike, textual forms do not matter", (t) => {
  const kid = keyId(server.publicKey);
  const enc = (over: Partial<BindingClaim>) => canonicalPayload(claim(over), kid).toString("hex");
  // The same address written two ways is the same claim; a name that would smuggle a separator is not.
  t.is(enc({ locator: "2001:DB8:B::216:3EFF:FE00:2" }), enc({ locator: "2001:db8:b:0:216:3eff:fe00:2" }));
  t.not(enc({ vm: "vm\nfd00:1::5" }), enc({ vm: "vm" }));
  t.not(enc({ seq: 12, expiresAt: 3 }), enc({ seq: 1, expiresAt: 23 }));
  const bytes = canonicalPayload(claim(), kid);
  t.is(bytes.subarray(0, 19).toString(), "xenroam-binding-v2\0", "a domain tag");
  // kid (8), vm (2), hoa (16), locator (16), seq (8), expiresAt (8): each with a 3-byte tag and length.
  t.is(bytes.length, 19 + 6 * 3 + 8 + 2 + 16 + 16 + 8 + 8);
  t.is(kid.length, 11);
});

test("malleated signatures, mistyped fields and unknown keys are refused before any verification", (t) => {
  const b = book();
  const good = signBinding(server.privateKey, claim({ seq: 7 }));
  const refused = (x: unknown) => {
    const v = b.accept(x as SignedBinding);
    return v.ok ? "accepted" : v.reason;
  };
  // base64url of 64 bytes: the last character carries 4 spare bits; setting them is another text, same bytes.
  const last = good.sig.at(-1) as string;
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  const twin = alphabet[alphabet.indexOf(last) + 1] as string;
  t.deepEqual(Buffer.from(good.sig.slice(0, -1) + twin, "base64url"), Buffer.from(good.sig, "base64url"));
  t.regex(refused({ ...good, sig: good.sig.slice(0, -1) + twin }), /canonical base64url/);
  t.regex(refused({ ...good, sig: `${good.sig}=` }), /86 characters/);
  t.regex(refused({ ...good, sig: good.sig.replace(/^./, "+") }), /86 characters/);
  t.regex(refused({ ...good, seq: "7" }), /"seq"/);
  t.regex(refused({ ...good, seq: 7.5 }), /"seq"/);
  t.regex(refused({ ...good, expiresAt: `${good.expiresAt}` }), /"expiresAt"/);
  t.regex(refused({ ...good, vm: ["vm"] }), /"vm"/);
  t.regex(refused({ ...good, extra: 1 }), /unknown field "extra"/);
  t.regex(refused({ ...good, kid: undefined }), /"kid"/);
  t.regex(refused({ ...good, kid: keyId(intruder.publicKey) }), /not the server's key/);
  t.regex(refused(null), /not an object/);
  t.deepEqual(b.accept(good), { ok: true }, "the genuine one still passes");
});

test("with a standby list, a binding is taken only for a current standby at the sequence issued for it", (t) => {
  const standbys = new Map([["2001:db8:b:0:216:3eff:fe00:2", 4]]);
  const b = new BindingBook(
    server.publicKey,
    (hoa) => owners.get(hoa),
    () => NOW,
    (_hoa, locator) => standbys.get(locator),
  );
  const refused = (x: SignedBinding) => {
    const v = b.accept(x);
    return v.ok ? "accepted" : v.reason;
  };
  t.regex(refused(signBinding(server.privateKey, claim({ seq: 3 }))), /issued sequence 4, not 3/);
  t.regex(
    refused(signBinding(server.privateKey, claim({ seq: 4, locator: "2001:db8:b::99" }))),
    /not a current standby/,
  );
  t.deepEqual(b.accept(signBinding(server.privateKey, claim({ seq: 4 }))), { ok: true });
});

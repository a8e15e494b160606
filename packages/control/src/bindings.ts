// Authorised bindings: the control server signs (Ed25519) what a HoA's locator is, with a sequence number
// and an expiry. Correspondents and the server accept a binding only if it is signed by the server, not
// expired, newer than any they have seen for that HoA, and about a HoA that belongs to the VM it names.

import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  sign,
  verify,
} from "node:crypto";
import { canonicalIpv6, ipv6ToBytes, parseIpv6 } from "@xenroam/core";

export interface BindingClaim {
  /** The VM the HoA belongs to. */
  readonly vm: string;
  readonly hoa: string;
  /** The locator (MoA) packets for the HoA go to once this binding is active. */
  readonly locator: string;
  /** Strictly increasing per HoA; a binding with a lower or equal number is a replay. */
  readonly seq: number;
  /** Milliseconds since the epoch after which the binding is void. */
  readonly expiresAt: number;
}

export interface SignedBinding extends BindingClaim {
  /** The signing key's id (keyId): which key a verifier needs, checked before the signature. */
  readonly kid: string;
  /** Ed25519 signature over canonicalPayload(claim, kid), unpadded base64url. */
  readonly sig: string;
}

export type Verdict = { readonly ok: true } | { readonly ok: false; readonly reason: string };

/** What the signed bytes start with: the format's name and version (a v1 signature never verifies as v2). */
const DOMAIN = Buffer.from("xenroam-binding-v2\0");

/** Field tags of the signed encoding, in the order they are written. */
const FIELD = { kid: 1, vm: 2, hoa: 3, locator: 4, seq: 5, expiresAt: 6 } as const;

function field(tag: number, value: Buffer): Buffer {
  const head = Buffer.alloc(3);
  head.writeUInt8(tag, 0);
  head.writeUInt16BE(value.length, 1);
  return Buffer.concat([head, value]);
}

function u64(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(n));
  return b;
}

/**
 * The exact bytes that are signed: one canonical, typed, length-prefixed encoding — the domain, then each
 * field as tag (1 byte), length (2 bytes) and value: the key id's 8 bytes, the VM's name in UTF-8, both
 * addresses as their 16 bytes, the sequence and the expiry as unsigned 64-bit big-endian integers. No two
 * different claims encode alike (no separator to smuggle, no textual form of an address or number to vary).
 */
export function canonicalPayload(c: BindingClaim, kid: string): Buffer {
  if (!Number.isSafeInteger(c.seq) || c.seq < 0) throw new Error("seq must be a whole number");
  if (!Number.isSafeInteger(c.expiresAt) || c.expiresAt < 0)
    throw new Error("expiresAt must be a time in ms");
  return Buffer.concat([
    DOMAIN,
    field(FIELD.kid, strictBase64url(kid, "kid")),
    field(FIELD.vm, Buffer.from(c.vm, "utf8")),
    field(FIELD.hoa, Buffer.from(ipv6ToBytes(parseIpv6(c.hoa)))),
    field(FIELD.locator, Buffer.from(ipv6ToBytes(parseIpv6(c.locator)))),
    field(FIELD.seq, u64(c.seq)),
    field(FIELD.expiresAt, u64(c.expiresAt)),
  ]);
}

/** Decodes base64url that is in its one canonical form (unpadded, no stray bits); throws otherwise. */
export function strictBase64url(text: string, what: string): Buffer {
  const bytes = Buffer.from(text, "base64url");
  if (!/^[A-Za-z0-9_-]*$/.test(text) || bytes.toString("base64url") !== text)
    throw new Error(`${what} is not canonical base64url`);
  return bytes;
}

const KIDS = new WeakMap<KeyObject, string>();

/** A key's id: the first 8 bytes of the SHA-256 of its public half (SPKI, DER), base64url (11 characters). */
export function keyId(key: KeyObject): string {
  let kid = KIDS.get(key);
  if (kid === undefined) {
    const pub = key.type === "private" ? createPublicKey(key) : key;
    const der = pub.export({ type: "spki", format: "der" });
    kid = createHash("sha256").update(der).digest().subarray(0, 8).toString("base64url");
    KIDS.set(key, kid);
  }
  return kid;
}

export interface KeyPair {
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
}

export function generateSigningKeys(): KeyPair {
  return generateKeyPairSync("ed25519");
}

/** PEM round trips, so the server's key lives in a file and correspondents are given its public half. */
export const exportPublicKey = (k: KeyObject) => k.export({ type: "spki", format: "pem" }).toString();
export const exportPrivateKey = (k: KeyObject) => k.export({ type: "pkcs8", format: "pem" }).toString();
export const importPublicKey = (pem: string) => createPublicKey(pem);
export const importPrivateKey = (pem: string) => createPrivateKey(pem);

export function signBinding(privateKey: KeyObject, claim: BindingClaim): SignedBinding {
  if (!Number.isSafeInteger(claim.seq) || claim.seq < 1)
    throw new Error("seq must be a positive whole number");
  const kid = keyId(privateKey);
  const { vm, hoa, locator, seq, expiresAt } = claim;
  const sig = sign(null, canonicalPayload(claim, kid), privateKey).toString("base64url");
  return { vm, hoa, locator, seq, expiresAt, kid, sig };
}

/** An Ed25519 signature, 64 bytes, in unpadded base64url: 86 characters of its alphabet. */
const SIG = /^[A-Za-z0-9_-]{86}$/;
/** A key id, 8 bytes: 11 characters. */
const KID = /^[A-Za-z0-9_-]{11}$/;
const VM_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const FIELDS = new Set(["vm", "hoa", "locator", "seq", "expiresAt", "kid", "sig"]);

/**
 * What is wrong with the shape of something that claims to be a signed binding (from JSON off the wire:
 * anything at all), before any parsing or verification; undefined when its fields have the right types and
 * sizes.
 */
export function bindingShapeProblem(b: unknown): string | undefined {
  if (typeof b !== "object" || b === null || Array.isArray(b)) return "not an object";
  const o = b as Record<string, unknown>;
  const extra = Object.keys(o).find((k) => !FIELDS.has(k));
  if (extra !== undefined) return `unknown field "${extra.slice(0, 32)}"`;
  for (const k of ["vm", "hoa", "locator"] as const) {
    const v = o[k];
    if (typeof v !== "string" || v.length === 0 || v.length > (k === "vm" ? 64 : 45))
      return `"${k}" must be a string of at most ${k === "vm" ? 64 : 45} characters`;
  }
  // The server names VMs this way only (service.ts): anything else, a lone surrogate included, is no claim.
  if (!VM_NAME.test(o.vm as string)) return '"vm" must be a VM name (letters, digits, _ . -)';
  if (!Number.isSafeInteger(o.seq) || (o.seq as number) < 0) return '"seq" must be a whole number';
  if (!Number.isSafeInteger(o.expiresAt) || (o.expiresAt as number) < 0)
    return '"expiresAt" must be a time in ms';
  if (typeof o.kid !== "string" || !KID.test(o.kid) || !canonical(o.kid))
    return '"kid" must be 11 characters of canonical base64url';
  if (typeof o.sig !== "string" || !SIG.test(o.sig) || !canonical(o.sig))
    return '"sig" must be 86 characters of canonical base64url';
  return undefined;
}

const canonical = (text: string): boolean => Buffer.from(text, "base64url").toString("base64url") === text;

/** Whether `b` is signed by `publicKey`: its key id first, then the signature over the canonical bytes. */
export function signatureValid(publicKey: KeyObject, b: SignedBinding): boolean {
  try {
    if (b.kid !== keyId(publicKey)) return false;
    return verify(null, canonicalPayload(b, b.kid), publicKey, strictBase64url(b.sig, "sig"));
  } catch {
    return false;
  }
}

export interface ActiveBinding {
  readonly vm: string;
  readonly hoa: string;
  readonly locator: string;
  readonly seq: number;
  readonly expiresAt: number;
}

/**
 * What a correspondent (or the server) holds: the newest accepted binding per HoA. `owner` answers whose a
 * HoA is (the registry, via the server's watch stream); `standby` answers the sequence number the server
 * issued for a locator that is a current, proven standby of the HoA (undefined: it is not one), so that an
 * activation of a withdrawn, reset or re-registered standby is stale everywhere; `now` is the clock.
 */
export class BindingBook {
  private readonly active = new Map<string, ActiveBinding>();
  private readonly kid: string;

  constructor(
    private readonly publicKey: KeyObject,
    private readonly owner: (hoa: string) => string | undefined,
    private readonly now: () => number = Date.now,
    private readonly standby?: (hoa: string, locator: string) => number | undefined,
  ) {
    this.kid = keyId(publicKey);
  }

  /** Checks a binding and, when it passes every rule, makes it the HoA's active one. */
  accept(b: SignedBinding): Verdict {
    // The cheap checks first, the signature (Ed25519, ~50 µs) last: a stranger's datagram that is malformed,
    // expired, for an unknown HoA or stale costs no verification (issue 12).
    const shape = bindingShapeProblem(b);
    if (shape) return { ok: false, reason: `malformed binding: ${shape}` };
    let hoa: string;
    let locator: string;
    try {
      hoa = canonicalIpv6(b.hoa);
      locator = canonicalIpv6(b.locator);
    } catch (err) {
      return { ok: false, reason: `malformed binding: ${(err as Error).message}` };
    }
    if (b.expiresAt <= this.now())
      return { ok: false, reason: `expired at ${new Date(b.expiresAt).toISOString()}` };
    const owner = this.owner(hoa);
    if (owner === undefined) return { ok: false, reason: `HoA ${hoa} is not registered` };
    if (owner !== b.vm) return { ok: false, reason: `HoA ${hoa} belongs to ${owner}, not ${b.vm}` };
    const current = this.active.get(hoa);
    if (current && b.seq <= current.seq) {
      return { ok: false, reason: `replayed or stale: sequence ${b.seq} is not after ${current.seq}` };
    }
    if (this.standby) {
      const issued = this.standby(hoa, locator);
      if (issued === undefined)
        return { ok: false, reason: `locator ${locator} is not a current standby of HoA ${hoa}` };
      if (issued !== b.seq) {
        return {
          ok: false,
          reason: `stale activation: standby ${locator} of HoA ${hoa} was issued sequence ${issued}, not ${b.seq}`,
        };
      }
    }
    if (b.kid !== this.kid)
      return { ok: false, reason: `signed with key ${b.kid}, not the server's key ${this.kid}` };
    if (!signatureValid(this.publicKey, b))
      return { ok: false, reason: "signature does not verify with the server's key" };
    this.active.set(hoa, { vm: b.vm, hoa, locator, seq: b.seq, expiresAt: b.expiresAt });
    return { ok: true };
  }

  /** Loads a binding already accepted earlier (from storage), so that older ones count as replays. */
  seed(b: ActiveBinding): void {
    this.active.set(canonicalIpv6(b.hoa), {
      ...b,
      hoa: canonicalIpv6(b.hoa),
      locator: canonicalIpv6(b.locator),
    });
  }

  /** Drops what is held for a HoA (the server superseded it): the next binding is judged afresh. */
  forget(hoa: string): void {
    this.active.delete(canonicalIpv6(hoa));
  }

  get(hoa: string): ActiveBinding | undefined {
    return this.active.get(canonicalIpv6(hoa));
  }

  all(): ActiveBinding[] {
    return [...this.active.values()];
  }
}

// Authorised bindings: the control server signs (Ed25519) what a HoA's locator is, with a sequence number
// and an expiry. Correspondents and the server accept a binding only if it is signed by the server, not
// expired, newer than any they have seen for that HoA, and about a HoA that belongs to the VM it names.

import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  sign,
  verify,
} from "node:crypto";
import { canonicalIpv6 } from "@xenroam/core";

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
  /** Ed25519 signature over canonicalPayload(claim), base64url. */
  readonly sig: string;
}

export type Verdict = { readonly ok: true } | { readonly ok: false; readonly reason: string };

/** The exact bytes that are signed: versioned, one field a line, addresses canonical. */
export function canonicalPayload(c: BindingClaim): Buffer {
  return Buffer.from(
    [
      "xenroam-binding-v1",
      c.vm,
      canonicalIpv6(c.hoa),
      canonicalIpv6(c.locator),
      String(c.seq),
      String(c.expiresAt),
    ].join("\n"),
  );
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
  return { ...claim, sig: sign(null, canonicalPayload(claim), privateKey).toString("base64url") };
}

/** An Ed25519 signature, 64 bytes, in unpadded base64url: 86 characters of its alphabet. */
const SIG = /^[A-Za-z0-9_-]{86}$/;

/**
 * What is wrong with the shape of something that claims to be a signed binding (from JSON off the wire:
 * anything at all), before any parsing or verification; undefined when its fields have the right types and
 * sizes.
 */
export function bindingShapeProblem(b: unknown): string | undefined {
  if (typeof b !== "object" || b === null || Array.isArray(b)) return "not an object";
  const o = b as Record<string, unknown>;
  for (const k of ["vm", "hoa", "locator"] as const) {
    const v = o[k];
    if (typeof v !== "string" || v.length === 0 || v.length > (k === "vm" ? 64 : 45))
      return `"${k}" must be a string of at most ${k === "vm" ? 64 : 45} characters`;
  }
  if (!Number.isSafeInteger(o.seq) || (o.seq as number) < 0) return '"seq" must be a whole number';
  if (!Number.isSafeInteger(o.expiresAt) || (o.expiresAt as number) < 0)
    return '"expiresAt" must be a time in ms';
  if (typeof o.sig !== "string" || !SIG.test(o.sig)) return '"sig" must be 86 characters of base64url';
  return undefined;
}

export function signatureValid(publicKey: KeyObject, b: SignedBinding): boolean {
  try {
    return verify(null, canonicalPayload(b), publicKey, Buffer.from(b.sig, "base64url"));
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
 * HoA is (the registry, via the server's watch stream); `now` is the clock.
 */
export class BindingBook {
  private readonly active = new Map<string, ActiveBinding>();

  constructor(
    private readonly publicKey: KeyObject,
    private readonly owner: (hoa: string) => string | undefined,
    private readonly now: () => number = Date.now,
  ) {}

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

  get(hoa: string): ActiveBinding | undefined {
    return this.active.get(canonicalIpv6(hoa));
  }

  all(): ActiveBinding[] {
    return [...this.active.values()];
  }
}

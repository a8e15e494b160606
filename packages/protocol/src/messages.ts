// The Dom0 ↔ guest channel: versioned JSON messages under <domain>/data/xenroam (xl) or vm-data/xenroam
// (XAPI), validated on both sides and capped in size. Anything malformed is refused with a reason.

import { utf8Length } from "@xenroam/core";
import * as z from "zod/mini";
import { globalAddressField, linkLocalField, macField, prefix64Field } from "./fields.js";

export const PROTOCOL_VERSION = 1;
/** Larger than any valid message, well under xenstore's 4096-byte payload. */
export const MESSAGE_MAX_BYTES = 2048;

/** Keys under the xenroam directory of a domain. */
export const KEYS = {
  /** Dom0 → guest: a PrepareRequest or an AbortRequest. */
  request: "request",
  /** guest → Dom0: a PrepareAnswer. */
  answer: "answer",
  /** destination Dom0 → guest: an Arrival. */
  arrived: "arrived",
  /** guest → Dom0: an AgentStatus, rewritten as the agent's phase changes. */
  status: "status",
} as const;

/** The xenroam directory relative to the guest's own domain path, per toolstack. */
export const CHANNEL_DIR = { xl: "data/xenroam", xapi: "vm-data/xenroam" } as const;
export type Channel = keyof typeof CHANNEL_DIR;

const migrationId = z
  .string()
  .check(z.regex(/^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/, "must be 1-64 letters, digits, _ or -"));

const linkLocal = linkLocalField;
const globalAddress = globalAddressField;
const prefix64 = prefix64Field;
const mac = macField;

export const prepareRequestSchema = z.strictObject({
  v: z.literal(PROTOCOL_VERSION),
  kind: z.literal("prepare"),
  id: migrationId,
  /** Destination site name, for logs. */
  site: z.string().check(z.minLength(1), z.maxLength(64)),
  prefix: prefix64,
  gateway: z.strictObject({ linkLocal, mac }),
  /** MAC of the vif the source Dom0 attached to the staging bridge. */
  secondaryMac: mac,
  /** How long the guest may take, in ms; it gives up and answers an error after that. */
  timeoutMs: z.int().check(z.gte(100), z.lte(600_000)),
});

export const abortRequestSchema = z.strictObject({
  v: z.literal(PROTOCOL_VERSION),
  kind: z.literal("abort"),
  id: migrationId,
});

export const requestSchema = z.discriminatedUnion("kind", [prepareRequestSchema, abortRequestSchema]);

/**
 * A binding the control server signed (packages/control's SignedBinding), as it travels through Dom0: shape
 * and sizes only here; the signature, expiry and sequence are checked by whoever it is relayed to.
 */
export const signedBindingSchema = z.strictObject({
  vm: z
    .string()
    .check(z.regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/, "must be a VM name (1-64 letters, digits, _ . -)")),
  hoa: globalAddress,
  locator: globalAddress,
  seq: z.int().check(z.gte(1), z.lte(Number.MAX_SAFE_INTEGER)),
  expiresAt: z.int().check(z.gte(0), z.lte(Number.MAX_SAFE_INTEGER)),
  /** The signing key's id: 8 bytes, base64url (11 characters). */
  kid: z.string().check(z.regex(/^[A-Za-z0-9_-]{11}$/, "must be 11 characters of base64url")),
  /** Ed25519 signature, 64 bytes, base64url (86 characters). */
  sig: z.string().check(z.regex(/^[A-Za-z0-9_-]{86}$/, "must be 86 characters of base64url")),
});

export const prepareAnswerSchema = z.discriminatedUnion("status", [
  z
    .strictObject({
      v: z.literal(PROTOCOL_VERSION),
      id: migrationId,
      status: z.literal("prepared"),
      moa: globalAddress,
      ifname: z.string().check(z.minLength(1), z.maxLength(15)),
      /**
       * With the mobility layer: the pre-signed activation of `moa`, exactly as the control server returned it
       * to the guest at step 2. Dom0 may relay it while the VM is paused, so that correspondents send to the
       * new locator from the moment the VM resumes.
       */
      activation: z.optional(signedBindingSchema),
    })
    .check(
      z.refine((a) => a.activation === undefined || a.activation.locator === a.moa, {
        message: "the activation is for another locator than the answered MoA",
        path: ["activation", "locator"],
      }),
    ),
  z.strictObject({
    v: z.literal(PROTOCOL_VERSION),
    id: migrationId,
    status: z.literal("error"),
    reason: z.string().check(z.minLength(1), z.maxLength(512)),
  }),
  z.strictObject({ v: z.literal(PROTOCOL_VERSION), id: migrationId, status: z.literal("aborted") }),
]);

export const arrivalSchema = z.strictObject({
  v: z.literal(PROTOCOL_VERSION),
  id: migrationId,
  /** Destination host name. */
  host: z.string().check(z.minLength(1), z.maxLength(64)),
});

export const agentStatusSchema = z.strictObject({
  v: z.literal(PROTOCOL_VERSION),
  phase: z.enum(["idle", "preparing", "prepared", "switching", "switched", "error"]),
  id: z.optional(migrationId),
  primary: z.optional(z.string().check(z.maxLength(15))),
  secondary: z.optional(z.string().check(z.maxLength(15))),
  detail: z.optional(z.string().check(z.maxLength(512))),
});

export type PrepareRequest = z.output<typeof prepareRequestSchema>;
export type AbortRequest = z.output<typeof abortRequestSchema>;
export type Request = z.output<typeof requestSchema>;
export type PrepareAnswer = z.output<typeof prepareAnswerSchema>;
export type Arrival = z.output<typeof arrivalSchema>;
export type AgentStatus = z.output<typeof agentStatusSchema>;
export type SignedActivation = z.output<typeof signedBindingSchema>;

export type Parsed<T> =
  { readonly ok: true; readonly value: T } | { readonly ok: false; readonly reason: string };

function parseWith<T>(schema: z.ZodMiniType<T>, what: string, text: string): Parsed<T> {
  if (utf8Length(text) > MESSAGE_MAX_BYTES) {
    return { ok: false, reason: `${what} is larger than ${MESSAGE_MAX_BYTES} bytes` };
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return { ok: false, reason: `${what} is not JSON` };
  }
  if (typeof json === "object" && json !== null && "v" in json && json.v !== PROTOCOL_VERSION) {
    return {
      ok: false,
      reason: `${what} has protocol version ${String(json.v)}; this side speaks ${PROTOCOL_VERSION}`,
    };
  }
  const r = schema.safeParse(json);
  if (r.success) return { ok: true, value: r.data };
  const first = r.error.issues
    .slice(0, 3)
    .map((i) => `${i.path.join(".") || "(message)"}: ${i.message}`)
    .join("; ");
  return { ok: false, reason: `${what} is malformed: ${first}` };
}

export const parseRequest = (text: string) => parseWith(requestSchema, "request", text);
export const parseAnswer = (text: string) => parseWith(prepareAnswerSchema, "answer", text);
export const parseArrival = (text: string) => parseWith(arrivalSchema, "arrival", text);
export const parseAgentStatus = (text: string) => parseWith(agentStatusSchema, "status", text);

/** Serialises a message; refuses one that would exceed the cap. */
export function encodeMessage(message: Request | PrepareAnswer | Arrival | AgentStatus): string {
  const text = JSON.stringify(message);
  if (utf8Length(text) > MESSAGE_MAX_BYTES) {
    throw new Error(`message larger than ${MESSAGE_MAX_BYTES} bytes`);
  }
  return text;
}

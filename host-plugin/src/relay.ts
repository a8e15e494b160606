// The relay of a guest's pre-signed activation (mobility layer): Dom0 hands it to the control server while the
// VM is paused, so correspondents send to the new locator by the time the VM resumes. The engine relays at the
// pause on toolstacks that see it; on xl only the destination does, so the source names the control server
// and the activation in `xenroam receive`'s command line (--relay), and receive relays before unpause.

import { KEYS, parseAnswer, type SignedActivation, signedBindingSchema } from "@xenroam/protocol";
import * as z from "zod/mini";
import type { ControlRelay, Log } from "./ports.js";

/** What became of a relayed activation: "unknown" when the server's answer never came (it may have taken). */
export type RelayOutcome = "accepted" | "refused" | "unknown";

/**
 * POSTs the activation; never throws. Logs `binding_relayed` or `binding_relay_failed` with `fields`. A 409
 * "already-active" says the activation is in effect (sent again to another control server replica after the
 * first took it and died before answering): accepted, so that a failed move rolls it back.
 */
export async function relayActivation(
  control: ControlRelay,
  activation: SignedActivation,
  log: Log,
  fields: Record<string, unknown>,
  now: () => number = Date.now,
  /** The activation made ready beforehand (ControlRelay.prepareActivate), sent instead of `control.activate`. */
  send?: () => Promise<{ revision: number }>,
): Promise<RelayOutcome> {
  const started = now();
  const what = { ...fields, locator: activation.locator, seq: activation.seq };
  try {
    const { revision } = await (send ? send() : control.activate(activation));
    log("binding_relayed", { ...what, revision, ms: now() - started });
    return "accepted";
  } catch (err) {
    const e = err as Error & { status?: number; code?: string };
    if (e.status === 409 && e.code === "already-active") {
      log("binding_relayed", { ...what, already: true, ms: now() - started });
      return "accepted";
    }
    log("binding_relay_failed", { ...what, error: e.message, ms: now() - started });
    return e.status === undefined ? "unknown" : "refused";
  }
}

const relayOrder = z.strictObject({
  /** The control server, or its replicas separated by commas. */
  control: z.string().check(z.minLength(1), z.maxLength(1024)),
  activation: signedBindingSchema,
});
export type RelayOrder = z.output<typeof relayOrder>;

/**
 * receive's --relay argument (base64url JSON, safe on any command line): the control server and the
 * activation the guest answered, carried to the destination with the arrival. Undefined when there is no
 * control server, or the carried answer holds no activation of this VM (a host's token may relay any VM's).
 */
export function relayArgument(
  control: string | undefined,
  vm: string,
  guestWrites: Readonly<Record<string, string>> | undefined,
): string | undefined {
  const text = guestWrites?.[KEYS.answer];
  if (!control || text === undefined) return undefined;
  const answer = parseAnswer(text);
  if (!answer.ok || answer.value.status !== "prepared" || answer.value.activation?.vm !== vm)
    return undefined;
  const order: RelayOrder = { control, activation: answer.value.activation };
  return Buffer.from(JSON.stringify(order)).toString("base64url");
}

/** Reads --relay back, validated; throws with the reason. */
export function parseRelayArgument(text: string): RelayOrder {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(text, "base64url").toString("utf8"));
  } catch {
    throw new Error("--relay is not base64url JSON");
  }
  const r = relayOrder.safeParse(value);
  if (!r.success) {
    const first = r.error.issues[0];
    throw new Error(`--relay is malformed: ${first ? `${first.path.join(".")}: ${first.message}` : "?"}`);
  }
  return r.data;
}

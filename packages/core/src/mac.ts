// Ethernet MAC addresses as values. Pure.

export interface Mac {
  readonly bytes: readonly number[];
}

export class MacError extends Error {
  override readonly name = "MacError";
}

const MAC_TEXT = /^([0-9a-fA-F]{2})(:[0-9a-fA-F]{2}){5}$/;

export function parseMac(text: string): Mac {
  if (!MAC_TEXT.test(text)) {
    throw new MacError(`"${text}" is not a MAC address: expected six hex pairs like 02:00:00:00:0b:01`);
  }
  return { bytes: text.split(":").map((h) => Number.parseInt(h, 16)) };
}

export function isMac(text: string): boolean {
  return MAC_TEXT.test(text);
}

export function formatMac(mac: Mac | Uint8Array): string {
  const bytes = mac instanceof Uint8Array ? [...mac] : mac.bytes;
  return bytes.map((b) => b.toString(16).padStart(2, "0")).join(":");
}

export function canonicalMac(text: string): string {
  return formatMac(parseMac(text));
}

export function macToBytes(mac: Mac | string): Uint8Array {
  return Uint8Array.from(typeof mac === "string" ? parseMac(mac).bytes : mac.bytes);
}

/** Unicast and locally administered: what a lab or an admin-chosen gateway MAC should be. */
export function isUnicastMac(mac: Mac): boolean {
  return ((mac.bytes[0] ?? 0) & 0x01) === 0;
}

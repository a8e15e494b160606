// The xenstore wire protocol (xen/include/public/io/xs_wire.h): a 16-byte little-endian header
// {type, req_id, tx_id, len} and a payload of at most 4096 bytes, strings NUL-separated.

export const XS = {
  CONTROL: 0,
  DIRECTORY: 1,
  READ: 2,
  GET_PERMS: 3,
  WATCH: 4,
  UNWATCH: 5,
  TRANSACTION_START: 6,
  TRANSACTION_END: 7,
  INTRODUCE: 8,
  RELEASE: 9,
  GET_DOMAIN_PATH: 10,
  WRITE: 11,
  MKDIR: 12,
  RM: 13,
  SET_PERMS: 14,
  WATCH_EVENT: 15,
  ERROR: 16,
  IS_DOMAIN_INTRODUCED: 17,
  RESUME: 18,
  SET_TARGET: 19,
  RESET_WATCHES: 21,
  DIRECTORY_PART: 22,
} as const;
export type XsType = (typeof XS)[keyof typeof XS];

export const TYPE_NAMES: Readonly<Record<number, string>> = Object.fromEntries(
  Object.entries(XS).map(([k, v]) => [v, k]),
);

export const HEADER_SIZE = 16;
export const PAYLOAD_MAX = 4096;
export const ABS_PATH_MAX = 3072;
export const REL_PATH_MAX = 2048;

/** Error names the protocol carries (xsd_errors in xs_wire.h). */
export const XS_ERRORS = [
  "EINVAL",
  "EACCES",
  "EEXIST",
  "EISDIR",
  "ENOENT",
  "ENOMEM",
  "ENOSPC",
  "EIO",
  "ENOTEMPTY",
  "ENOSYS",
  "EROFS",
  "EBUSY",
  "EAGAIN",
  "EISCONN",
  "E2BIG",
  "EPERM",
] as const;
export type XsErrorCode = (typeof XS_ERRORS)[number];

export interface Frame {
  readonly type: number;
  readonly reqId: number;
  readonly txId: number;
  readonly payload: Buffer;
}

export class XenstoreError extends Error {
  override readonly name = "XenstoreError";
  constructor(
    /** One of XS_ERRORS from a server, or a local code ("EIO" for a lost connection). */
    readonly code: string,
    readonly operation: string,
    readonly path?: string,
  ) {
    super(`xenstore ${operation}${path === undefined ? "" : ` ${path}`}: ${code}`);
  }
}

export function isXenstoreError(err: unknown, code?: string): err is XenstoreError {
  return err instanceof XenstoreError && (code === undefined || err.code === code);
}

export function encodeFrame(frame: Frame): Buffer {
  if (frame.payload.length > PAYLOAD_MAX) {
    throw new XenstoreError("E2BIG", TYPE_NAMES[frame.type] ?? String(frame.type));
  }
  const header = Buffer.alloc(HEADER_SIZE);
  header.writeUInt32LE(frame.type, 0);
  header.writeUInt32LE(frame.reqId >>> 0, 4);
  header.writeUInt32LE(frame.txId >>> 0, 8);
  header.writeUInt32LE(frame.payload.length, 12);
  return Buffer.concat([header, frame.payload]);
}

/** Strings each followed by NUL: the request form of most operations. */
export function nulTerminated(...parts: string[]): Buffer {
  return Buffer.from(parts.map((p) => `${p}\0`).join(""), "utf8");
}

/** Splits a payload on NUL; a trailing NUL does not make an empty last element. */
export function splitNul(payload: Buffer): string[] {
  if (payload.length === 0) return [];
  const text = payload.toString("utf8");
  const parts = text.split("\0");
  if (parts.at(-1) === "") parts.pop();
  return parts;
}

/**
 * Incremental decoder for a byte stream. push() returns complete frames; an oversized length is a protocol
 * violation (the peer cannot be resynchronised), reported by throwing.
 */
export class FrameDecoder {
  private buffered: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): Frame[] {
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    const frames: Frame[] = [];
    while (this.buffered.length >= HEADER_SIZE) {
      const len = this.buffered.readUInt32LE(12);
      if (len > PAYLOAD_MAX) {
        throw new XenstoreError("E2BIG", "decode", `payload of ${len} bytes exceeds ${PAYLOAD_MAX}`);
      }
      if (this.buffered.length < HEADER_SIZE + len) break;
      frames.push({
        type: this.buffered.readUInt32LE(0),
        reqId: this.buffered.readUInt32LE(4),
        txId: this.buffered.readUInt32LE(8),
        payload: Buffer.from(this.buffered.subarray(HEADER_SIZE, HEADER_SIZE + len)),
      });
      this.buffered = this.buffered.subarray(HEADER_SIZE + len);
    }
    return frames;
  }
}

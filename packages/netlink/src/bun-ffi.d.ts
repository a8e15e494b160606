// The part of Bun's `bun:ffi` (https://bun.sh/docs/api/ffi) and of its `Bun` global that bun-native.ts uses. Only Bun resolves this
// module; xenroam's Node builds never load bun-native.ts (scripts/bun-bundle.mjs swaps it in for Bun builds).
declare module "bun:ffi" {
  export const FFIType: {
    readonly i32: number;
    readonly u32: number;
    readonly i64: number;
    readonly u64: number;
    readonly ptr: number;
  };
  export type Pointer = number & { readonly __pointer: unique symbol };
  export interface FFIFunction {
    readonly args: readonly number[];
    readonly returns: number;
  }
  export function dlopen<T extends Record<string, FFIFunction>>(
    path: string,
    symbols: T,
  ): {
    readonly symbols: { [K in keyof T]: (...args: unknown[]) => number | bigint | Pointer };
    close(): void;
  };
  export function ptr(view: ArrayBufferView, byteOffset?: number): Pointer;
  export const read: { i32(pointer: Pointer, byteOffset?: number): number };
}

declare const Bun: {
  /** A file or descriptor; for a socket, `stream()` reads it from Bun's event loop when it is readable. */
  file(fd: number): { stream(): ReadableStream<Uint8Array> };
};

// @xenroam/core: pure values and helpers shared by every package. Compiles without Node types.
export * from "./ipv6.js";
export * from "./mac.js";
export * from "./names.js";
export * from "./radvd.js";
export * from "./text.js";

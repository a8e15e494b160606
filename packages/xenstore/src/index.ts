// @xenroam/xenstore: the xenstore wire protocol — a client for Dom0 and guests, and a small server for the lab.
export * from "./client.js";
export * from "./server.js";
export { type Access, allowed, domainPath, type Perm } from "./store.js";
export * from "./wire.js";

// @xenroam/netlink: the kernel's network configuration behind one port (rtnetlink), with its fake.
export * from "./errors.js";
export * from "./fake.js";
export * from "./match.js";
export * from "./ops.js";
export * from "./port.js";
export { createNetlink } from "./rtnetlink.js";

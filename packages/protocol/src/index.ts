// @xenroam/protocol: contracts shared by the host plugin, the guest agent and the lab. Pure.
export * from "./messages.js";
export * from "./toolstack.js";
export * from "./fields.js";
export * from "./sites.js";

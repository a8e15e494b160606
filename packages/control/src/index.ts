// @xenroam/control: the control server's core (the paper's MCS and IMS): signed, sequenced bindings.
export * from "./bindings.js";

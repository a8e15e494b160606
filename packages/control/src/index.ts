// @xenroam/control: the control server (the paper's MCS and IMS): signed, sequenced bindings, the service,
// and its HTTP API.
export * from "./bindings.js";
export * from "./http.js";
export * from "./service.js";

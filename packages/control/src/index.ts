// @xenroam/control: the control server (the paper's MCS and IMS): the registry, signed and sequenced
// bindings, the service over a storage port, its HTTP API, and the client the agents and the host plugin
// use. The SQLite store is a separate entry point (@xenroam/control/sqlite), and the etcd store (etcd.ts) is
// loaded by the daemon alone, so that the guest agent, which only verifies bindings and talks to the server,
// never loads the database's native module or a gRPC client.
export * from "./bindings.js";
export * from "./client.js";
export * from "./http.js";
export * from "./service.js";
export * from "./store.js";

// @xenroam/lab: the namespace lab — topology, plan, namespace workers, supervisor, up/down/status.
export * from "./addresses.js";
export * from "./lab.js";
export * from "./mobility.js";
export * from "./netns.js";
export * from "./plan.js";
export * from "./system.js";
export * from "./topology.js";
export * from "./toolstack.js";
export * from "./bench.js";
export * from "./soak.js";
export * from "./probe.js";
export * from "./stats.js";
export * from "./xapi.js";
export { holdService } from "./supervisor.js";
export * from "./scale.js";
export * from "./fanout.js";
export * from "./failover.js";

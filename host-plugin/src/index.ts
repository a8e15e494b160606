export * from "./engine.js";
export * from "./evacuate.js";
export * from "./migration-metrics.js";
export * from "./fakes.js";
export * from "./ports.js";

export * from "./staging.js";
export * from "./locks.js";

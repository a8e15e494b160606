// xenroam-agent, the DomU daemon: steps 2 and 4 of the method.
export * from "./core.js";

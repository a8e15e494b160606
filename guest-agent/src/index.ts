// xenroam-agent, the DomU daemon (steps 2 and 4 of the method). Built in the method issue; this package
// exists now so the workspace, build and dependency rules cover it from the start.
export const AGENT_NAME = "xenroam-agent";

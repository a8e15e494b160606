// xenroam, the Dom0 plugin (steps 1 and 3 of the method). Built in the method issue; this package exists
// now so the workspace, build and dependency rules cover it from the start.
export const PLUGIN_NAME = "xenroam";

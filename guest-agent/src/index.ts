// xenroam-agent, the DomU daemon: steps 2 and 4 of the method, the mobile node (the VM keeps its HoA), and
// the correspondent node (`--correspondent`).
export * from "./core.js";
export * from "./correspondent.js";
export * from "./mobile.js";
export * from "./netmanagers.js";
export { liveInterfaces, rootView } from "./network-setup.js";

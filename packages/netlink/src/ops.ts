// Netlink operations as data: plans are lists of these, applied in order through the port, and compared in
// tests as the `ip`-style text FakeNetlink records.

import type {
  AddAddressOptions,
  BridgeOptions,
  BridgePortChange,
  LinkChange,
  Netlink,
  RouteSpec,
  VethOptions,
} from "./port.js";

export type NetOp =
  | { readonly op: "createBridge"; readonly name: string; readonly options: BridgeOptions }
  | { readonly op: "createVeth"; readonly name: string; readonly peer: string; readonly options: VethOptions }
  | { readonly op: "deleteLink"; readonly name: string }
  | { readonly op: "setLink"; readonly name: string; readonly change: LinkChange }
  | { readonly op: "setBridgePort"; readonly name: string; readonly change: BridgePortChange }
  | {
      readonly op: "addAddress";
      readonly name: string;
      readonly cidr: string;
      readonly options: AddAddressOptions;
    }
  | { readonly op: "addRoute"; readonly route: RouteSpec }
  | {
      readonly op: "writeSysctl";
      readonly ifname: string;
      readonly key: string;
      readonly value: string | number;
    };

export async function applyOps(netlink: Netlink, ops: readonly NetOp[]): Promise<void> {
  for (const o of ops) {
    switch (o.op) {
      case "createBridge":
        await netlink.createBridge(o.name, o.options);
        break;
      case "createVeth":
        await netlink.createVeth(o.name, o.peer, o.options);
        break;
      case "deleteLink":
        await netlink.deleteLink(o.name);
        break;
      case "setLink":
        await netlink.setLink(o.name, o.change);
        break;
      case "setBridgePort":
        await netlink.setBridgePort(o.name, o.change);
        break;
      case "addAddress":
        await netlink.addAddress(o.name, o.cidr, o.options);
        break;
      case "addRoute":
        await netlink.addRoute(o.route);
        break;
      case "writeSysctl":
        await netlink.writeSysctl(o.ifname, o.key, o.value);
        break;
    }
  }
}

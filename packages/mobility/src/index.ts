// @xenroam/mobility: HoA↔MoA translation with nftables for the mobile node and the correspondent.
export * from "./nft.js";
export * from "./rules.js";

import test from "ava";
import { parseVifs, setVifBridges, XlConfigError } from "../src/xlcfg.js";

const CFG = `name = "web1"
memory = 512
# the second vif waits on the parking bridge (xenroam)
vif = [ 'mac=00:16:3E:00:00:10,bridge=xenbr0',
        "mac=00:16:3e:00:01:10, bridge=xrpark0, script=vif-bridge" ]
disk = [ 'phy:/dev/vg/web1,xvda,w' ]
`;

test("vifs are read with their devids, MACs and bridges", (t) => {
  t.deepEqual(
    parseVifs(CFG).map((v) => [v.devid, v.mac, v.bridge]),
    [
      [0, "00:16:3e:00:00:10", "xenbr0"],
      [1, "00:16:3e:00:01:10", "xrpark0"],
    ],
  );
  t.deepEqual(
    parseVifs("vif = ['devid=3,mac=00:16:3e:00:00:01', 'bridge=br1']").map((v) => v.devid),
    [3, 1],
  );
});

test("the attachments are swapped; everything else passes through byte for byte", (t) => {
  const out = setVifBridges(CFG, { 0: "xrpark0", 1: "xenbr0" });
  t.is(out, CFG.replace("bridge=xenbr0'", "bridge=xrpark0'").replace(" bridge=xrpark0,", "bridge=xenbr0,"));
  t.deepEqual(
    parseVifs(out).map((v) => v.bridge),
    ["xrpark0", "xenbr0"],
  );
  t.is(
    setVifBridges("vif = [ 'mac=00:16:3e:00:00:01' ]\n", { 0: "xenbr0" }),
    "vif = [ 'mac=00:16:3e:00:00:01,bridge=xenbr0' ]\n",
  );
});

test("a config without the vif, or a bad bridge, is refused with the reason", (t) => {
  t.throws(() => setVifBridges('name = "x"\n', { 0: "xenbr0" }), {
    instanceOf: XlConfigError,
    message: /no `vif = \[/,
  });
  t.throws(() => setVifBridges(CFG, { 2: "xenbr0" }), { message: /no vif with devid 2 \(it has 0, 1\)/ });
  t.throws(() => setVifBridges(CFG, { 0: "br0; rm -rf /" }), { message: /not a bridge name/ });
});

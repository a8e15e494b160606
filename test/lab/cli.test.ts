// The lab CLI refuses bad input with a message that says what to do (no root needed for these).
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import test from "ava";

const LAB_MAIN = fileURLToPath(new URL("../../../packages/lab/dist/src/main.js", import.meta.url));

function lab(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [LAB_MAIN, ...args], (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

test("a missing topology file is named", async (t) => {
  const r = await lab("up", "--topology", "/nonexistent/topo.json");
  t.is(r.code, 1);
  t.regex(r.stderr, /cannot read topology file \/nonexistent\/topo\.json/);
});

test("invalid JSON and invalid topologies list their problems", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "xr-cli-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, "bad.json"), "{ nope");
  const r1 = await lab("topology", "--topology", join(dir, "bad.json"));
  t.regex(r1.stderr, /bad\.json is not valid JSON/);
  writeFileSync(join(dir, "wrong.json"), JSON.stringify({ name: "x", sites: [] }));
  const r2 = await lab("topology", "--topology", join(dir, "wrong.json"));
  t.is(r2.code, 1);
  t.regex(r2.stderr, /wrong\.json is not a valid lab topology:\n {2}- /);
  t.regex(r2.stderr, /sites: needs at least two sites/);
});

test("help teaches with examples; unknown commands point to help", async (t) => {
  const help = await lab("--help");
  t.regex(help.stdout, /Examples:/);
  t.regex(help.stdout, /xenroam-lab exec vm -- ping/);
  const bad = await lab("frobnicate");
  t.not(bad.code, 0);
  t.regex(bad.stderr, /unknown command|--help/);
  // The errors that tell the user to run `down --force` must be able to rely on it.
  t.regex((await lab("down", "--help")).stdout, /--force/);
});

test("the default topology prints as valid JSON", async (t) => {
  const r = await lab("topology");
  t.is(r.code, 0);
  t.is((JSON.parse(r.stdout) as { name: string }).name, "xr");
});

test("soak: bad counts and unknown faults are refused before anything is made; help lists the faults", async (t) => {
  const zero = await lab("soak", "--migrations", "0");
  t.is(zero.code, 1);
  t.regex(zero.stderr, /--migrations takes a whole number from 1 to 10000/);
  const unknown = await lab("soak", "--faults", "agent-killed,gremlins");
  t.is(unknown.code, 1);
  t.regex(unknown.stderr, /unknown fault\(s\) gremlins; faults: agent-killed, radvd-killed/);
  const name = await lab("soak", "--name", "Too-Long-Name");
  t.not(name.code, 0);
  t.regex(name.stderr, /--name takes 1-6 characters/);
  const help = await lab("soak", "--help");
  t.regex(help.stdout, /xenstored-restarted +the source host's xenstored restarted/);
  t.regex(help.stdout, /xenroam-lab soak --migrations 100 --faults/);
});

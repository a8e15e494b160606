// xenroam-lab's commands that need no root: plot-scale draws the kept scale results, and refuses bad input
// with a message that says what to do.
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import test from "ava";

const LAB_MAIN = fileURLToPath(new URL("../src/main.js", import.meta.url));
const BENCH = fileURLToPath(new URL("../../../../docs/bench/", import.meta.url));

function lab(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [LAB_MAIN, ...args], (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

const tmp = (t: { teardown: (f: () => void) => void }) => {
  const dir = mkdtempSync(join(tmpdir(), "xr-plot-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
};

test("plot-scale draws the kept runs to an SVG without running anything", async (t) => {
  const svg = join(tmp(t), "scale.svg");
  const r = await lab(
    "plot-scale",
    "--scale",
    join(BENCH, "scale-lab-2026-12-05.json"),
    "--fanout",
    join(BENCH, "fanout-lab-2026-12-05.json"),
    "--svg",
    svg,
  );
  t.is(r.code, 0, r.stderr);
  t.regex(r.stderr, /wrote .*scale\.svg/);
  const text = readFileSync(svg, "utf8");
  t.true(text.startsWith("<svg"));
  t.true(text.includes("(a) fan-out of an activation") && text.includes("(c) evacuation"));
});

test("plot-scale: help teaches; missing inputs, unreadable, invalid and foreign files are named", async (t) => {
  const dir = tmp(t);
  const out = join(dir, "x.svg");
  const help = await lab("plot-scale", "--help");
  t.regex(help.stdout, /--scale <file>/);
  t.regex(help.stdout, /Examples:\n {2}xenroam-lab plot-scale --scale scale\.json --svg scale\.svg/);
  t.regex((await lab("--help")).stdout, /plot-scale/);
  t.regex((await lab("scale", "--help")).stdout, /--svg <file>/);

  const none = await lab("plot-scale", "--svg", out);
  t.is(none.code, 1);
  t.regex(none.stderr, /give --scale FILE, --fanout FILE or both/);
  t.regex((await lab("plot-scale", "--scale", "x.json")).stderr, /required option '--svg <file>'/);

  const missing = await lab("plot-scale", "--scale", join(dir, "nope.json"), "--svg", out);
  t.regex(missing.stderr, /--scale: cannot read .*nope\.json: ENOENT/);
  writeFileSync(join(dir, "bad.json"), "{ nope");
  t.regex(
    (await lab("plot-scale", "--scale", join(dir, "bad.json"), "--svg", out)).stderr,
    /--scale: .*bad\.json is not valid JSON/,
  );
  writeFileSync(join(dir, "wrong.json"), JSON.stringify({ prepare: [{ vms: "ten" }] }));
  const wrong = await lab("plot-scale", "--scale", join(dir, "wrong.json"), "--svg", out);
  t.is(wrong.code, 1);
  t.regex(wrong.stderr, /wrong\.json is not a `xenroam-lab scale --json` result:\n {2}- prepare\[0\]\.vms: /);
  const noFanout = await lab(
    "plot-scale",
    "--fanout",
    join(BENCH, "scale-lab-2026-12-05.json"),
    "--svg",
    out,
  );
  t.regex(noFanout.stderr, /scale-lab-2026-12-05\.json has no fan-out figures/);
  const noDir = await lab(
    "plot-scale",
    "--scale",
    join(BENCH, "scale-lab-2026-12-05.json"),
    "--svg",
    join(dir, "no", "x.svg"),
  );
  t.not(noDir.code, 0);
  t.regex(noDir.stderr, /--svg .*x\.svg: no folder .*no to write it in/);
  t.false(existsSync(out));
});

// The real-Xen benchmark's bookkeeping for scripts/xen/bench.sh (the arithmetic is @xenroam/lab's xenbench.ts).
//   bench-report.mjs status RUNDIR SINCE_MS     exit 0 when VM->CN and CN->VM (primary) both had a reply after
//                                               SINCE_MS and within the last 500 ms; prints what is still silent
//   bench-report.mjs record RUNDIR END_MS       the run's record (JSON, stdout) and a one-line verdict (stderr)
//   bench-report.mjs report RUNS.jsonl PREFIX RATE_MBIT FACTS.json COMMAND
//                                               PREFIX.json (facts + every sample), PREFIX.md, PREFIX.svg
// RUNDIR holds meta.json (written by bench.sh), xenroam.log (each line prefixed with the host's epoch time as
// it arrived), the CN's ping logs; the VM's probe log is the CN's echo log named in meta.json.
import { closeSync, fstatSync, openSync, readFileSync, readSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { machineFacts } from "../../packages/lab/dist/src/facts.js";
import { renderSvg } from "../../packages/lab/dist/src/plot.js";
import {
  DIRECTION_LABEL,
  SUBJECTS,
  SUBJECT_LABEL,
  detailMarkdown,
  figureSpec,
  parseEcho,
  parsePing,
  replyTimes,
  sampleOf,
  table2Markdown,
} from "../../packages/lab/dist/src/xenbench.js";

const read = (path) => {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return "";
  }
};
// The echo log lives as long as the rig: a run reads it from the offset it had when the run began.
const readFrom = (path, offset) => {
  try {
    const fd = openSync(path, "r");
    try {
      const size = fstatSync(fd).size;
      const buf = Buffer.alloc(Math.max(0, size - offset));
      readSync(fd, buf, 0, buf.length, offset);
      return buf.toString("utf8");
    } finally {
      closeSync(fd);
    }
  } catch {
    return "";
  }
};
// The wall clock, as `date` and `ping -D` read it (performance.timeOrigin + now() drifts from it here).
const nowMs = () => Date.now();

function meta(dir) {
  const m = JSON.parse(readFileSync(join(dir, "meta.json"), "utf8"));
  return { ...m, pings: m.pings.map((p) => ({ ...p, log: join(dir, p.log) })) };
}

function status(dir, since) {
  const m = meta(dir);
  const now = nowMs();
  const silent = [];
  const fresh = (times) => times.some((t) => t > since) && times.some((t) => t > now - 500);
  if (!fresh(replyTimes(parseEcho(readFrom(m.echoLog, m.echoOffset ?? 0))))) silent.push("VM->CN");
  for (const p of m.pings.filter((p) => p.role === "primary"))
    if (!fresh(parsePing(read(p.log)).map((r) => r.atMs))) silent.push(`CN->${p.target}`);
  // Several primary targets (the guest's address on each site): one of them answering is enough.
  const primaries = m.pings.filter((p) => p.role === "primary").length;
  const cnSilent = silent.filter((s) => s.startsWith("CN->")).length;
  const ok = !silent.includes("VM->CN") && cnSilent < primaries;
  console.log(ok ? "flowing" : `silent: ${silent.join(" ")}`);
  process.exit(ok ? 0 : 1);
}

function record(dir, endMs) {
  const m = meta(dir);
  const stamped = read(join(dir, "xenroam.log"))
    .split("\n")
    .map((l) => /^(\d+\.\d+) (.*)$/.exec(l))
    .filter(Boolean)
    .map(([, t, text]) => ({ t: Number(t) * 1000, text }));
  const at = (mark) => stamped.find((l) => l.text.startsWith(mark));
  const start = at("XR-START");
  const prepared = at("XR-PREPARED");
  const rcLine = at("XR-RC ");
  const rc = rcLine ? Number(rcLine.text.slice(6)) : -1;
  const reportLine = stamped.map((l) => l.text).find((t) => t.startsWith('{"migrationId"'));
  let report;
  try {
    report = reportLine ? JSON.parse(reportLine) : undefined;
  } catch {
    report = undefined;
  }
  const lastWords = stamped
    .map((l) => l.text)
    .filter((t) => !t.startsWith("XR-") && !t.startsWith('{"migrationId"'))
    .slice(-4)
    .join(" | ");
  const ok = rc === 0 && (m.subject !== "method" || report?.method === "dual-interface");
  const rec = {
    subject: m.subject,
    link: m.link,
    memoryMb: m.memoryMb,
    run: m.run,
    from: m.from,
    to: m.to,
    startMs: start ? start.t : endMs,
    ...(prepared ? { preparedMs: prepared.t } : {}),
    returnedMs: rcLine ? rcLine.t : endMs,
    endMs,
    ok,
    ...(report ? { report } : {}),
    ...(ok ? {} : { error: `xenroam exit ${rc}${report ? ` method ${report.method}` : ""}: ${lastWords}` }),
    pings: m.pings,
    echoLog: m.echoLog,
    echoOffset: m.echoOffset ?? 0,
  };
  process.stdout.write(`${JSON.stringify(rec)}\n`);
  const s = sampleOf(rec, logsOf([rec]));
  const sec = (ms) => (ms === null || ms === undefined ? "—" : (ms / 1000).toFixed(2));
  const dirs = Object.entries(s.directions)
    .map(([d, o]) => `${d} ${o.dwMs === null ? "not recovered" : sec(o.dwMs)}`)
    .join(", ");
  process.stderr.write(
    `  ${s.recovered ? `T_DW ${sec(s.tDwMs)} s, T_ALL ${sec(s.tAllMs)} s` : "NOT RECOVERED"} (${dirs})` +
      `${ok ? "" : `; ${rec.error}`}\n`,
  );
}

function logsOf(records) {
  const logs = {};
  for (const r of records) {
    logs[r.echoLog] ??= readFrom(r.echoLog, r.echoOffset ?? 0);
    for (const p of r.pings) logs[p.log] ??= read(p.log);
  }
  return logs;
}

async function report(runsPath, prefix, rate, factsPath, command) {
  const records = read(runsPath)
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l));
  const logs = logsOf(records);
  const samples = records.map((r) => sampleOf(r, logs));
  const extra = JSON.parse(read(factsPath) || "{}");
  const facts = await machineFacts(extra);
  const o = { rateMbit: rate };
  const first = records[0]?.startMs;
  const last = records[records.length - 1]?.endMs;
  const doc = {
    what: "xenroam real-Xen benchmark: the three subjects of Watanabe et al. (Table 2, Figure 4)",
    command,
    facts,
    probeIntervalMs: 20,
    shapedRateMbit: rate,
    definitions: {
      tDwMs:
        "the longer of VM->CN and CN->VM: from the last echo reply before the stop to the first after it",
      tAllMs: "from the start of xenroam prepare (the method) or migrate to traffic restored both ways",
      directions: DIRECTION_LABEL,
      subjects: SUBJECT_LABEL,
    },
    samples,
  };
  // Formatted as the repository's prettier would (npm run lint checks docs/ too).
  const prettier = await import("prettier");
  const json = JSON.stringify(doc, null, 2);
  const options = (await prettier.resolveConfig(`${prefix}.json`)) ?? {};
  writeFileSync(`${prefix}.json`, await prettier.format(json, { ...options, parser: "json" }));
  writeFileSync(`${prefix}.svg`, await renderSvg(figureSpec(samples, o)));
  const notRecovered = samples.filter((s) => !s.recovered);
  const md = [
    `# xenroam on real Xen: the paper's three subjects`,
    "",
    `\`${command}\`${first ? `, ${new Date(first).toISOString()} – ${new Date(last).toISOString()}` : ""}.`,
    `Every sample: \`${prefix.split("/").pop()}.json\`; the figure: \`${prefix.split("/").pop()}.svg\`.`,
    "",
    "## Machine",
    "",
    "| fact | value |",
    "|---|---|",
    ...Object.entries(facts).map(([k, v]) => `| ${k} | ${v} |`),
    "",
    "## Table 2 beside the paper's",
    "",
    `Seconds; each cell is **ours (the paper's)**: our mean over the runs that recovered, "[k/n]" when only k of n`,
    `runs recovered within the deadline, "—" where nothing was measured. The paper's figures are its Table 2`,
    `(Watanabe et al., mean of three runs, Xen 3.2, 100 and 1000 Mbps); ours are ${rate} Mbps shaped with tbf on`,
    "the Dom0s' taps, and unshaped. T_DW: the longer of VM→CN and CN→VM, each from the last echo reply before the",
    "stop to the first after it (probes every 20 ms both ways; the method's own addresses, a diagnostic, every",
    "200 ms, so every subject carries the same probe load); T_ALL: from the start of `xenroam prepare` (the",
    "method) or `xl migrate` (the baselines) to traffic restored both ways.",
    "",
    table2Markdown(samples, o),
    "",
    "## Every direction",
    "",
    "Seconds, means over the runs. *T_ALL from migrate*: counted from `xenroam migrate` (the method's without its",
    "prepare; the baselines: from `xl migrate`); *xenroam start-up*: from issuing `xenroam migrate` to its engine",
    "starting (Node.js in an emulated Dom0); *ready held*: how long `xenroam receive` held xl's ready message while",
    "the domain was complete and paused (its own steps: find, hold, arrival, relay), mean (min–max) in ms.",
    "*probed at*: the CN's ping targets, then the source address the CN saw on the VM's probe.",
    "",
    detailMarkdown(samples),
    "",
    "## How each subject ran",
    "",
    ...SUBJECTS.filter((subject) => samples.some((x) => x.subject === subject)).map((subject) => {
      const mine = samples.filter((x) => x.subject === subject);
      const at = (d) => [...new Set(mine.flatMap((x) => x.directions[d]?.probedAt ?? []))].join(", ");
      const own = at("cnToVmOwn");
      return (
        `- **${SUBJECT_LABEL[subject]}**: ${HOW[subject]} Probed at: CN→VM ${at("cnToVm")}` +
        `${own ? ` (and its own addresses ${own}, reported apart)` : ""}; VM→CN from ${at("vmToCn")}.`
      );
    }),
    "",
    "## Not recovered",
    "",
    ...(notRecovered.length === 0
      ? ["Every run recovered in both directions."]
      : notRecovered.map(
          (s) =>
            `- ${SUBJECT_LABEL[s.subject]}, ${s.link}, ${s.memoryMb} MB, run ${s.run} (${s.from} → ${s.to}): ` +
            Object.entries(s.directions)
              .filter(([, d]) => d.dwMs === null)
              .map(([k, d]) => `${k} silent for the last ${(d.trailingSilenceMs / 1000).toFixed(1)} s`)
              .join(", ") +
            (s.error ? `; ${s.error}` : ""),
        )),
    "",
  ].join("\n");
  writeFileSync(`${prefix}.md`, md);
  process.stderr.write(`wrote ${prefix}.json, ${prefix}.md, ${prefix}.svg\n`);
}

const HOW = {
  ordinary:
    "both Dom0s on site a's LAN (xb's tap moved onto lan-a, its Dom0 given 2001:db8:a::b); `xl migrate domu HOST` (xl's own ssh transport, no xenroam on either side); a guest without the mobility layer.",
  without:
    "the two sites; `xl migrate domu HOST` (xl's own ssh transport, no xenroam on either side); a guest without the mobility layer that finds its new address by SLAAC (radvd every 3–4 s). Before each run the guest forgets what it kept from the site it goes to (address, prefix route, router), as the lab bench does for its baselines: that favours it.",
  method:
    "the two sites; `xenroam --control … prepare` then `xenroam --control … migrate` (the guest's activation relayed by xenroam receive); the guest runs the mobility layer with home address 2001:db8:f::5 (the CN runs the correspondent agent).",
};

const [cmd, ...a] = process.argv.slice(2);
if (cmd === "status") status(a[0], Number(a[1]));
else if (cmd === "record") record(a[0], Number(a[1]));
else if (cmd === "report") await report(a[0], a[1], Number(a[2]), a[3], a[4] ?? "");
else {
  process.stderr.write(
    "usage: bench-report.mjs status RUNDIR SINCE_MS | record RUNDIR END_MS | report ...\n",
  );
  process.exit(2);
}

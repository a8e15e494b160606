import test from "ava";
import { firstReplyAfter, ingestProbeLine, newProbeLog, outage, percentile } from "../src/index.js";

function logOf(lines: string[]) {
  const log = newProbeLog();
  for (const l of lines) ingestProbeLine(log, l);
  return log;
}

test("the outage is the longest silence between replies, counting the last reply before the window", (t) => {
  // Probes every 10 ms; replies stop after t=1020 and resume at t=1100 (seq 4..10 unanswered, 11 answered).
  const lines: string[] = [];
  for (let seq = 1; seq <= 15; seq++) {
    const at = 1000 + (seq - 1) * 10;
    lines.push(`s ${seq} ${at}`);
    if (seq <= 3 || seq >= 11) lines.push(`r ${seq} ${at} ${at + 1}`);
  }
  const log = logOf(lines);
  const o = outage(log, 1025, 1200);
  t.is(o.gapMs, 1101 - 1021, "from the last reply before the window to the first after");
  t.is(o.lost, 7, "seq 4-10 never answered");
  t.is(firstReplyAfter(log, 1050), 1101);
  t.is(firstReplyAfter(log, 2000), undefined);
});

test("an undisturbed window shows the probe interval; late sends are not yet lost", (t) => {
  const lines: string[] = [];
  for (let seq = 1; seq <= 10; seq++) {
    const at = seq * 10;
    lines.push(`s ${seq} ${at}`, `r ${seq} ${at} ${at}`);
  }
  lines.push("s 11 110");
  t.deepEqual(outage(logOf(lines), 25, 130), { gapMs: 10, lost: 0 });
});

test("percentiles use the nearest rank", (t) => {
  const v = [5, 1, 4, 2, 3, 10, 9, 8, 7, 6];
  t.is(percentile(v, 50), 5);
  t.is(percentile(v, 95), 10);
  t.is(percentile([42], 50), 42);
  t.true(Number.isNaN(percentile([], 50)));
});

import test from "ava";
import {
  type ActivationTimes,
  bucketPercentile,
  type FanoutFigure,
  fanoutFigure,
  fanoutMarkdown,
  fanoutNamespaces,
  histogramBuckets,
  metricValue,
  planFanout,
  scaleMarkdown,
  WATCHERS_PER_SOURCE,
  wholeAnswer,
} from "../src/index.js";

test("the plan: the server's namespace with a source address for every 30 watchers, one namespace an agent", (t) => {
  const plan = planFanout("xs", 1000, 3);
  t.is(plan.control, "xs-fan");
  t.deepEqual(fanoutNamespaces("xs", 3), ["xs-fan", "xs-fcn1", "xs-fcn2", "xs-fcn3"]);
  t.is(plan.sources.length, Math.ceil(1000 / WATCHERS_PER_SOURCE));
  t.is(new Set(plan.sources).size, plan.sources.length);
  t.is(planFanout("xs", 10, 0).sources.length, 1);
  t.deepEqual(
    plan.veths.map((v) => `${v.netns}/${v.name} ${v.peerNetns}/${v.peer}`),
    ["xs-fan/fcn1 xs-fcn1/eth0", "xs-fan/fcn2 xs-fcn2/eth0", "xs-fan/fcn3 xs-fcn3/eth0"],
  );
  const control = plan.namespaces.find((n) => n.netns === "xs-fan")?.ops ?? [];
  const addresses = control.flatMap((o) => (o.op === "addAddress" ? [`${o.name} ${o.cidr}`] : []));
  t.true(addresses.includes("xrfan0 fd58:7266::1/64"), "the server's address, on the agents' bridge");
  t.true(addresses.includes(`lo ${plan.sources[0]}/128`));
  t.true(control.some((o) => o.op === "setLink" && o.name === "fcn2" && o.change.master === "xrfan0"));
  const cn = plan.namespaces.find((n) => n.netns === "xs-fcn2")?.ops ?? [];
  t.true(cn.some((o) => o.op === "addAddress" && o.cidr === `${plan.correspondents[1]?.address}/64`));
});

const activation = (revision: number, seq: number, sentAt: number): ActivationTimes => ({
  revision,
  seq,
  sentAt,
  answeredAt: sentAt + 4,
  sentWall: 1_000_000 + sentAt,
});

test("the figure: every watcher's receipt of every activation, matched by revision; the missing ones counted", (t) => {
  const activations = [activation(10, 2, 100), activation(12, 4, 200)];
  const receipts = new Map([
    [
      0,
      new Map([
        [10, 103],
        [11, 150],
        [12, 210],
      ]),
    ],
    [
      1,
      new Map([
        [10, 105],
        [12, 202],
      ]),
    ],
    // Watcher 2 missed revision 12 (it would have got a later one only).
    [2, new Map([[10, 120]])],
  ]);
  const agent = {
    received: new Map([
      [2, 1_000_000 + 130],
      [4, 1_000_000 + 215],
    ]),
    applied: new Map([
      [2, 1_000_000 + 160],
      [4, 1_000_000 + 240],
    ]),
  };
  const lazy = { received: new Map([[2, 1_000_000 + 140]]), applied: new Map([[2, 1_000_000 + 170]]) };
  const f = fanoutFigure("sqlite", 4, activations, receipts, [agent, lazy]);
  t.is(f.activations, 2);
  // Watcher 3 got nothing: 2 missing; watcher 2: 1.
  t.is(f.missing, 3);
  t.is(f.complete, 2);
  // From the request: 3, 5, 20 (revision 10); 10, 2 (revision 12). Nearest rank.
  t.is(f.p50Ms, 5);
  t.is(f.p95Ms, 20);
  t.is(f.maxMs, 20);
  t.is(f.fromAnswerP95Ms, 16);
  t.is(f.activateP50Ms, 4);
  t.deepEqual(f.agents, { agents: 2, complete: 1, receivedP50Ms: 30, receivedMaxMs: 40, appliedMaxMs: 70 });
});

test("no receipts at all: the figure says so instead of inventing numbers", (t) => {
  const f = fanoutFigure("etcd", 2, [activation(5, 1, 0)], new Map(), []);
  t.is(f.complete, 0);
  t.is(f.missing, 2);
  t.true(Number.isNaN(f.p95Ms));
  t.true(Number.isNaN(f.serverP95Ms));
  t.true(fanoutMarkdown([f]).endsWith("| 2 | etcd | 1 | 0 | - | - | - | - | - | 0 of 0 | - / - |"));
});

const figure = (store: "sqlite" | "etcd", watchers: number, p95Ms: number): FanoutFigure => ({
  store,
  watchers,
  activations: 20,
  p50Ms: p95Ms / 2,
  p95Ms,
  maxMs: p95Ms * 2,
  fromAnswerP95Ms: p95Ms - 3,
  activateP50Ms: 3.5,
  serverP95Ms: 50,
  complete: watchers,
  missing: 0,
  agents: { agents: 3, complete: 3, receivedP50Ms: 12, receivedMaxMs: 30, appliedMaxMs: 60 },
});

test("the table: a row a count and store, the counts readable, and in the scale report before the others", (t) => {
  const rows = [figure("sqlite", 10, 8), figure("etcd", 1000, 61.4)];
  const md = fanoutMarkdown(rows);
  const lines = md.split("\n");
  t.is(lines.length, 4);
  t.regex(lines[0] ?? "", /^\| correspondents watching \| store \| activations \| got every one \|/);
  t.is(lines[2], "| 10 | sqlite | 20 | 10 | 4 ms | 8 ms | 16 ms | 5 ms | ≤ 50 ms | 3 of 3 | 12 ms / 30 ms |");
  t.is(
    lines[3],
    "| 1,000 | etcd | 20 | 1000 | 30.7 ms | 61.4 ms | 122.8 ms | 58.4 ms | ≤ 50 ms | 3 of 3 | 12 ms / 30 ms |",
  );
  t.is(fanoutMarkdown([]), "");
  const report = scaleMarkdown({ fanout: rows, prepare: [], evacuation: [], notMeasured: [] });
  t.true(report.startsWith(md));
});

test("the server's own view: its fan-out histogram between two scrapes, as the p95's bucket", (t) => {
  const scrape = (counts: number[]) =>
    [
      "# HELP xenroam_control_watch_fanout_seconds From a binding change's commit to its answer.",
      "# TYPE xenroam_control_watch_fanout_seconds histogram",
      ...["0.001", "0.01", "0.1", "+Inf"].map(
        (le, i) => `xenroam_control_watch_fanout_seconds_bucket{le="${le}"} ${counts[i]}`,
      ),
      `xenroam_control_watch_fanout_seconds_count ${counts[3]}`,
      "xenroam_control_watch_clients 1003",
    ].join("\n");
  const before = histogramBuckets(scrape([5, 5, 5, 5]), "xenroam_control_watch_fanout_seconds");
  t.deepEqual(before, [
    [0.001, 5],
    [0.01, 5],
    [0.1, 5],
    [Infinity, 5],
  ]);
  // 100 more: 10 under 1 ms, 85 under 10 ms, 4 under 100 ms, 1 over.
  const after = histogramBuckets(scrape([15, 100, 104, 105]), "xenroam_control_watch_fanout_seconds");
  t.is(bucketPercentile(before, after, 50), 10);
  t.is(bucketPercentile(before, after, 95), 10);
  t.is(bucketPercentile(before, after, 99), 100);
  t.is(bucketPercentile(before, after, 100), Infinity);
  t.true(Number.isNaN(bucketPercentile(after, after, 95)), "nothing observed in between");
  t.is(metricValue(scrape([0, 0, 0, 0]), "xenroam_control_watch_clients"), 1003);
  t.true(Number.isNaN(metricValue("", "xenroam_control_watch_clients")));
});

test("a watcher's answer is whole once its Content-Length is read, or its last chunk", (t) => {
  const body = JSON.stringify({ revision: 7, changes: [{ revision: 7 }] });
  const sized = Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
  t.deepEqual(wholeAnswer(sized), { status: 200, text: body });
  t.is(wholeAnswer(sized.subarray(0, sized.length - 1)), undefined);
  const chunked = Buffer.from(
    `HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n` +
      `${(10).toString(16)}\r\n${body.slice(0, 10)}\r\n${(body.length - 10).toString(16)}\r\n${body.slice(10)}\r\n0\r\n\r\n`,
  );
  t.deepEqual(wholeAnswer(chunked), { status: 429, text: body });
  for (const cut of [20, chunked.length - 5, chunked.length - 3])
    t.is(wholeAnswer(chunked.subarray(0, cut)), undefined);
  t.is(
    wholeAnswer(Buffer.from("HTTP/1.1 200 OK\r\n\r\n{}")),
    undefined,
    "neither: it ends with the connection",
  );
});

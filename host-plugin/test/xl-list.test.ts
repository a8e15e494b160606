// `xl list` as xl prints it: the lines below are made with xl's own format (tools/xl/xl_info.c, list_domains:
// the header, then printf("%-40s %5d %5lu %5d     %c%c%c%c%c%c  %8.1f") per domain), not typed by hand.
import test from "ava";
import { parseXlList } from "../src/adapters/xl.js";

const HEADER = "Name                                        ID   Mem VCPUs\tState\tTime(s)";
const line = (name: string, domid: number, mem: number, vcpus: number, state: string, cpu: number) =>
  `${name.padEnd(40)} ${String(domid).padStart(5)} ${String(mem).padStart(5)} ${String(vcpus).padStart(5)}     ${state}  ${cpu.toFixed(1).padStart(8)}`;

test("xl list: the guests by name; Dom0, dying or shut-down domains and mid-migration names left out", (t) => {
  const text = [
    HEADER,
    line("Domain-0", 0, 2048, 2, "r-----", 812.3),
    line("web1", 3, 512, 1, "-b----", 12.5),
    line("a name with spaces", 4, 256, 1, "--p---", 0.4),
    line("db--incoming", 7, 1024, 2, "--p---", 0.0),
    line("cache--migratedaway", 5, 1024, 2, "--ps-d", 3.1),
    line("halting", 6, 256, 1, "---sp-", 1.0),
    line("averyveryveryveryveryveryveryverylongname-of-48-chars", 9, 128, 1, "-b----", 1.0),
    "",
  ].join("\n");
  t.deepEqual(parseXlList(text), [
    "web1",
    "a name with spaces",
    "averyveryveryveryveryveryveryverylongname-of-48-chars",
  ]);
  t.deepEqual(parseXlList(`${HEADER}\n${line("Domain-0", 0, 2048, 2, "r-----", 1)}\n`), []);
  t.deepEqual(parseXlList(""), []);
});

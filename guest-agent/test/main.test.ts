// xenroam-agent's command line: what it refuses before it touches anything (no root needed for these). A
// correspondent trusts only a control server key it was given, never one fetched from that server.
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import test from "ava";

const MAIN = fileURLToPath(new URL("../src/main.js", import.meta.url));

function agent(...args: string[]): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [MAIN, ...args], { timeout: 10_000 }, (err, _stdout, stderr) =>
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stderr }),
    );
  });
}

test("a correspondent refuses to start without --public-key, and says where the key comes from", async (t) => {
  const r = await agent(
    "--correspondent",
    "--control",
    "https://[2001:db8:c::1]:7360",
    "--token-file",
    "/nonexistent/cn.token",
  );
  t.is(r.code, 2);
  t.regex(r.stderr, /--correspondent needs --public-key FILE/);
  t.regex(r.stderr, /xenroam-control init wrote \/var\/lib\/xenroam\/control\.key\.pub/);
  t.notRegex(r.stderr, /must run as root|cn\.token/, "refused before anything else is looked at");
  const noControl = await agent("--correspondent", "--public-key", "/nonexistent/control.key.pub");
  t.is(noControl.code, 2);
  t.regex(noControl.stderr, /--correspondent needs --control URL/);
});

test("a mobile node needs its VM's name and the control server", async (t) => {
  const r = await agent("--hoa", "2001:db8:f::10", "--control-ca", "/nonexistent/ca.pem");
  t.is(r.code, 2);
  t.regex(r.stderr, /--hoa needs --vm NAME and --control URL/);
});

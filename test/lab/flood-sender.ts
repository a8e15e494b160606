// Run inside a lab namespace by flood.root.test.ts (not a test itself): registers a standby with the VM's
// token as the guest agent would, sends one real binding datagram (three copies, as the mobile node does), or
// floods a correspondent with forged datagrams from many source addresses at a fixed rate.
//   node flood-sender.js register URL CA TOKEN_FILE VM LOCATOR     -> prints the signed activation (JSON)
//   node flood-sender.js send ADDRESS PORT BINDING_JSON            -> prints {"sentAt": ms}
//   node flood-sender.js flood ADDRESS PORT TEMPLATE_JSON SOURCES RATE SECONDS -> prints {"sent": n}
import { createSocket, type Socket } from "node:dgram";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { ControlClient } from "@xenroam/control";

const [, , mode, ...args] = process.argv;

async function register(url: string, ca: string, tokenFile: string, vm: string, locator: string) {
  const token = readFileSync(tokenFile, "utf8").trim();
  const client = new ControlClient(url, { token, ca: readFileSync(ca, "utf8") });
  process.stdout.write(`${JSON.stringify(await client.registerStandby(vm, locator))}\n`);
}

function sendOn(socket: Socket, payload: Buffer, port: number, address: string): Promise<void> {
  return new Promise((resolve) => socket.send(payload, port, address, () => resolve()));
}

async function send(address: string, port: string, binding: string) {
  const socket = createSocket({ type: "udp6" });
  const payload = Buffer.from(binding);
  const sentAt = Date.now();
  await sendOn(socket, payload, Number(port), address);
  for (const ms of [20, 180]) {
    await new Promise((r) => setTimeout(r, ms));
    await sendOn(socket, payload, Number(port), address);
  }
  socket.close();
  process.stdout.write(`${JSON.stringify({ sentAt })}\n`);
}

async function flood(
  address: string,
  port: string,
  template: string,
  sources: string,
  rate: string,
  seconds: string,
) {
  const base = JSON.parse(template) as Record<string, unknown>;
  const sockets = await Promise.all(
    sources.split(",").map(
      (source) =>
        new Promise<Socket>((resolve) => {
          const s = createSocket({ type: "udp6" });
          s.on("error", () => {});
          s.bind(0, source, () => resolve(s));
        }),
    ),
  );
  const perTick = Math.max(1, Math.round(Number(rate) / 100));
  const end = Date.now() + Number(seconds) * 1000;
  let sent = 0;
  while (Date.now() < end) {
    const tick = Date.now();
    for (let i = 0; i < perTick; i++) {
      // The worst a stranger can do: the real key id, a current standby's sequence, a random signature —
      // every cheap check passes and only the signature verification refuses it.
      const forged = { ...base, sig: randomBytes(64).toString("base64url") };
      const s = sockets[sent % sockets.length] as Socket;
      s.send(Buffer.from(JSON.stringify(forged)), Number(port), address);
      sent++;
    }
    await new Promise((r) => setTimeout(r, Math.max(0, 10 - (Date.now() - tick))));
  }
  for (const s of sockets) s.close();
  process.stdout.write(`${JSON.stringify({ sent })}\n`);
}

const run =
  mode === "register"
    ? register(args[0] ?? "", args[1] ?? "", args[2] ?? "", args[3] ?? "", args[4] ?? "")
    : mode === "send"
      ? send(args[0] ?? "", args[1] ?? "", args[2] ?? "")
      : mode === "flood"
        ? flood(args[0] ?? "", args[1] ?? "", args[2] ?? "", args[3] ?? "", args[4] ?? "", args[5] ?? "")
        : Promise.reject(new Error(`unknown mode ${mode}`));
run.catch((err: unknown) => {
  process.stderr.write(`flood-sender: ${(err as Error).message}\n`);
  process.exit(1);
});

// The control server's HTTP+JSON API over ControlService. Every request but the public key is
// authenticated with a bearer token: admin tokens manage the registry; a VM's token may register standby
// locators only for that VM; host and correspondent tokens may watch. Bad input gets a 4xx with a reason.

import { timingSafeEqual } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { SignedBinding } from "./bindings.js";
import { ControlError, type ControlService } from "./service.js";

export interface Credentials {
  readonly admin: readonly string[];
  /** VM name -> token. */
  readonly vms: Readonly<Record<string, string>>;
  /** Host or correspondent name -> token (may watch and relay signed bindings). */
  readonly peers: Readonly<Record<string, string>>;
}

type Principal = { kind: "admin" } | { kind: "vm"; name: string } | { kind: "peer"; name: string };

const MAX_BODY = 16 * 1024;

function same(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

function principalOf(req: IncomingMessage, creds: Credentials): Principal | undefined {
  const m = /^Bearer (\S+)$/.exec(req.headers.authorization ?? "");
  const token = m?.[1];
  if (!token) return undefined;
  if (creds.admin.some((t) => same(t, token))) return { kind: "admin" };
  for (const [name, t] of Object.entries(creds.vms)) if (same(t, token)) return { kind: "vm", name };
  for (const [name, t] of Object.entries(creds.peers)) if (same(t, token)) return { kind: "peer", name };
  return undefined;
}

async function body(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > MAX_BODY) throw new ControlError(400, `request body larger than ${MAX_BODY} bytes`);
    chunks.push(c as Buffer);
  }
  try {
    const v = JSON.parse(Buffer.concat(chunks).toString("utf8")) as unknown;
    if (typeof v !== "object" || v === null || Array.isArray(v)) throw new Error("not an object");
    return v as Record<string, unknown>;
  } catch {
    throw new ControlError(400, "the body must be a JSON object");
  }
}

const str = (o: Record<string, unknown>, k: string): string => {
  const v = o[k];
  if (typeof v !== "string" || v.length === 0 || v.length > 256)
    throw new ControlError(400, `"${k}" must be a non-empty string`);
  return v;
};

function signedBinding(o: Record<string, unknown>): SignedBinding {
  const seq = o.seq;
  const expiresAt = o.expiresAt;
  if (typeof seq !== "number" || typeof expiresAt !== "number") {
    throw new ControlError(400, '"seq" and "expiresAt" must be numbers');
  }
  return {
    vm: str(o, "vm"),
    hoa: str(o, "hoa"),
    locator: str(o, "locator"),
    seq,
    expiresAt,
    sig: str(o, "sig"),
  };
}

export function createControlServer(
  service: ControlService,
  creds: Credentials,
  publicKeyPem: string,
): Server {
  const send = (res: ServerResponse, status: number, value: unknown) => {
    res.writeHead(status, { "content-type": "application/json" });
    res.end(JSON.stringify(value));
  };
  return createServer((req, res) => {
    void (async () => {
      const url = new URL(req.url ?? "/", "http://control");
      const path = url.pathname;
      if (req.method === "GET" && path === "/v1/public-key") {
        res.writeHead(200, { "content-type": "application/x-pem-file" });
        res.end(publicKeyPem);
        return;
      }
      const who = principalOf(req, creds);
      if (!who) throw new ControlError(403, "missing or unknown bearer token");
      const standby = /^\/v1\/vms\/([^/]+)\/standby$/.exec(path);
      if (req.method === "POST" && path === "/v1/vms") {
        if (who.kind !== "admin") throw new ControlError(403, "only an admin may register VMs");
        const b = await body(req);
        send(res, 200, await service.registerVm(str(b, "name"), str(b, "hoa")));
      } else if (req.method === "POST" && standby) {
        const vm = decodeURIComponent(standby[1] ?? "");
        if (!(who.kind === "admin" || (who.kind === "vm" && who.name === vm))) {
          throw new ControlError(403, `this token may not register locators for ${vm}`);
        }
        const b = await body(req);
        send(res, 200, await service.registerStandby(vm, str(b, "locator")));
      } else if (req.method === "POST" && path === "/v1/bindings") {
        const signed = signedBinding(await body(req));
        if (who.kind === "vm" && who.name !== signed.vm) {
          throw new ControlError(403, `this token may not activate bindings of ${signed.vm}`);
        }
        const verdict = await service.activate(signed);
        if (verdict.ok) send(res, 200, { revision: verdict.revision });
        else send(res, 409, { error: verdict.reason });
      } else if (req.method === "GET" && path === "/v1/bindings") {
        if (who.kind === "vm") throw new ControlError(403, "VMs may not watch bindings");
        const since = Number(url.searchParams.get("since") ?? "0");
        const wait = Math.min(30_000, Number(url.searchParams.get("wait") ?? "0"));
        if (!Number.isInteger(since) || since < 0 || !Number.isFinite(wait) || wait < 0) {
          throw new ControlError(400, "since and wait must be non-negative whole numbers");
        }
        send(res, 200, await service.changes(since, wait));
      } else {
        throw new ControlError(404, `no route ${req.method ?? ""} ${path}`);
      }
    })().catch((err: unknown) => {
      if (res.headersSent) return;
      if (err instanceof ControlError) send(res, err.status, { error: err.message });
      else send(res, 500, { error: "internal error" });
    });
  });
}

// XAPI's wire as xenroam speaks it: one JSON-RPC POST per connection, written only once the connection is
// known to reach the XAPI meant — https with the server's certificate checked against a CA file or a pinned
// SHA-256 fingerprint, xapi's own Unix socket in Dom0, or plain HTTP on this host's loopback. Until then
// nothing of a call (the password of session.login_with_password, a session id) leaves xenroam. The npm
// `xen-api` client runs over it (adapters/xapi.ts): its own transport cannot be given a CA, a pin or a
// socket path (its undici Agent takes `allowUnauthorized` only), and under Bun — the XAPI bundle's runtime —
// `undici` is Bun's own, which ignores the connection options altogether.

import { readFileSync } from "node:fs";
import { connect as netConnect, isIP, type Socket } from "node:net";
import { connect as tlsConnect, type TLSSocket } from "node:tls";

/**
 * xapi's Unix socket in Dom0 (xapi-project/xen-api ocaml/xapi/xapi_globs.ml 81, unix_domain_socket). Calls on
 * it are pre-authenticated as root (ocaml/xapi/context.ml preauth; xapi_session.ml login_with_password: "we
 * trust requests from local unix filename sockets"), its directory is root's alone (xapi.ml
 * listen_unix_socket: mode 0700), and it never leaves the host: no password, no certificate.
 */
export const XAPI_SOCKET = "/var/lib/xcp/xapi";

/** Each XAPI host's own certificate and key (ocaml/xapi/xapi_globs.ml 775, server_cert_path). */
export const XAPI_HOST_CERT = "/etc/xensource/xapi-ssl.pem";

/** A XAPI endpoint or trust setting xenroam will not use, or a peer it refused: the message says what to do. */
export class XapiTrustError extends Error {
  override readonly name = "XapiTrustError";
}

/** The connection failed or XAPI answered something that is not a JSON-RPC reply. */
export class XapiWireError extends Error {
  override readonly name = "XapiWireError";
}

/** An error XAPI answered, as the xen-api client's XapiError carries it: code and parameters. */
export class XapiCallError extends Error {
  override readonly name = "XapiCallError";
  constructor(
    readonly code: string,
    readonly params: readonly string[],
  ) {
    super(`${code}(${params.join(", ")})`);
  }
}

/** How an https:// XAPI is checked. Neither `ca` nor `fingerprints`: the system's certificate authorities. */
export interface XapiTrust {
  /** PEM certificates the server's chain must end in; the URL's host must be one the certificate names. */
  readonly ca?: string;
  /** SHA-256 fingerprints (normalized: 32 uppercase hex pairs joined by ":"), one of which the certificate has. */
  readonly fingerprints?: readonly string[];
  /** http:// to another host: the password and session cross the network in clear, to an unchecked peer. */
  readonly insecureHttp?: boolean;
  /** The options' prefix in messages: "--xapi" (this pool) or "--xapi-remote" (the other pool). */
  readonly flag?: string;
}

export type XapiEndpoint =
  | { readonly kind: "unix"; readonly path: string }
  | { readonly kind: "http"; readonly host: string; readonly port: number }
  | { readonly kind: "https"; readonly host: string; readonly port: number; readonly trust: XapiTrust };

/** "ab:cd…", "ABCD…", or openssl's "sha256 Fingerprint=AB:CD:…" → "AB:CD:…" (SHA-256 only). */
export function normalizeFingerprint(text: string, flag = "--xapi"): string {
  const hex = text
    .trim()
    .replace(/^sha-?256\s*fingerprint\s*=\s*/i, "")
    .replace(/[:\s]/g, "");
  if (!/^[0-9a-f]{64}$/i.test(hex))
    throw new XapiTrustError(
      `${flag}-fingerprint takes a certificate's SHA-256 fingerprint (64 hex digits, colons allowed), as \`openssl x509 -noout -fingerprint -sha256 -in ${XAPI_HOST_CERT}\` prints it on the pool master; got "${text}"`,
    );
  return (hex.toUpperCase().match(/../g) ?? []).join(":");
}

/** The certificates of a CA file, refusing a file that holds a private key (xapi-ssl.pem itself does). */
export function readCaFile(file: string, flag = "--xapi"): string {
  let pem: string;
  try {
    pem = readFileSync(file, "utf8");
  } catch (err) {
    throw new XapiTrustError(`${flag}-ca: cannot read ${file}: ${(err as Error).message}`);
  }
  if (/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(pem))
    throw new XapiTrustError(
      `${flag}-ca: ${file} holds a private key; give the certificate alone (on the master: openssl x509 -in ${XAPI_HOST_CERT} -out master.crt) and keep the key where it is`,
    );
  if (!pem.includes("-----BEGIN CERTIFICATE-----"))
    throw new XapiTrustError(`${flag}-ca: ${file} holds no PEM certificate`);
  return pem;
}

const isLoopback = (host: string): boolean =>
  host === "localhost" ||
  (isIP(host) === 4 && host.startsWith("127.")) ||
  host === "::1" ||
  /^::ffff:127\./i.test(host);

/**
 * Where a XAPI URL leads and how it is checked: `unix:/var/lib/xcp/xapi`, `https://HOST[:PORT]` (checked by
 * `trust`), `http://` on this host's loopback (or anywhere with `insecureHttp`). Refuses the rest, saying why.
 */
export function xapiEndpoint(url: string, trust: XapiTrust = {}): XapiEndpoint {
  const flag = trust.flag ?? "--xapi";
  const pinned = trust.fingerprints !== undefined && trust.fingerprints.length > 0;
  if (trust.ca !== undefined && pinned)
    throw new XapiTrustError(`give ${flag}-ca or ${flag}-fingerprint, not both`);
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new XapiTrustError(
      `"${url}" is not a XAPI URL (https://HOST, or unix:${XAPI_SOCKET} in the pool's own Dom0)`,
    );
  }
  if (u.username || u.password)
    throw new XapiTrustError(
      `${url.replace(/\/\/[^@/]*@/, "//…@")}: a password in the URL would be on the command line, readable by any user of this host; give the URL without it and the password in a file (${flag}-password-file)`,
    );
  if (u.protocol === "unix:") {
    if (trust.ca !== undefined || pinned)
      throw new XapiTrustError(
        `${flag}-ca and ${flag}-fingerprint are for an https:// XAPI; xapi's Unix socket (${u.pathname}) has no certificate and needs none`,
      );
    return { kind: "unix", path: u.pathname };
  }
  const host = u.hostname.replace(/^\[|\]$/g, "");
  if (u.protocol === "https:") {
    return { kind: "https", host, port: u.port ? Number(u.port) : 443, trust };
  }
  if (u.protocol === "http:") {
    if (trust.ca !== undefined || pinned)
      throw new XapiTrustError(`${flag}-ca and ${flag}-fingerprint need an https:// URL, not ${url}`);
    if (!isLoopback(host) && !trust.insecureHttp)
      throw new XapiTrustError(
        `${url} is plain HTTP to another host: the password would cross the network in clear, to a peer nobody checked. Use https://${u.host} (with ${flag}-ca or ${flag}-fingerprint), or, in a lab only, --xapi-insecure-http`,
      );
    return { kind: "http", host, port: u.port ? Number(u.port) : 80 };
  }
  throw new XapiTrustError(`${url}: XAPI is reached over https://, or unix:${XAPI_SOCKET} in its own Dom0`);
}

const where = (e: XapiEndpoint): string =>
  e.kind === "unix"
    ? `XAPI at ${e.path}`
    : `XAPI at ${e.kind}://${isIP(e.host) === 6 ? `[${e.host}]` : e.host}:${e.port}`;

/** Why a TLS peer is not the XAPI meant, or undefined when it is; nothing has been written to it yet. */
function refusal(socket: TLSSocket, e: Extract<XapiEndpoint, { kind: "https" }>): string | undefined {
  const flag = e.trust.flag ?? "--xapi";
  const fp = socket.getPeerCertificate()?.fingerprint256;
  if (!fp) return `${where(e)} presented no certificate; xenroam sent it nothing`;
  const pins = e.trust.fingerprints ?? [];
  if (pins.length > 0) {
    if (pins.includes(fp)) return undefined;
    return `${where(e)} presented a certificate with SHA-256 fingerprint ${fp}, which is not pinned (${flag}-fingerprint ${pins.join(", ")}): xenroam sent it nothing. If the pool's certificate changed (a new master, a renewed certificate), read the new one on the master with \`openssl x509 -noout -fingerprint -sha256 -in ${XAPI_HOST_CERT}\` and pin that`;
  }
  if (socket.authorized) return undefined;
  const why = String(socket.authorizationError ?? "not trusted");
  return `${where(e)}'s certificate is not trusted (${why}): xenroam sent it nothing, no password. Its SHA-256 fingerprint is ${fp}; if that is the pool master's (on the master: \`openssl x509 -noout -fingerprint -sha256 -in ${XAPI_HOST_CERT}\`), pin it with ${flag}-fingerprint ${fp}, or give the CA that signed it with ${flag}-ca FILE${e.trust.ca !== undefined && /ALTNAME|HOSTNAME/i.test(why) ? ` (the certificate does not name ${e.host}: use a name or address it lists, or pin the fingerprint)` : ""}`;
}

const CONNECT_TIMEOUT_MS = 30_000;

/** A connection to the endpoint, checked before anything is written; rejects with XapiTrustError if refused. */
function open(e: XapiEndpoint): Promise<Socket> {
  return new Promise((resolve, reject) => {
    let settled = false;
    const settle = (err?: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (err) {
        socket.destroy();
        reject(err);
      } else resolve(socket);
    };
    const timer = setTimeout(
      () => settle(new XapiWireError(`${where(e)}: no connection within ${CONNECT_TIMEOUT_MS / 1000} s`)),
      CONNECT_TIMEOUT_MS,
    );
    let socket: Socket;
    if (e.kind === "https") {
      const tls = tlsConnect({
        host: e.host,
        port: e.port,
        ...(isIP(e.host) ? {} : { servername: e.host }),
        ...(e.trust.ca !== undefined ? { ca: e.trust.ca } : {}),
        // Checked by `refusal` before the first byte of the request: a pinned fingerprint needs the
        // handshake to finish with a self-signed certificate, and the message needs its fingerprint.
        rejectUnauthorized: false,
      });
      socket = tls;
      tls.once("secureConnect", () => {
        const why = refusal(tls, e);
        settle(why === undefined ? undefined : new XapiTrustError(why));
      });
    } else {
      socket = e.kind === "unix" ? netConnect({ path: e.path }) : netConnect({ host: e.host, port: e.port });
      socket.once("connect", () => settle());
    }
    socket.once("error", (err) => settle(new XapiWireError(`cannot connect to ${where(e)}: ${err.message}`)));
  });
}

const MAX_REPLY = 64 * 1024 * 1024;

interface Reply {
  readonly status: number;
  readonly headers: ReadonlyMap<string, string>;
  readonly body: Buffer;
}

/** The reply once `buf` holds all of it (Content-Length, chunked, or the connection closed), else undefined. */
function parseReply(buf: Buffer, ended: boolean): Reply | undefined {
  const end = buf.indexOf("\r\n\r\n");
  if (end < 0) {
    if (ended) throw new XapiWireError("the connection closed before a complete HTTP reply");
    return undefined;
  }
  const [statusLine = "", ...lines] = buf.toString("latin1", 0, end).split("\r\n");
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(statusLine);
  if (!m) throw new XapiWireError(`not an HTTP reply: ${JSON.stringify(statusLine.slice(0, 80))}`);
  const headers = new Map<string, string>();
  for (const l of lines) {
    const i = l.indexOf(":");
    if (i > 0) headers.set(l.slice(0, i).trim().toLowerCase(), l.slice(i + 1).trim());
  }
  const rest = buf.subarray(end + 4);
  const status = Number(m[1]);
  if (/chunked/i.test(headers.get("transfer-encoding") ?? "")) {
    const parts: Buffer[] = [];
    let at = 0;
    for (;;) {
      const nl = rest.indexOf("\r\n", at);
      if (nl < 0) break;
      const size = parseInt(rest.toString("latin1", at, nl).split(";")[0] ?? "", 16);
      if (!Number.isFinite(size)) throw new XapiWireError("a malformed chunked reply");
      if (size === 0) return { status, headers, body: Buffer.concat(parts) };
      if (rest.length < nl + 2 + size + 2) break;
      parts.push(rest.subarray(nl + 2, nl + 2 + size));
      at = nl + 2 + size + 2;
    }
    if (ended) throw new XapiWireError("the connection closed inside a chunked reply");
    return undefined;
  }
  const length = headers.get("content-length");
  if (length !== undefined) {
    const n = Number(length);
    if (!Number.isInteger(n) || n < 0) throw new XapiWireError(`a bad Content-Length: ${length}`);
    if (rest.length >= n) return { status, headers, body: rest.subarray(0, n) };
    if (ended) throw new XapiWireError("the connection closed before the whole reply");
    return undefined;
  }
  return ended ? { status, headers, body: rest } : undefined;
}

/** One HTTP POST on a checked connection; the connection is closed after the reply. */
function post(e: XapiEndpoint, path: string, body: Buffer): Promise<Reply> {
  return open(e).then(
    (socket) =>
      new Promise<Reply>((resolve, reject) => {
        let buf = Buffer.alloc(0);
        let done = false;
        const finish = (ended: boolean) => {
          if (done) return;
          try {
            const r = parseReply(buf, ended);
            if (!r) return;
            done = true;
            socket.destroy();
            resolve(r);
          } catch (err) {
            done = true;
            socket.destroy();
            reject(err instanceof Error ? err : new XapiWireError(String(err)));
          }
        };
        socket.on("data", (c: Buffer) => {
          buf = Buffer.concat([buf, c]);
          if (buf.length > MAX_REPLY) {
            done = true;
            socket.destroy();
            reject(new XapiWireError(`${where(e)}: a reply over ${MAX_REPLY} bytes`));
            return;
          }
          finish(false);
        });
        socket.on("end", () => finish(true));
        socket.on("close", () => finish(true));
        socket.on("error", (err) => {
          if (done) return;
          done = true;
          reject(new XapiWireError(`${where(e)}: ${err.message}`));
        });
        const host = e.kind === "unix" ? "localhost" : isIP(e.host) === 6 ? `[${e.host}]` : e.host;
        socket.write(
          `POST ${path} HTTP/1.1\r\nHost: ${host}\r\nContent-Type: application/json\r\nAccept: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`,
        );
        socket.write(body);
      }),
  );
}

let nextId = 0;

/**
 * A JSON-RPC caller for the endpoint, in the shape the xen-api client's transports have: (method, params) →
 * the result, or XapiCallError with XAPI's code and parameters (SESSION_INVALID, HOST_IS_SLAVE, …).
 */
export function jsonRpcTransport(e: XapiEndpoint): (method: string, params: unknown[]) => Promise<unknown> {
  return async (method, params) => {
    const id = ++nextId;
    const r = await post(e, "/jsonrpc", Buffer.from(JSON.stringify({ jsonrpc: "2.0", method, params, id })));
    if (r.status < 200 || r.status > 299) throw new XapiWireError(`${where(e)} answered HTTP ${r.status}`);
    if (!(r.headers.get("content-type") ?? "").startsWith("application/json"))
      throw new XapiWireError(`${where(e)} does not speak JSON-RPC (XAPI 1.x / XenServer 7.3 or newer do)`);
    let reply: { result?: unknown; error?: { message?: unknown; data?: unknown } | null };
    try {
      reply = JSON.parse(r.body.toString("utf8")) as typeof reply;
    } catch {
      throw new XapiWireError(`${where(e)} answered JSON-RPC that does not parse`);
    }
    if (reply.error !== undefined && reply.error !== null) {
      const { message, data } = reply.error;
      throw new XapiCallError(
        typeof message === "string" ? message : "UNKNOWN_ERROR",
        Array.isArray(data) ? data.map((d) => (typeof d === "string" ? d : JSON.stringify(d))) : [],
      );
    }
    return reply.result;
  };
}

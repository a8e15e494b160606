#!/usr/bin/env node
// xenroam-control: the control server daemon (`serve`, over TLS with --tls-cert/--tls-key, on SQLite or on an
// etcd cluster several servers share), its one-time setup (`init`), and the admin's commands against a running
// server (`put-sites`, `add-vm`, `add-peer`, `rollback`, `show`). JSON logs on stderr; SIGTERM/SIGINT answer
// open long polls, close the listener and the store, and exit 0.

import { createPublicKey } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { dirname } from "node:path";
import { Command, InvalidArgumentError } from "commander";
import { canonicalIpv6 } from "@xenroam/core";
import { exportPrivateKey, exportPublicKey, generateSigningKeys, importPrivateKey } from "./bindings.js";
import { ControlClient, ControlClientError } from "./client.js";
import { createControlServer, DEFAULT_LIMITS, ROUTES } from "./http.js";
import { createControlMetrics, createMetricsServer } from "./metrics.js";
import { ControlError, ControlService } from "./service.js";
import { SqliteStore, StoreError } from "./sqlite.js";
import type { Store } from "./store.js";
import { loadTlsCredentials, TlsSetupError } from "./tls.js";

const DEFAULTS = {
  listen: "[::]:7360",
  database: "/var/lib/xenroam/control.db",
  key: "/var/lib/xenroam/control.key",
  adminTokenFile: "/etc/xenroam/admin.token",
  server: "http://[::1]:7360",
};

class UsageError extends Error {}

const log = (event: string, fields: Record<string, unknown> = {}) =>
  process.stderr.write(
    `${JSON.stringify({ ts: new Date().toISOString(), component: "control", event, ...fields })}\n`,
  );

export function parseListen(text: string): { host: string; port: number } {
  const m = /^\[([0-9A-Fa-f:.]+)\]:(\d{1,5})$/.exec(text) ?? /^([0-9.]+|localhost):(\d{1,5})$/.exec(text);
  const port = Number(m?.[2]);
  if (!m || !(port >= 0 && port <= 65535)) {
    throw new InvalidArgumentError(
      `expected [IPV6]:PORT (e.g. [::]:7360 or [2001:db8:c::1]:7360), got "${text}"`,
    );
  }
  return { host: m[1] as string, port };
}

function readSecret(file: string, what: string, fix: string): string[] {
  if (!existsSync(file)) throw new UsageError(`${what} ${file} does not exist; ${fix}`);
  const tokens = readFileSync(file, "utf8")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#"));
  if (tokens.length === 0) throw new UsageError(`${what} ${file} holds no token; ${fix}`);
  if (tokens.some((t) => t.length < 16 || /\s/.test(t))) {
    throw new UsageError(`${what} ${file}: a token must be at least 16 characters, no spaces`);
  }
  return tokens;
}

function writeSecret(file: string, text: string): boolean {
  if (existsSync(file)) return false;
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  writeFileSync(file, text, { mode: 0o600, flag: "wx" });
  chmodSync(file, 0o600);
  return true;
}

interface ServeOptions {
  listen: { host: string; port: number };
  database?: string;
  store?: string;
  etcdCa?: string;
  etcdCert?: string;
  etcdKey?: string;
  etcdUser?: string;
  etcdPasswordFile?: string;
  key: string;
  adminTokenFile: string;
  tlsCert?: string;
  tlsKey?: string;
  reserve: string[];
  metricsListen?: { host: string; port: number };
}

/** The password of an etcd user: from its file (first line), else XENROAM_ETCD_PASSWORD; never from argv. */
function etcdPassword(o: ServeOptions): string | undefined {
  if (o.etcdPasswordFile === undefined) return process.env.XENROAM_ETCD_PASSWORD || undefined;
  if (!existsSync(o.etcdPasswordFile))
    throw new UsageError(`--etcd-password-file ${o.etcdPasswordFile} does not exist`);
  return readFileSync(o.etcdPasswordFile, "utf8").split("\n")[0]?.replace(/\r$/, "") || undefined;
}

/** The store `serve` was given: the SQLite file (the default), or the etcd cluster of --store. */
async function openStore(o: ServeOptions, publicKeyPem: string): Promise<{ store: Store; where: object }> {
  const etcdFlags = (
    [
      ["--etcd-ca", o.etcdCa],
      ["--etcd-cert", o.etcdCert],
      ["--etcd-key", o.etcdKey],
      ["--etcd-user", o.etcdUser],
      ["--etcd-password-file", o.etcdPasswordFile],
    ] as const
  ).flatMap(([flag, v]) => (v === undefined ? [] : [flag]));
  if (o.store === undefined) {
    if (etcdFlags.length > 0) throw new UsageError(`${etcdFlags.join(", ")}: only with --store etcd://…`);
    const database = o.database ?? DEFAULTS.database;
    mkdirSync(dirname(database), { recursive: true });
    return { store: new SqliteStore(database), where: { database } };
  }
  if (o.database !== undefined) {
    throw new UsageError(
      "--store and --database: give one (--database FILE keeps the registry in one SQLite file; --store etcd://… shares it with other servers on an etcd cluster)",
    );
  }
  const { EtcdStore, parseEtcdUrl } = await import("./etcd.js");
  let target: ReturnType<typeof parseEtcdUrl>;
  try {
    target = parseEtcdUrl(o.store);
  } catch (err) {
    throw new UsageError(`--store: ${(err as Error).message}`);
  }
  if (!target.tls && (o.etcdCa || o.etcdCert || o.etcdKey)) {
    throw new UsageError("--etcd-ca, --etcd-cert and --etcd-key are for TLS: write the cluster as etcds://…");
  }
  if ((o.etcdCert === undefined) !== (o.etcdKey === undefined)) {
    throw new UsageError(
      "--etcd-cert and --etcd-key go together: this client's certificate and its key (PEM), for a cluster that asks for one",
    );
  }
  const pem = (flag: string, file: string | undefined) => {
    if (file !== undefined && !existsSync(file)) throw new UsageError(`${flag} ${file} does not exist`);
    return file === undefined ? undefined : readFileSync(file);
  };
  const [ca, cert, key] = [
    pem("--etcd-ca", o.etcdCa),
    pem("--etcd-cert", o.etcdCert),
    pem("--etcd-key", o.etcdKey),
  ];
  let user: { name: string; password: string } | undefined;
  if (o.etcdUser !== undefined) {
    const password = etcdPassword(o);
    if (password === undefined) {
      throw new UsageError(
        `etcd user ${o.etcdUser}: give its password in --etcd-password-file FILE or in the XENROAM_ETCD_PASSWORD environment variable (never on the command line)`,
      );
    }
    user = { name: o.etcdUser, password };
  } else if (o.etcdPasswordFile !== undefined) {
    throw new UsageError("--etcd-password-file goes with --etcd-user NAME");
  }
  const store = await EtcdStore.open({
    ...target,
    log,
    ...(ca ? { ca } : {}),
    ...(cert && key ? { cert, key } : {}),
    ...(user ? { user } : {}),
  });
  try {
    await store.pinSigningKey(publicKeyPem);
  } catch (err) {
    await store.close();
    throw err;
  }
  const url = `${target.tls ? "etcds" : "etcd"}://${target.endpoints.join(",")}${target.prefix}`;
  return { store, where: { store: url } };
}

async function serve(o: ServeOptions): Promise<void> {
  process.stderr.on("error", () => {});
  if ((o.tlsCert === undefined) !== (o.tlsKey === undefined)) {
    throw new UsageError(
      "--tls-cert and --tls-key go together: give both (the server's certificate and its private key, PEM) or neither (plain HTTP)",
    );
  }
  const tls = o.tlsCert && o.tlsKey ? loadTlsCredentials(o.tlsCert, o.tlsKey) : undefined;
  const init = "run `xenroam-control init` first (it creates the key and an admin token)";
  if (!existsSync(o.key)) throw new UsageError(`signing key ${o.key} does not exist; ${init}`);
  const privateKey = importPrivateKey(readFileSync(o.key, "utf8"));
  const publicKey = createPublicKey(privateKey);
  const adminTokens = readSecret(o.adminTokenFile, "admin token file", init);
  const { store, where } = await openStore(o, exportPublicKey(publicKey));
  // No VM may claim the server's own addresses as a locator: the one it listens on, and those named.
  const unspecified = o.listen.host === "::" || o.listen.host === "0.0.0.0" || o.listen.host === "localhost";
  const reserved = [...(unspecified || !o.listen.host.includes(":") ? [] : [o.listen.host]), ...o.reserve];
  const service = new ControlService({ store, privateKey, publicKey, adminTokens, reserved });
  // Prometheus scrapes a listener of its own, without a token (an admin's would let it rule the registry).
  const metrics = o.metricsListen ? createControlMetrics(service, { processMetrics: true }) : undefined;
  const server = createControlServer(
    service,
    exportPublicKey(publicKey),
    (event, fields) => log(event, fields),
    DEFAULT_LIMITS,
    tls,
    metrics,
  );
  const metricsServer = metrics && createMetricsServer(metrics);
  if (metricsServer && o.metricsListen) {
    const at = o.metricsListen;
    await new Promise<void>((resolve, reject) => {
      metricsServer.once("error", reject);
      metricsServer.listen(at.port, at.host, () => resolve());
    });
    const m = metricsServer.address() as AddressInfo;
    log("metrics_ready", { address: m.address, port: m.port, path: "/metrics" });
  }
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(o.listen.port, o.listen.host, () => resolve());
  });
  const addr = server.address() as AddressInfo;
  const { revision } = await service.changes(Number.MAX_SAFE_INTEGER);
  const stop = (signal: string) => {
    log("stopping", { signal });
    server.close(() => {
      void store.close().then(() => {
        log("stopped");
        process.exit(0);
      });
    });
    service.wakeWatchers();
    metricsServer?.close();
    metricsServer?.closeAllConnections();
    server.closeIdleConnections();
    // Long polls were just answered; anything still open after 2 s is cut.
    setTimeout(() => server.closeAllConnections(), 2000).unref();
  };
  process.once("SIGTERM", () => stop("SIGTERM"));
  process.once("SIGINT", () => stop("SIGINT"));
  // Ready only once a SIGTERM stops it cleanly (a supervisor may send one as soon as it reads this line).
  log("ready", {
    pid: process.pid,
    address: addr.address,
    port: addr.port,
    tls: tls !== undefined,
    ...where,
    revision,
  });
}

interface AdminOptions {
  server: string;
  tokenFile: string;
  ca?: string;
}

function client(o: AdminOptions): ControlClient {
  const [token] = readSecret(o.tokenFile, "token file", "pass --token-file with the admin token");
  let ca: string | undefined;
  if (o.ca !== undefined) {
    if (!existsSync(o.ca)) throw new UsageError(`--ca ${o.ca} does not exist`);
    ca = readFileSync(o.ca, "utf8");
  }
  return new ControlClient(o.server, { token: token as string, ...(ca === undefined ? {} : { ca }) });
}

const print = (v: unknown): void => {
  process.stdout.write(`${JSON.stringify(v, null, 2)}\n`);
};

const program = new Command("xenroam-control")
  .description(
    "The xenroam control server: the registry (sites and their gateways, hosts, VMs with their home address), the bindings of each home address to its locators, signed activations, and a watch stream for correspondents. One SQLite file holds everything, or an etcd cluster several servers share; the signing key is an Ed25519 PEM file.",
  )
  .showHelpAfterError()
  .addHelpText(
    "after",
    `
First start:
  xenroam-control init                      # key + admin token under /var/lib/xenroam and /etc/xenroam
  xenroam-control serve --listen '[2001:db8:c::1]:7360'
  xenroam-control put-sites /etc/xenroam/sites.json
  xenroam-control add-vm web1 --hoa 2001:db8:f::10 --mac 00:16:3e:00:00:10 --mac 00:16:3e:00:01:10
  xenroam-control add-peer cn1               # a correspondent's token

Over TLS (the certificate names the address clients use; they verify it against the CA):
  xenroam-control serve --listen '[2001:db8:c::1]:7360' --tls-cert /etc/xenroam/control.crt \
    --tls-key /etc/xenroam/control-tls.key
  xenroam-control show --server 'https://[2001:db8:c::1]:7360' --ca /etc/xenroam/control-ca.pem

Several servers on one etcd cluster (any of them answers; a watcher resumes on any from its last revision).
Each gets a copy of the same signing key and admin token files (init once, then copy them):
  xenroam-control serve --listen '[2001:db8:c::1]:7360' \\
    --store etcds://[2001:db8:c::11]:2379,[2001:db8:c::12]:2379,[2001:db8:c::13]:2379 \\
    --etcd-ca /etc/xenroam/etcd-ca.pem --etcd-user xenroam --etcd-password-file /etc/xenroam/etcd.password

API routes:
  ${ROUTES.join("\n  ")}`,
  );

program
  .command("init")
  .description("create the signing key and an admin token if they do not exist (idempotent)")
  .option("--key <file>", "signing key (Ed25519, PEM)", DEFAULTS.key)
  .option("--admin-token-file <file>", "admin token file", DEFAULTS.adminTokenFile)
  .action((o: { key: string; adminTokenFile: string }) => {
    const made = writeSecret(o.key, exportPrivateKey(generateSigningKeys().privateKey));
    process.stdout.write(`${made ? "created" : "kept existing"} signing key ${o.key}\n`);
    // The public half, for correspondents to pin (xenroam-agent --correspondent --public-key FILE).
    const pub = `${o.key}.pub`;
    writeFileSync(pub, exportPublicKey(createPublicKey(importPrivateKey(readFileSync(o.key, "utf8")))), {
      mode: 0o644,
    });
    process.stdout.write(`wrote public key ${pub}\n`);
    const token = Buffer.from(crypto.getRandomValues(new Uint8Array(24))).toString("base64url");
    const madeToken = writeSecret(o.adminTokenFile, `${token}\n`);
    process.stdout.write(`${madeToken ? "created" : "kept existing"} admin token ${o.adminTokenFile}\n`);
  });

program
  .command("serve")
  .description("run the control server (JSON logs on stderr; SIGTERM stops it cleanly)")
  .option("--listen <[addr]:port>", "where to listen", parseListen, parseListen(DEFAULTS.listen))
  .option("--database <file>", `SQLite database file (created if missing; default: ${DEFAULTS.database})`)
  .option(
    "--store <url>",
    "instead of --database: an etcd cluster every server of this deployment shares, etcd://HOST:PORT,HOST:PORT,…[/PREFIX/] (etcds:// for TLS; keys under /xenroam/ unless PREFIX)",
  )
  .option(
    "--etcd-ca <file>",
    "etcds://: the CA of the members' certificates (PEM; default: the system's CAs)",
  )
  .option("--etcd-cert <file>", "etcds://: this client's certificate (PEM), for a cluster that asks for one")
  .option("--etcd-key <file>", "etcds://: that certificate's private key (PEM)")
  .option(
    "--etcd-user <name>",
    "an etcd user (auth enabled); its password from --etcd-password-file or XENROAM_ETCD_PASSWORD",
  )
  .option("--etcd-password-file <file>", "the etcd user's password (its first line)")
  .option(
    "--key <file>",
    "signing key made by init (every server on one etcd cluster: a copy of the same)",
    DEFAULTS.key,
  )
  .option("--admin-token-file <file>", "admin tokens, one a line", DEFAULTS.adminTokenFile)
  .option("--tls-cert <file>", "serve HTTPS: the server's certificate (PEM, chain after it); with --tls-key")
  .option("--tls-key <file>", "the certificate's private key (PEM, unencrypted)")
  .option(
    "--metrics-listen <[addr]:port>",
    "serve Prometheus metrics at http://ADDR:PORT/metrics, plain HTTP and no token: a loopback or management address (default: off)",
    parseListen,
  )
  .option(
    "--reserve <address>",
    "an address of this server no VM may claim as a locator (repeatable; the --listen address is reserved already)",
    (v: string, prev: string[] = []) => {
      try {
        return [...prev, canonicalIpv6(v)];
      } catch (err) {
        throw new InvalidArgumentError((err as Error).message);
      }
    },
    [] as string[],
  )
  .action(async (o: ServeOptions) => serve(o));

const admin = (cmd: Command) =>
  cmd
    .option("--server <url>", "control server (http:// or https://)", DEFAULTS.server)
    .option("--token-file <file>", "admin token file", DEFAULTS.adminTokenFile)
    .option("--ca <file>", "an https:// server's CA certificate (PEM); default: the system's CAs");

admin(
  program
    .command("put-sites")
    .argument("<file>", "sites document (the host plugin's sites.json format)")
    .description("upload the sites document (sites, gateways, hosts); replaces the previous one"),
).action(async (file: string, o: AdminOptions) => {
  let doc: unknown;
  try {
    doc = JSON.parse(readFileSync(file, "utf8"));
  } catch (err) {
    throw new UsageError(`${file}: ${(err as Error).message}`);
  }
  print(await client(o).putSites(doc));
});

const collect = (v: string, prev: string[] = []) => [...prev, v];
admin(
  program
    .command("add-vm")
    .argument("<name>", "the VM's name (as the toolstack knows it)")
    .requiredOption("--hoa <address>", "the VM's home address (routable IPv6)")
    .option("--mac <mac>", "a vif MAC, primary first (repeatable)", collect, [])
    .description(
      "register a VM and print its token (give it to the guest agent); re-adding rotates the token",
    ),
).action(async (name: string, o: AdminOptions & { hoa: string; mac: string[] }) => {
  print(await client(o).registerVm(name, o.hoa, o.mac));
});

admin(
  program
    .command("add-peer")
    .argument("<name>", "a host or correspondent name")
    .description("issue a token for a host or a correspondent (watch stream, sites); re-adding rotates it"),
).action(async (name: string, o: AdminOptions) => {
  print(await client(o).registerPeer(name));
});

admin(
  program
    .command("rollback")
    .argument("<vm>", "the VM")
    .requiredOption("--locator <address>", "the locator whose activation is undone (the VM's active one)")
    .requiredOption("--seq <n>", "that activation's sequence number", (v) => Number(v))
    .description(
      "undo a VM's last activation (a move that failed after its binding was relayed): its previous locator is activated again at the next sequence number",
    ),
).action(async (vm: string, o: AdminOptions & { locator: string; seq: number }) => {
  print(await client(o).rollback(vm, { locator: o.locator, seq: o.seq }));
});

admin(
  program
    .command("attest")
    .argument("<vm>", "the VM")
    .argument("<locator>", "the standby locator the VM registered")
    .description(
      'vouch for a locator the VM registered that its MACs do not prove (a site with locatorProof "host": the source Dom0 does this at each prepare; an admin for the first locator a guest with privacy addresses takes at boot, or after a roam); an activation the VM asked for meanwhile takes effect',
    ),
).action(async (vm: string, locator: string, o: AdminOptions) => {
  print(await client(o).attest(vm, locator));
});

admin(
  program
    .command("reset")
    .argument("<vm>", "the VM")
    .option("--to <locator>", "bind the HoA to this locator (an admin's word is its proof)")
    .description(
      "reset a VM's binding (a hijacked or stuck HoA): every standby goes, every activation signed before is stale at the server and at every correspondent; with --to the HoA is bound there at once, else once the VM registers and activates a locator again",
    ),
).action(async (vm: string, o: AdminOptions & { to?: string }) => {
  print(await client(o).reset(vm, o.to));
});

admin(
  program
    .command("show")
    .argument("[hoa]", "one home address")
    .description("print one binding, or every binding changed since revision 0"),
).action(async (hoa: string | undefined, o: AdminOptions) => {
  const c = client(o);
  print(hoa ? await c.binding(hoa) : await c.changes(0, 0));
});

program.parseAsync().catch((err: unknown) => {
  const known = [UsageError, ControlClientError, ControlError, StoreError, TlsSetupError].some(
    (k) => err instanceof k,
  );
  if (program.args[0] === "serve") log("fatal", { error: err instanceof Error ? err.message : String(err) });
  process.stderr.write(`xenroam-control: ${err instanceof Error ? err.message : String(err)}\n`);
  if (!known && err instanceof Error && err.stack) process.stderr.write(`${err.stack}\n`);
  process.exit(known ? 2 : 1);
});

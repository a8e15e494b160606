// Test certificates made with the openssl CLI, as an admin makes them: an ECDSA P-256 CA and a server
// certificate it signs for the given IP addresses (scripts/setup.sh installs openssl).
import { execFileSync } from "node:child_process";
import { join } from "node:path";

function openssl(args: string[]): void {
  try {
    execFileSync("openssl", args, { stdio: ["ignore", "ignore", "pipe"] });
  } catch (err) {
    const e = err as { code?: string; stderr?: Buffer };
    if (e.code === "ENOENT") throw new Error("openssl is not installed; scripts/setup.sh installs it");
    throw new Error(`openssl ${args.join(" ")}: ${e.stderr?.toString().trim() ?? String(err)}`);
  }
}

export interface Pki {
  /** The CA's certificate (PEM file), what clients pin. */
  readonly ca: string;
  /** The server's certificate and its key (PEM files). */
  readonly cert: string;
  readonly key: string;
}

/** A CA named `name` in `dir` and a server certificate of its for `addresses` (IP subjectAltNames). */
export function makePki(dir: string, addresses: readonly string[], name = "ca"): Pki {
  const f = (s: string) => join(dir, `${name}-${s}`);
  const ec = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"];
  const req = ["req", "-x509", "-new", "-config", "/dev/null", "-days", "2"];
  openssl(["genpkey", ...ec, "-out", f("ca.key")]);
  openssl([
    ...req,
    ...["-key", f("ca.key"), "-subj", `/CN=xenroam test ${name}`, "-out", f("ca.pem")],
    ...["-addext", "basicConstraints=critical,CA:TRUE,pathlen:0"],
    ...["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
  ]);
  openssl(["genpkey", ...ec, "-out", f("server.key")]);
  openssl([
    ...req,
    ...["-key", f("server.key"), "-CA", f("ca.pem"), "-CAkey", f("ca.key")],
    ...["-subj", "/CN=xenroam-control", "-out", f("server.pem")],
    ...["-addext", "basicConstraints=critical,CA:FALSE"],
    ...["-addext", "extendedKeyUsage=serverAuth"],
    ...["-addext", `subjectAltName=${addresses.map((a) => `IP:${a}`).join(",")}`],
  ]);
  return { ca: f("ca.pem"), cert: f("server.pem"), key: f("server.key") };
}

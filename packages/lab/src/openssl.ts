// The lab's one adapter to the openssl CLI: at lab-up, a CA of the lab's own (ECDSA P-256) signs the control
// server's certificate for its address, and every client pins that CA. The CA's key is deleted once it signed.

import { execFile } from "node:child_process";
import { rmSync } from "node:fs";
import { promisify } from "node:util";

const execFileAsync = promisify(execFile);

export class OpensslError extends Error {
  override readonly name = "OpensslError";
}

async function openssl(args: readonly string[]): Promise<void> {
  try {
    await execFileAsync("openssl", args, { encoding: "utf8" });
  } catch (err) {
    const e = err as { stderr?: string; code?: string | number };
    if (e.code === "ENOENT")
      throw new OpensslError(
        "`openssl` not found: install openssl (apt-get install openssl; scripts/setup.sh does)",
      );
    throw new OpensslError(`openssl ${args.join(" ")}: ${(e.stderr ?? String(err)).trim()}`);
  }
}

export interface CertificateFiles {
  /** The CA's certificate: what clients pin. */
  readonly ca: string;
  /** The server's certificate and its private key. */
  readonly cert: string;
  readonly key: string;
}

/**
 * A new CA, and a server certificate it signs for `address` (an IP subjectAltName: clients check it against
 * the URL's host), both valid `days`. No system openssl.cnf is read.
 */
export async function makeServerCertificate(
  files: CertificateFiles,
  address: string,
  days = 365,
): Promise<void> {
  const caKey = `${files.ca}.key`;
  const ec = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"];
  const x509 = ["req", "-x509", "-new", "-config", "/dev/null", "-days", String(days)];
  try {
    await openssl(["genpkey", ...ec, "-out", caKey]);
    await openssl([
      ...x509,
      ...["-key", caKey, "-subj", "/CN=xenroam lab CA", "-out", files.ca],
      ...["-addext", "basicConstraints=critical,CA:TRUE,pathlen:0"],
      ...["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
    ]);
    await openssl(["genpkey", ...ec, "-out", files.key]);
    await openssl([
      ...x509,
      ...["-key", files.key, "-CA", files.ca, "-CAkey", caKey],
      ...["-subj", "/CN=xenroam-control", "-out", files.cert],
      ...["-addext", "basicConstraints=critical,CA:FALSE"],
      ...["-addext", "keyUsage=critical,digitalSignature"],
      ...["-addext", "extendedKeyUsage=serverAuth"],
      ...["-addext", `subjectAltName=IP:${address}`],
    ]);
  } finally {
    rmSync(caKey, { force: true });
  }
}

// The control server over TLS, so that no proxy is needed: its certificate and key checked with the reason,
// which createControlServer (http.ts) then serves with node:https.

import { createPrivateKey, X509Certificate } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { createSecureContext } from "node:tls";

export class TlsSetupError extends Error {
  override readonly name = "TlsSetupError";
}

/** The server's certificate (chain) and its private key, PEM. */
export interface TlsCredentials {
  readonly cert: string;
  readonly key: string;
}

function readPem(file: string, flag: string): string {
  if (!existsSync(file)) throw new TlsSetupError(`${flag} ${file} does not exist`);
  try {
    return readFileSync(file, "utf8");
  } catch (err) {
    throw new TlsSetupError(`cannot read ${flag} ${file}: ${(err as Error).message}`);
  }
}

/**
 * Reads and checks the certificate and key files: each must be PEM that OpenSSL takes, and the key must be
 * the certificate's. Throws TlsSetupError naming the file at fault and OpenSSL's reason.
 */
export function loadTlsCredentials(certFile: string, keyFile: string): TlsCredentials {
  const cert = readPem(certFile, "--tls-cert");
  const key = readPem(keyFile, "--tls-key");
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(cert);
  } catch (err) {
    throw new TlsSetupError(`--tls-cert ${certFile} is not a PEM certificate: ${(err as Error).message}`);
  }
  let privateKey: ReturnType<typeof createPrivateKey>;
  try {
    privateKey = createPrivateKey(key);
  } catch (err) {
    throw new TlsSetupError(
      `--tls-key ${keyFile} is not a PEM private key (unencrypted): ${(err as Error).message}`,
    );
  }
  if (!x509.checkPrivateKey(privateKey)) {
    throw new TlsSetupError(
      `--tls-key ${keyFile} is not the key of the certificate in --tls-cert ${certFile} (${x509.subject.replaceAll("\n", ", ")})`,
    );
  }
  try {
    createSecureContext({ cert, key });
  } catch (err) {
    throw new TlsSetupError(`--tls-cert ${certFile} with --tls-key ${keyFile}: ${(err as Error).message}`);
  }
  return { cert, key };
}

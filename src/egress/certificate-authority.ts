import { X509Certificate, createPrivateKey, generateKeyPair, randomBytes, sign, type KeyObject } from "node:crypto";
import { chmod, link, mkdir, open, readFile, rename, rm } from "node:fs/promises";
import { isIP } from "node:net";
import { hostname } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import forge from "node-forge";

const CERT_FILE = "ca.pem";
const KEY_FILE = "ca-key.pem";
const CA_YEARS = 10;
const LEAF_DAYS = 30;
/** Reissue a cached leaf halfway through its life, so a long-running gateway never serves an expired one. */
const LEAF_RENEW_MS = (LEAF_DAYS / 2) * 86_400_000;
/** Clients whose clock runs a little behind still accept a fresh leaf. */
const LEAF_BACKDATE_MS = 3_600_000;
const MAX_CACHED_LEAVES = 1000;
/** How long a loader waits for ca.pem once ca-key.pem exists (another process is between its two writes). */
const PUBLISH_WAIT_MS = 5_000;

export type CertificateAuthorityErrorCode = "CA_INVALID_NAME" | "CA_INCOMPLETE" | "CA_MISMATCH";

/** Where this installation's egress CA lives: the gateway signs with it, every networked layer carries its certificate. */
export function egressCaDir(cacheDir: string): string {
  return join(cacheDir, "egress-ca");
}

export class CertificateAuthorityError extends Error {
  constructor(
    readonly code: CertificateAuthorityErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "CertificateAuthorityError";
  }
}

interface CaMaterial {
  certPem: string;
  keyPem: string;
}

interface LeafEntry {
  pems: Promise<{ keyPem: string; certPem: string }>;
  renewAt: number;
}

/**
 * The installation's egress CA: guests trust its certificate, and the gateway presents leaves it signs
 * when it terminates a guest's TLS to inject credentials. forge builds the certificates; node:crypto makes
 * the keys and the signatures (forge's RSA is pure JS: slow keygen, ~60 ms per signature that would
 * block the event loop).
 */
export class CertificateAuthority {
  readonly certPem: string;
  readonly #cert: forge.pki.Certificate;
  readonly #key: KeyObject;
  readonly #leaves = new Map<string, LeafEntry>();
  #leafKey: Promise<{ keyPem: string; publicKey: forge.pki.rsa.PublicKey }> | undefined;

  private constructor({ certPem, keyPem }: CaMaterial) {
    this.certPem = certPem;
    this.#cert = forge.pki.certificateFromPem(certPem);
    this.#key = createPrivateKey(keyPem);
  }

  /**
   * Loads <dir>/ca.pem and <dir>/ca-key.pem, or creates them once. Several processes may start at once:
   * the key is published with an exclusive link (one creator wins, the others load the winner's files).
   */
  static async loadOrCreate(dir: string, commonName = `mcpvisor egress CA (${hostname()})`): Promise<CertificateAuthority> {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await chmod(dir, 0o700); // mkdir's mode only applies to a directory it creates; this one holds a private key
    const existing = await load(dir);
    if (existing) return new CertificateAuthority(existing);
    const created = await createCa(commonName);
    if (await publish(dir, created)) return new CertificateAuthority(created);
    const winner = await load(dir);
    if (!winner) throw new CertificateAuthorityError("CA_INCOMPLETE", `${join(dir, KEY_FILE)} vanished while creating the CA; is another process deleting ${dir}?`);
    return new CertificateAuthority(winner);
  }

  /** A leaf for a DNS name or an IP literal, with the chain (leaf then CA); cached per name. */
  async leafFor(name: string): Promise<{ keyPem: string; certPem: string }> {
    const subject = parseLeafName(name);
    const cached = this.#leaves.get(subject.key);
    this.#leaves.delete(subject.key); // re-inserted below: Map order is the LRU order
    if (cached && cached.renewAt > Date.now()) {
      this.#leaves.set(subject.key, cached);
      return cached.pems;
    }
    const entry: LeafEntry = { pems: this.#issue(subject), renewAt: Date.now() + LEAF_RENEW_MS };
    this.#leaves.set(subject.key, entry);
    if (this.#leaves.size > MAX_CACHED_LEAVES) this.#leaves.delete(this.#leaves.keys().next().value!);
    // A failed issue is not cached: the next call tries again.
    entry.pems.catch(() => {
      if (this.#leaves.get(subject.key) === entry) this.#leaves.delete(subject.key);
    });
    return entry.pems;
  }

  async #issue(subject: LeafName): Promise<{ keyPem: string; certPem: string }> {
    const leafKey = await (this.#leafKey ??= generateRsa(2048).catch((err: unknown) => {
      this.#leafKey = undefined;
      throw err;
    }));
    const cert = forge.pki.createCertificate();
    cert.publicKey = leafKey.publicKey;
    cert.serialNumber = randomSerial();
    const now = Date.now();
    cert.validity.notBefore = new Date(now - LEAF_BACKDATE_MS);
    cert.validity.notAfter = new Date(Math.min(now + LEAF_DAYS * 86_400_000, this.#cert.validity.notAfter.getTime()));
    // CN is informational (clients match the SAN) and limited to 64 characters by RFC 5280.
    cert.setSubject(subject.key.length <= 64 ? [{ shortName: "CN", value: subject.key }] : [{ shortName: "O", value: "mcpvisor egress" }]);
    cert.setIssuer(this.#cert.subject.attributes);
    cert.setExtensions([
      { name: "basicConstraints", cA: false, critical: true },
      { name: "keyUsage", digitalSignature: true, keyEncipherment: true, critical: true },
      { name: "extKeyUsage", serverAuth: true },
      { name: "subjectAltName", altNames: [subject.altName] },
      { name: "subjectKeyIdentifier" },
      { name: "authorityKeyIdentifier", keyIdentifier: this.#cert.generateSubjectKeyIdentifier().getBytes() },
    ]);
    signCertificate(cert, this.#key);
    return { keyPem: leafKey.keyPem, certPem: forge.pki.certificateToPem(cert) + this.certPem };
  }
}

/** The CA's files, or undefined when there is no key yet. */
async function load(dir: string): Promise<CaMaterial | undefined> {
  const keyPem = await readIfExists(join(dir, KEY_FILE));
  if (keyPem === undefined) return undefined;
  const certPath = join(dir, CERT_FILE);
  const deadline = Date.now() + PUBLISH_WAIT_MS;
  let certPem = await readIfExists(certPath);
  while (certPem === undefined && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    certPem = await readIfExists(certPath);
  }
  if (certPem === undefined) {
    throw new CertificateAuthorityError(
      "CA_INCOMPLETE",
      `${dir} holds ${KEY_FILE} but no ${CERT_FILE} (an interrupted creation?); remove ${dir} to create a new CA, then make guests trust the new ${CERT_FILE}`,
    );
  }
  if (!new X509Certificate(certPem).checkPrivateKey(createPrivateKey(keyPem))) {
    throw new CertificateAuthorityError(
      "CA_MISMATCH",
      `${join(dir, CERT_FILE)} was not issued for ${join(dir, KEY_FILE)}; restore the matching pair, or remove ${dir} to create a new CA`,
    );
  }
  return { certPem, keyPem };
}

/**
 * Publishes the key with link(2), which fails if ca-key.pem exists, so exactly one of several concurrent
 * creators wins; then the certificate by rename. Both are written whole to temporary names first, so no
 * reader sees half a file. Returns false when another process won.
 */
async function publish(dir: string, ca: CaMaterial): Promise<boolean> {
  const suffix = `.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  const tmpKey = join(dir, KEY_FILE + suffix);
  const tmpCert = join(dir, CERT_FILE + suffix);
  try {
    await writeSynced(tmpKey, ca.keyPem, 0o600);
    await writeSynced(tmpCert, ca.certPem, 0o644);
    try {
      await link(tmpKey, join(dir, KEY_FILE));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "EEXIST") return false;
      throw err;
    }
    await rename(tmpCert, join(dir, CERT_FILE));
    return true;
  } finally {
    await rm(tmpKey, { force: true });
    await rm(tmpCert, { force: true });
  }
}

async function createCa(commonName: string): Promise<CaMaterial> {
  // 3072 bits: NIST deprecates RSA-2048 after 2030, within this CA's ten years.
  const { keyPem, publicKey } = await generateRsa(3072);
  const cert = forge.pki.createCertificate();
  cert.publicKey = publicKey;
  cert.serialNumber = randomSerial();
  const now = new Date();
  cert.validity.notBefore = new Date(now.getTime() - LEAF_BACKDATE_MS);
  cert.validity.notAfter = new Date(now);
  cert.validity.notAfter.setFullYear(now.getFullYear() + CA_YEARS);
  const subject = [{ shortName: "CN", value: commonName }];
  cert.setSubject(subject);
  cert.setIssuer(subject);
  cert.setExtensions([
    { name: "basicConstraints", cA: true, critical: true },
    { name: "keyUsage", keyCertSign: true, cRLSign: true, critical: true },
    { name: "subjectKeyIdentifier" },
  ]);
  signCertificate(cert, createPrivateKey(keyPem));
  return { certPem: forge.pki.certificateToPem(cert), keyPem };
}

/** What forge's cert.sign does, with the RSA signature computed natively (sha256WithRSAEncryption). */
function signCertificate(cert: forge.pki.Certificate, key: KeyObject): void {
  cert.signatureOid = cert.siginfo.algorithmOid = forge.pki.oids.sha256WithRSAEncryption!;
  // getTBSCertificate is public in forge but missing from its type definitions.
  cert.tbsCertificate = (forge.pki as unknown as { getTBSCertificate(c: forge.pki.Certificate): forge.asn1.Asn1 }).getTBSCertificate(cert);
  const tbs = Buffer.from(forge.asn1.toDer(cert.tbsCertificate).getBytes(), "binary");
  cert.signature = sign("sha256", tbs, key).toString("binary");
}

async function generateRsa(modulusLength: number): Promise<{ keyPem: string; publicKey: forge.pki.rsa.PublicKey }> {
  const { privateKey, publicKey } = await promisify(generateKeyPair)("rsa", {
    modulusLength,
    privateKeyEncoding: { type: "pkcs8", format: "pem" },
    publicKeyEncoding: { type: "spki", format: "pem" },
  });
  return { keyPem: privateKey, publicKey: forge.pki.publicKeyFromPem(publicKey) };
}

/** 16 random bytes, top bit clear (positive) and first byte non-zero (minimal DER, which strict parsers require). */
function randomSerial(): string {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0]! & 0x7f) | 0x40;
  return bytes.toString("hex");
}

interface LeafName {
  /** Canonical form: the cache key and the CN. */
  key: string;
  altName: { type: 2; value: string } | { type: 7; ip: string };
}

function parseLeafName(name: string): LeafName {
  if (isIP(name)) {
    // The URL parser canonicalizes (e.g. ::ffff:1.2.3.4 -> ::ffff:102:304), a form forge can encode.
    const ip = isIP(name) === 6 ? new URL(`http://[${name}]/`).hostname.slice(1, -1) : name;
    return { key: ip, altName: { type: 7, ip } };
  }
  const dns = name.toLowerCase().replace(/\.$/, "");
  const labels = dns.split(".");
  const valid = dns.length <= 253 && labels.every((label) => label.length <= 63 && /^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?$/.test(label));
  if (!valid) {
    throw new CertificateAuthorityError(
      "CA_INVALID_NAME",
      `cannot issue a certificate for ${JSON.stringify(name)}: expected a DNS name (internationalized names in their ASCII "xn--" form, no wildcards) or an IP address`,
    );
  }
  return { key: dns, altName: { type: 2, value: dns } };
}

async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

async function writeSynced(path: string, data: string, mode: number): Promise<void> {
  const file = await open(path, "wx", mode);
  try {
    await file.writeFile(data);
    await file.sync();
  } finally {
    await file.close();
  }
}

/** Limits and environment shared by every command the exec server runs. */

export const DEFAULT_TIMEOUT_MS = 10_000;
export const MAX_TIMEOUT_MS = 120_000;

/** Per stream: enough for any readable answer, small enough for a 256 MiB guest and one JSON-RPC message. */
export const OUTPUT_CAP_BYTES = 1024 * 1024;

/**
 * Where commands run and files go: /tmp (a tmpfs) by default, or the workspace the server shares with
 * others in its sandbox (its manifest sets EXEC_WORK_DIR=/workspace).
 */
export const WORK_DIR = process.env.EXEC_WORK_DIR || "/tmp";

/**
 * What commands may take from the server's environment: how to reach the network when the manifest
 * grants egress (the guest's proxy and the CA it trusts). Nothing else of the server's own (NODE_OPTIONS,
 * the manifest's variables) leaks into commands.
 */
const EGRESS_ENV = ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "NO_PROXY", "no_proxy", "NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"];

export const CHILD_ENV: Readonly<Record<string, string>> = {
  PATH: "/usr/local/bin:/usr/bin:/bin:/sbin",
  HOME: "/tmp",
  // An agent edits a file and reruns it within the same second, often to the same size: CPython's
  // bytecode cache checks only mtime (in seconds) and size, and would run the old code.
  PYTHONDONTWRITEBYTECODE: "1",
  ...Object.fromEntries(EGRESS_ENV.flatMap((name) => (process.env[name] ? [[name, process.env[name]]] : []))),
};

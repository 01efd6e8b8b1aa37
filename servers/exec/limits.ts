/** Limits and environment shared by every command the exec server runs. */

export const DEFAULT_TIMEOUT_MS = 10_000;
export const MAX_TIMEOUT_MS = 120_000;

/** Per stream: enough for any readable answer, small enough for a 256 MiB guest and one JSON-RPC message. */
export const OUTPUT_CAP_BYTES = 1024 * 1024;

/** /tmp is the guest's only writable place (tmpfs). */
export const WORK_DIR = "/tmp";

/** A fixed environment: nothing of the server's own (NODE_OPTIONS, the gateway's variables) leaks into commands. */
export const CHILD_ENV: Readonly<Record<string, string>> = {
  PATH: "/usr/local/bin:/usr/bin:/bin:/sbin",
  HOME: "/tmp",
};

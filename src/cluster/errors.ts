import { EDGE_ERROR } from "../tenancy/quota-error.js";

/**
 * The cluster's shared state (Redis) or a session's owner node cannot be reached now. Nothing was done;
 * the client may retry after `retryAfterSeconds`.
 */
export class ClusterUnavailableError extends Error {
  readonly code = EDGE_ERROR.unavailable;

  constructor(
    message: string,
    readonly retryAfterSeconds = 1,
  ) {
    super(message);
    this.name = "ClusterUnavailableError";
  }
}

/** Runs a Redis operation; its failure becomes a ClusterUnavailableError saying what could not be done. */
export async function inCluster<T>(what: string, operation: () => Promise<T>): Promise<T> {
  try {
    return await operation();
  } catch (err) {
    if (err instanceof ClusterUnavailableError || !isConnectionError(err)) throw err;
    throw new ClusterUnavailableError(`The cluster's shared state cannot be reached (${what}: ${(err as Error).message}); retry shortly`);
  }
}

/** ioredis's failures to talk to Redis (as opposed to a script's own error, which is a bug). */
function isConnectionError(err: unknown): boolean {
  return err instanceof Error && err.name !== "ReplyError";
}

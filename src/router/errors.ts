import { ErrorCode } from "@modelcontextprotocol/sdk/types.js";

/**
 * Errors a client sees as they are: each carries its JSON-RPC code, a message a person can act on and
 * `data` a program can branch on. Thrown by the router; src/gateway/to-wire.ts puts them on the wire.
 */
export abstract class WireError extends Error {
  abstract readonly rpcCode: number;
  readonly data: Record<string, unknown> | undefined;

  constructor(message: string, data?: Record<string, unknown>, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.data = data;
  }
}

/** A tool no hosted server offers under that name (or one the caller may not see). */
export class UnknownToolError extends WireError {
  readonly rpcCode = ErrorCode.InvalidParams;
}

/** Parameters that do not fit the method: a missing name, arguments outside the tool's inputSchema, an unknown prompt or resource. */
export class InvalidParamsError extends WireError {
  readonly rpcCode = ErrorCode.InvalidParams;
}

/** A method this endpoint does not serve, or a server->client request the client did not declare it can answer. */
export class MethodNotFoundError extends WireError {
  readonly rpcCode = ErrorCode.MethodNotFound;
}

/**
 * The session's sandbox for `server` ended while it had nothing to do: what it held is gone. Told once;
 * the next request gets a fresh sandbox.
 */
export class StateLostError extends WireError {
  readonly rpcCode = ErrorCode.InternalError;

  constructor(server: string, why: string, options?: { cause?: unknown }) {
    super(
      `The sandbox of this session for server '${server}' ended while idle (${why}); what it held (files, memory, processes) is gone. The next request starts a fresh sandbox.`,
      { server, retryable: true, reason: "STATE_LOST" },
      options,
    );
  }
}

/** The session ended (DELETE, a closed connection, shutdown) while the request was in flight. */
export class SessionEndedError extends WireError {
  readonly rpcCode = ErrorCode.ConnectionClosed;

  constructor(message = "The session ended before this request was answered") {
    super(message, { retryable: false, reason: "SESSION_ENDED" });
  }
}

import { ErrorCode } from "@modelcontextprotocol/sdk/types.js";
import { ModernErrorCode } from "./modern-protocol.js";

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

/** The session ended (DELETE, a closed connection, shutdown) while the request was in flight. */
export class SessionEndedError extends WireError {
  readonly rpcCode = ErrorCode.ConnectionClosed;

  constructor(message = "The session closed before this request was answered") {
    super(message, { retryable: false, reason: "SESSION_CLOSED" });
  }
}

/**
 * A hosted server asked a 2026-07-28 client for something (sampling, elicitation, roots) that the
 * request did not declare it can answer (`io.modelcontextprotocol/clientCapabilities`).
 */
export class MissingClientCapabilityError extends WireError {
  readonly rpcCode = ModernErrorCode.MissingRequiredClientCapability;

  constructor(capability: string) {
    super(`The server needs the client's '${capability}' capability to answer this request, and the request did not declare it in _meta`, {
      requiredCapabilities: { [capability]: {} },
    });
  }
}

/** A 2026-07-28 request given up on: its client went away, or never retried an input_required round. */
export class RequestAbandonedError extends WireError {
  readonly rpcCode = ErrorCode.RequestTimeout;

  constructor(why: string) {
    super(why, { retryable: true, reason: "ABANDONED" });
  }
}

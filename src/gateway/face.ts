import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import { ErrorCode } from "@modelcontextprotocol/sdk/types.js";
import type { Logger } from "pino";
import type { Route, Router } from "../router/router.js";
import type { Edge } from "./admission.js";
import { SessionTable } from "./session-table.js";
import { refused, type WireFailure } from "./to-wire.js";

/** One wire protocol clients speak to the gateway; it turns each client session into a Transport for the router. */
export interface Face {
  /** As logs, metrics and the audit log name it. */
  readonly name: string;
  /** Client sessions open now. */
  readonly sessionCount: number;
  /** Ends every session (and so its sandboxes); the listener is the caller's. */
  close(): Promise<void>;
}

/** What every network face is given. */
export interface FaceOptions {
  /** Sessions idle this long are closed, so an abandoned client cannot keep a VM alive forever. */
  idleMs: number;
  maxJsonDepth: number;
  /** The admission step: Host/Origin check, credential, rate, audit of refusals, credential watch. */
  edge: Edge;
}

/** What the faces that keep sessions by id share: the router, their options, and the table that reaps idle sessions. */
export abstract class SessionFace<T extends Transport, O extends FaceOptions> implements Face {
  abstract readonly name: string;
  protected readonly sessions: SessionTable<T>;

  constructor(
    protected readonly router: Router,
    protected readonly log: Logger,
    protected readonly options: O,
  ) {
    this.sessions = new SessionTable(this, log, options.idleMs);
  }

  get sessionCount(): number {
    return this.sessions.size;
  }

  close(): Promise<void> {
    return this.sessions.close();
  }
}

/** A URL naming a server that is not hosted here (404): the same words on every face. */
export function noSuchServer(route: Route): WireFailure {
  return refused(404, ErrorCode.InvalidRequest, `No hosted server named '${route}'`);
}

/**
 * Sent with a 413: the rest of the body is never read, so the connection cannot carry another request;
 * saying so keeps a keep-alive client from sending its next request down a socket about to close.
 */
export function bodyTooLarge(maxBytes: number): WireFailure {
  return refused(413, ErrorCode.InvalidRequest, `Request body larger than ${maxBytes} bytes`, { connection: "close" });
}

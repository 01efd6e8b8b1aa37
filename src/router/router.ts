import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import type { JSONRPCMessage } from "@modelcontextprotocol/sdk/types.js";
import type { Logger } from "pino";
import type { SandboxPool } from "../sandbox/pool.js";
import { ClientSession } from "./client-session.js";

/**
 * Connects client transports to sandboxes: one client session gets one clone of the server's template,
 * resumed on its first request that needs the server and destroyed when the session ends.
 */
export class Router {
  private readonly sessions = new Set<ClientSession>();

  constructor(
    private readonly pool: SandboxPool,
    private readonly log: Logger,
  ) {}

  hasServer(server: string): boolean {
    return this.pool.has(server);
  }

  /** Takes over the transport's callbacks and starts it. */
  async connect(server: string, transport: Transport): Promise<ClientSession> {
    const session = new ClientSession(server, transport, this.pool, this.log);
    this.sessions.add(session);
    session.onClosed(() => this.sessions.delete(session));
    await transport.start();
    return session;
  }

  get openSessions(): number {
    return this.sessions.size;
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.sessions].map((s) => s.close()));
  }
}

export type { JSONRPCMessage };

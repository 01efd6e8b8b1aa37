import type { Readable, Writable } from "node:stream";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import type { Logger } from "pino";
import { LOCAL_PRINCIPAL } from "../auth/principal.js";
import type { ModernSessions } from "../router/modern-sessions.js";
import type { Route, Router } from "../router/router.js";
import type { Session } from "../router/session.js";
import { UnknownServerError } from "../sandbox/errors.js";
import type { Face } from "./face.js";
import { acceptModernMessages } from "./message-eras.js";

/**
 * The stdio face: one MCP session over a pair of streams (this process's stdin and stdout, for clients
 * that launch local servers). stdout carries nothing but MCP messages.
 */
export class StdioFace implements Face {
  readonly name = "stdio";
  private session: Session | undefined;

  constructor(
    private readonly router: Router,
    private readonly route: Route,
    /** Where 2026-07-28 requests on stdin are served (the local user's session on the route). */
    private readonly modern: ModernSessions,
    private readonly log: Logger,
  ) {}

  get sessionCount(): number {
    return this.session ? 1 : 0;
  }

  /** Resolves once the client is gone (stdin ended, or stdout broke) and the session, with its sandboxes, has ended. */
  async serve(stdin: Readable = process.stdin, stdout: Writable = process.stdout): Promise<void> {
    // The router would accept any name and fail each call; a client launching a wrong one learns it now.
    if (!this.router.hasRoute(this.route)) throw new UnknownServerError(this.route);
    // The SDK's stdio transport reports neither end of stdin nor a broken stdout (EPIPE): watch both.
    const gone = new Promise<void>((resolve) => {
      stdin.once("end", resolve);
      stdin.once("close", resolve);
      stdout.once("error", () => resolve());
    });
    const transport = new StdioServerTransport(stdin, stdout);
    this.session = await this.router.connect(this.route, transport, this.name);
    acceptModernMessages(transport, LOCAL_PRINCIPAL, this.route, this.modern, this.name, this.log);
    await gone;
    await this.close();
  }

  async close(): Promise<void> {
    const session = this.session;
    this.session = undefined;
    await session?.close();
  }
}

/** Serves one MCP session on `route` over stdin and stdout (see StdioFace). */
export function serveStdio(router: Router, route: Route, modern: ModernSessions, log: Logger, stdin?: Readable, stdout?: Writable): Promise<void> {
  return new StdioFace(router, route, modern, log).serve(stdin, stdout);
}

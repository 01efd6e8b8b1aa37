import type { Readable, Writable } from "node:stream";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import type { Route, Router } from "../router/router.js";

/**
 * The stdio face: one MCP session over this process's stdin and stdout, for clients that launch local
 * servers. Resolves once the client is gone (stdin ended, or stdout broke) and the session, with its
 * VM, has ended. stdout carries nothing but MCP messages.
 */
export async function serveStdio(router: Router, route: Route, stdin: Readable = process.stdin, stdout: Writable = process.stdout): Promise<void> {
  // The SDK's stdio transport reports neither end of stdin nor a broken stdout (EPIPE): watch both.
  const gone = new Promise<void>((resolve) => {
    stdin.once("end", resolve);
    stdin.once("close", resolve);
    stdout.once("error", () => resolve());
  });
  const session = await router.connect(route, new StdioServerTransport(stdin, stdout), "stdio");
  await gone;
  await session.close();
}

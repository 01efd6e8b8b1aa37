import type { IncomingMessage, ServerResponse } from "node:http";
import { ErrorCode } from "@modelcontextprotocol/sdk/types.js";
import type { JSONRPCMessage, JSONRPCNotification, JSONRPCRequest, JSONRPCResponse } from "../router/messages.js";
import { ModernErrorCode } from "../router/modern-protocol.js";
import type { ModernTransport } from "../router/modern-transport.js";
import { errorResponse } from "./to-wire.js";

const KEEP_ALIVE_MS = 15_000;
const SSE_HEADERS = { "content-type": "text/event-stream", "cache-control": "no-cache, no-transform", connection: "keep-alive", "x-accel-buffering": "no" };

/**
 * HTTP statuses the 2026-07-28 revision puts on errors (SEP-2575): a method that does not exist is 404, a
 * capability the request did not declare 400; every other error answers in a 200, as a result would.
 */
function statusOf(answer: JSONRPCResponse): number {
  if (!("error" in answer)) return 200;
  switch (answer.error.code) {
    case ErrorCode.MethodNotFound:
      return 404;
    case ModernErrorCode.MissingRequiredClientCapability:
    case ModernErrorCode.HeaderMismatch:
    case ModernErrorCode.UnsupportedProtocolVersion:
      return 400;
    default:
      return 200;
  }
}

/**
 * Answers one 2026-07-28 POST from the principal's session (ModernSessions). The answer goes as one JSON
 * body when nothing comes before it; a message about the request before its answer (progress, a log line
 * the client asked for) turns the response into an SSE stream, when the client accepts one, that ends
 * with the answer. An input_required round is an answer like any other. A client that goes away abandons
 * its request (the server is told to cancel it).
 */
export async function serveModern(req: IncomingMessage, res: ServerResponse, message: JSONRPCRequest | JSONRPCNotification, transport: ModernTransport, toolSearch: boolean): Promise<void> {
  if (!("id" in message)) {
    // Posted notifications have nothing to act on in a stateless exchange (cancellation is a closed request).
    res.writeHead(202).end();
    return;
  }
  const streams = req.headers.accept?.includes("text/event-stream") ?? false;
  if (message.method === "subscriptions/listen" && !streams) {
    return writeModernRefusal(res, 406, message.id, { code: ErrorCode.InvalidRequest, message: "Not Acceptable: subscriptions/listen answers with an SSE stream; accept text/event-stream" });
  }
  let answered = false;
  let gone = false;
  let keepAlive: NodeJS.Timeout | undefined;
  res.once("close", () => {
    gone = true;
    clearInterval(keepAlive);
    if (!answered) abandon?.();
  });
  const header = (name: string) => {
    const value = req.headers[name];
    return Array.isArray(value) ? value.join(", ") : value;
  };
  const abandon: (() => void) | undefined = await transport.request(message, {
    notify: (notification) => {
      if (!streams || answered) return;
      if (!res.headersSent) {
        res.writeHead(200, SSE_HEADERS);
        // Proxies drop a silent stream (a listen stream is silent for as long as nothing changes).
        keepAlive = setInterval(() => res.write(": keepalive\n\n"), KEEP_ALIVE_MS).unref();
      }
      res.write(event(notification));
    },
    answer: (answer) => {
      answered = true;
      clearInterval(keepAlive);
      if (res.headersSent) return void res.end(event(answer));
      const body = JSON.stringify(answer);
      res.writeHead(statusOf(answer), { "content-type": "application/json", "content-length": Buffer.byteLength(body) }).end(body);
    },
  }, header, toolSearch);
  if (gone && !answered) abandon();
}

/** One SSE event; without an id, as the 2026-07-28 revision has no stream resumption. */
function event(message: JSONRPCMessage): string {
  return `event: message\ndata: ${JSON.stringify(message)}\n\n`;
}

/** A refusal of a modern POST that names its request's id (SEP-2575: every error carries it). */
export function writeModernRefusal(res: ServerResponse, status: number, id: JSONRPCRequest["id"] | null, error: { code: number; message: string; data?: Record<string, unknown> }): void {
  const body = JSON.stringify(errorResponse(id, error));
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(body) }).end(body);
}

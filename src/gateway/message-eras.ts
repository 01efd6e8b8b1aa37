import { ClusterUnavailableError } from "../cluster/errors.js";
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import type { Logger } from "pino";
import type { Principal } from "../auth/principal.js";
import type { JSONRPCMessage } from "../router/messages.js";
import type { ModernSessions } from "../router/modern-sessions.js";
import type { Route } from "../router/router.js";
import { messageEraOf } from "./protocol-era.js";
import { errorResponse, toWire } from "./to-wire.js";

/**
 * Lets a connection of a message face (WebSocket, stdio) carry 2026-07-28 requests beside 2025 ones.
 * `transport` is already connected to its 2025 session; from now on a message with the `_meta` envelope
 * goes to the principal's 2026 session on `route` instead (the one Streamable HTTP uses), and its answers
 * come back on the same connection under the client's ids. Everything else reaches the 2025 session as
 * before. A 2026 notification has nothing to act on here (cancellation needs the connection to close).
 */
export function acceptModernMessages(transport: Transport, principal: Principal, route: Route, modern: ModernSessions, kind: string, log: Logger, toolSearch = false): void {
  const legacy = transport.onmessage;
  const reply = (message: JSONRPCMessage) => {
    transport.send(message).catch((err: Error) => log.debug({ err: err.message }, "could not deliver a 2026-07-28 answer"));
  };
  transport.onmessage = (message, extra) => {
    const era = messageEraOf(message);
    if (era.era === "legacy") return legacy?.(message, extra);
    if (era.era === "refused") return reply(errorResponse(era.id, era.error) as JSONRPCMessage);
    const request = era.message;
    if (!("id" in request)) return;
    modern.transportFor(principal, route, kind).then(
      (target): unknown =>
        "elsewhere" in target
          ? // A connection cannot be forwarded message by message: the principal's session runs on another node.
            reply(errorResponse(request.id, toWire(new ClusterUnavailableError(`This principal's 2026-07-28 session runs on node ${target.elsewhere.node}; send it over HTTP, or retry once it was saved`)).error) as JSONRPCMessage)
          : target.request(request, { notify: reply, answer: reply }, undefined, toolSearch),
      (error: unknown) => reply(errorResponse(request.id, toWire(error).error) as JSONRPCMessage),
    );
  };
}

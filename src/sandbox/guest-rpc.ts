import type { JsonRpcMessage } from "../../sandbox/agent/protocol.js";
import type { ServerChannel } from "./driver.js";
import { CallTimeoutError, GuestRpcError } from "./errors.js";

/**
 * Requests the host itself makes to the server in a guest (initialize, warm-up), always before a client
 * has the sandbox, so their ids cannot collide with a client's. They are negative integers: clients
 * mostly use integer ids, and a server whose code paths were warmed with string ids still pays ~30 ms
 * under TCG on its first integer id (V8 meets a new value shape), so warm-up uses what clients use.
 */
let counter = 0;

export async function guestRequest(
  channel: ServerChannel,
  method: string,
  params: Record<string, unknown> | undefined,
  timeoutMs: number,
  id: string | number = -++counter,
): Promise<Record<string, unknown>> {
  let stop = (): void => undefined;
  const reply = new Promise<JsonRpcMessage>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new CallTimeoutError(`${method} got no answer from the guest within ${timeoutMs} ms`)),
      timeoutMs,
    );
    const unlisten = channel.onMessage((message) => {
      if (message.id === id && !("method" in message)) resolve(message);
    });
    stop = () => {
      clearTimeout(timer);
      unlisten();
    };
  });
  channel.send({ jsonrpc: "2.0", id, method, ...(params ? { params } : {}) });
  try {
    return resultOf(method, await reply);
  } finally {
    stop();
  }
}

/** The result of a request the host made itself, or its JSON-RPC error thrown as a GuestRpcError. */
export function resultOf(method: string, reply: JsonRpcMessage): Record<string, unknown> {
  if (reply.error) {
    const error = reply.error as { code?: number; message?: string };
    throw new GuestRpcError(method, error.code ?? 0, error.message ?? "error");
  }
  return (reply.result ?? {}) as Record<string, unknown>;
}

export function guestNotify(channel: ServerChannel, method: string, params?: Record<string, unknown>): void {
  channel.send({ jsonrpc: "2.0", method, ...(params ? { params } : {}) });
}


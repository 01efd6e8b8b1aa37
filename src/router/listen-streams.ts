import type { JSONRPCNotification, RequestId } from "./messages.js";
import { filterAccepts, META, type SubscriptionFilter } from "./modern-protocol.js";
import type { ModernReplyTarget } from "./modern-transport.js";

interface Stream {
  /** The id the client gave its `subscriptions/listen` request: every delivery is stamped with it. */
  clientId: RequestId;
  filter: SubscriptionFilter;
  target: ModernReplyTarget;
}

/**
 * A modern session's open `subscriptions/listen` streams (docs/design/protocol-eras.md): the
 * acknowledgement with what will be delivered goes first, then every notification a stream's filter
 * accepts, stamped with the stream's id; a stream ending with its session gets an empty result.
 */
export class ListenStreams {
  /** By the session's id of the request that opened each. */
  private readonly streams = new Map<RequestId, Stream>();

  open(id: RequestId, stream: Stream): void {
    this.streams.set(id, stream);
    stream.target.notify(stamped({ jsonrpc: "2.0", method: "notifications/subscriptions/acknowledged", params: { notifications: stream.filter } }, stream.clientId));
  }

  publish(notification: JSONRPCNotification): void {
    for (const { clientId, filter, target } of this.streams.values()) {
      if (filterAccepts(filter, notification.method, notification.params)) target.notify(stamped(notification, clientId));
    }
  }

  /** The client closed the connection a stream answered on. */
  abandoned(id: RequestId, target: ModernReplyTarget): void {
    if (this.streams.get(id)?.target === target) this.streams.delete(id);
  }

  /** The session ends: each stream is closed gracefully, its empty result says so. */
  close(): void {
    for (const { clientId, target } of this.streams.values()) {
      target.answer({ jsonrpc: "2.0", id: clientId, result: { resultType: "complete", _meta: { [META.subscriptionId]: clientId } } });
    }
    this.streams.clear();
  }
}

/** A notification as a listen stream delivers it: with the id of the request that opened the stream. */
function stamped(notification: JSONRPCNotification, subscriptionId: RequestId): JSONRPCNotification {
  return { ...notification, params: { ...notification.params, _meta: { ...(notification.params?._meta as object), [META.subscriptionId]: subscriptionId } } };
}

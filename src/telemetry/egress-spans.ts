import { SpanKind, SpanStatusCode, type Tracer } from "@opentelemetry/api";
import type { EgressRecord } from "./events.js";
import { parentContext } from "./trace-context.js";

/**
 * One span per egress connection (or refused DNS question), a child of the request span of the call
 * that was in flight in its sandbox when it opened: `mcpvisor.egress <kind>`, with the destination's
 * allow entry, what the guest asked for, the outcome and bytes both ways. The name of an injected
 * header is an attribute; its value never is.
 */
export function recordEgressSpan(tracer: Tracer, record: EgressRecord): void {
  if (!record.traceparent) return;
  const span = tracer.startSpan(
    `mcpvisor.egress ${record.kind}`,
    {
      kind: SpanKind.CLIENT,
      startTime: record.startedAt,
      attributes: {
        "mcpvisor.server": record.server,
        "mcpvisor.egress.destination": record.destination,
        "mcpvisor.egress.target": record.target,
        "mcpvisor.egress.outcome": record.outcome,
        "mcpvisor.egress.bytes_out": record.bytesOut,
        "mcpvisor.egress.bytes_in": record.bytesIn,
        ...(record.injectedHeader ? { "mcpvisor.egress.injected_header": record.injectedHeader } : {}),
        ...(record.reason ? { "mcpvisor.egress.reason": record.reason } : {}),
      },
    },
    parentContext(record.traceparent),
  );
  if (record.outcome !== "ok") span.setStatus({ code: SpanStatusCode.ERROR, message: record.reason ?? record.outcome });
  span.end(record.endedAt);
}

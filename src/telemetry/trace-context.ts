import { randomBytes } from "node:crypto";
import { ROOT_CONTEXT, trace, TraceFlags, type Context } from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";

const propagator = new W3CTraceContextPropagator();
const fromRecord = {
  get: (carrier: Record<string, string>, key: string) => carrier[key],
  keys: (carrier: Record<string, string>) => Object.keys(carrier),
};

/** The client's trace context, if it sent a valid W3C traceparent; else the root context (a new trace). */
export function parentContext(incoming: string | undefined): Context {
  return incoming ? propagator.extract(ROOT_CONTEXT, { traceparent: incoming }, fromRecord) : ROOT_CONTEXT;
}

/**
 * A request's own W3C trace context, chosen where the request arrives and passed into the guest in
 * `_meta`: a child of the client's span when it sent a valid traceparent (its sampling decision kept),
 * else a new, sampled trace. Propagation needs no subscriber; tracing makes the request span with
 * exactly these ids when it records one.
 */
export function requestTraceparent(incoming: string | undefined): string {
  const parent = trace.getSpanContext(parentContext(incoming));
  const traceId = parent?.traceId ?? randomBytes(16).toString("hex");
  const flags = parent ? parent.traceFlags & TraceFlags.SAMPLED : TraceFlags.SAMPLED;
  return `00-${traceId}-${randomBytes(8).toString("hex")}-0${flags}`;
}

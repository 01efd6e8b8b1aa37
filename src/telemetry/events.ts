import { channel, type Channel } from "node:diagnostics_channel";

/**
 * What the gateway reports about itself. Layers publish plain records on these channels and know nothing
 * of metrics or traces; src/telemetry subscribes (metrics, tracing, the status page). Publishing to a
 * channel nobody subscribes to costs next to nothing. What happens on every call once its answer is on
 * its way (its end, its sandbox's state changes) is published with `publishSoon`, in batches.
 */

export type Outcome = "ok" | "tool_error" | "error" | "timeout";

/** One client request, from arrival to answer. Times are epoch milliseconds with sub-ms precision. */
export interface RequestRecord {
  transport: string;
  /** Whose request: the tenant and the credential (an API key's id, a token's subject). */
  tenant: string;
  subject: string;
  sessionId: string | undefined;
  requestId: string | number;
  method: string;
  /** The hosted server it was routed to, once known. */
  server?: string;
  /** The tool's name as the server knows it; only set for a tool that exists (bounded label values). */
  tool?: string;
  /** Refused by the tenant's access rules (its client was told the tool does not exist). */
  denied?: boolean;
  startedAt: number;
  /** A sandbox had to be acquired for this request: when, and where it came from. */
  acquire?: { start: number; end: number; source: string };
  /** The round trip to the guest: sent on the channel, answer received, and time inside the guest. */
  guest?: { sent: number; answered?: number; guestMs?: number };
  endedAt?: number;
  outcome?: Outcome;
  errorType?: string;
  /** W3C trace context the client sent (HTTP header or `_meta.traceparent`). */
  incomingTraceparent?: string;
  /** The request's own trace context (requestTraceparent), chosen on arrival; it goes into the guest in `_meta`. */
  traceparent?: string;
  /** Left for the tracing subscriber between start and end. */
  span?: unknown;
}

export interface SandboxTransitionRecord {
  server: string;
  sandboxId: string;
  from: string;
  to: string;
}

export interface SandboxResumeRecord {
  server: string;
  sandboxId: string;
  /** `snapshot`: a fresh clone of the template; `suspended`: a session's own saved state. */
  from: "snapshot" | "suspended";
  source: string;
  durationMs: number;
}

export interface TemplateBuiltRecord {
  server: string;
  coldBootMs: number;
  snapshotMs: number;
}

/** A session's sandbox saved to disk and stopped (`idle -> suspending -> suspended`). */
export interface SandboxSuspendRecord {
  server: string;
  sandboxId: string;
  durationMs: number;
  /** Size of what was saved (device state and dirty RAM). */
  bytes: number;
}

/** A sandbox that died without being asked to (QEMU or the hosted server exited, the guest panicked). */
export interface SandboxCrashRecord {
  server: string;
  sandboxId: string;
  /** Why, for logs; never a label. */
  detail?: string;
}

/**
 * One connection (or DNS question) a sandbox made through its egress, published when it ends (a
 * refusal at once). Never carries a credential's value.
 */
export interface EgressRecord {
  server: string;
  /** The VM it came from. */
  vm: string;
  kind: "dns" | "tunnel" | "intercepted" | "proxy-request";
  /** The allow entry that covered it, or `unlisted`: bounded, so it can be a metrics label. */
  destination: string;
  /** What the guest asked for (`host:port`, or a name for DNS): logs and spans only, never a label. */
  target: string;
  outcome: "ok" | "refused" | "failed" | "tls_failed";
  reason?: string;
  /** The name of the header the egress added (the value is never recorded). */
  injectedHeader?: string;
  startedAt: number;
  endedAt: number;
  /** Bytes from the guest, and to it. */
  bytesOut: number;
  bytesIn: number;
  /** The call in flight in that sandbox when the connection opened, if any. */
  traceparent?: string;
  /** Left for the tracing subscriber: which one recorded it. */
  claimed?: unknown;
}

/** What a cluster node did about a session it does not run, or about its own lease (docs/design/cluster.md). */
export type ClusterRecord =
  /** A request sent to the node that runs its session: answered, or that node could not be reached. */
  | { kind: "forward"; outcome: "ok" | "unreachable" }
  /** A request named a session not open here: revived here from its saved record, running elsewhere, or gone. */
  | { kind: "claim"; outcome: "revived" | "elsewhere" | "gone" }
  /** This node lost its lease and dropped its sessions. */
  | { kind: "fenced" };

export interface SessionRecord {
  transport: string;
  route: string;
}

export const events = {
  requestStart: channel("mcpvisor:request:start"),
  requestEnd: channel("mcpvisor:request:end"),
  sandboxTransition: channel("mcpvisor:sandbox:transition"),
  sandboxResume: channel("mcpvisor:sandbox:resume"),
  sandboxSuspend: channel("mcpvisor:sandbox:suspend"),
  sandboxCrash: channel("mcpvisor:sandbox:crash"),
  templateBuilt: channel("mcpvisor:template:built"),
  sessionOpened: channel("mcpvisor:session:opened"),
  sessionClosed: channel("mcpvisor:session:closed"),
  egress: channel("mcpvisor:egress"),
  cluster: channel("mcpvisor:cluster"),
} as const;

/** How long `publishSoon` holds a record: long enough for the answer it follows to reach its client. */
const SOON_MS = 2;
const held: Array<[Channel, object]> = [];
let flushTimer: NodeJS.Timeout | undefined;

/**
 * Publishes `record` a moment later, with whatever else came meanwhile: recording a call (spans,
 * metrics, log lines) then never runs between a guest's answer and the client it goes to, nor on the
 * CPU that client needs to read it. Readers of telemetry call `flushTelemetry()` first.
 */
export function publishSoon(target: Channel, record: object): void {
  held.push([target, record]);
  flushTimer ??= setTimeout(flushTelemetry, SOON_MS);
}

/** Publishes what `publishSoon` holds, now, in the order it came. */
export function flushTelemetry(): void {
  clearTimeout(flushTimer);
  flushTimer = undefined;
  for (const [target, record] of held.splice(0)) target.publish(record);
}

/** The current time in epoch milliseconds with sub-millisecond precision. */
export function nowMs(): number {
  return performance.timeOrigin + performance.now();
}

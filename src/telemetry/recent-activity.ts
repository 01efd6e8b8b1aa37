import { subscribe, unsubscribe } from "node:diagnostics_channel";
import { events, flushTelemetry, type Outcome, type RequestRecord, type SandboxResumeRecord, type SessionRecord } from "./events.js";

/**
 * What the status page shows besides the pools: the last calls (with where their time went), resume
 * latencies per server, and open sessions. Fed by the channels in src/telemetry/events.ts; bounded.
 */

export interface CallView {
  /** Epoch milliseconds when the request arrived. */
  at: number;
  tenant: string;
  method: string;
  server?: string;
  tool?: string;
  outcome: Outcome;
  errorType?: string;
  durationMs: number;
  acquireMs?: number;
  acquireSource?: string;
  roundtripMs?: number;
  guestMs?: number;
  transport: string;
  sessionId?: string;
  traceId?: string;
}

export interface LatencySummary {
  count: number;
  p50: number;
  p95: number;
  max: number;
}

export interface ResumeView extends LatencySummary {
  /** Resumes by where the clone came from (`prestarted`, `cold-vmm`, ...) and what it resumed from. */
  bySource: Record<string, number>;
}

/** Requests that do work in a server, as opposed to listing and session bookkeeping. */
const CALL_METHODS = new Set(["tools/call", "prompts/get", "resources/read", "completion/complete"]);

export interface RecentActivityOptions {
  maxCalls?: number;
  /** Resume samples kept per server for the percentiles. */
  maxResumes?: number;
}

export class RecentActivity {
  private readonly calls: CallView[] = [];
  private readonly resumes = new Map<string, { durations: number[]; bySource: Record<string, number>; total: number }>();
  private readonly sessions = new Map<string, number>();
  private readonly maxCalls: number;
  private readonly maxResumes: number;
  private readonly onRequestEnd = (m: unknown) => this.recordCall(m as RequestRecord);
  private readonly onResume = (m: unknown) => this.recordResume(m as SandboxResumeRecord);
  private readonly onSessionOpened = (m: unknown) => this.countSession(m as SessionRecord, 1);
  private readonly onSessionClosed = (m: unknown) => this.countSession(m as SessionRecord, -1);

  constructor(options: RecentActivityOptions = {}) {
    this.maxCalls = options.maxCalls ?? 100;
    this.maxResumes = options.maxResumes ?? 1000;
    subscribe(events.requestEnd.name, this.onRequestEnd);
    subscribe(events.sandboxResume.name, this.onResume);
    subscribe(events.sessionOpened.name, this.onSessionOpened);
    subscribe(events.sessionClosed.name, this.onSessionClosed);
  }

  /** The last calls, newest first; with `tenant`, only that tenant's. */
  recentCalls(limit = this.maxCalls, tenant?: string): CallView[] {
    flushTelemetry();
    const calls = tenant === undefined ? this.calls : this.calls.filter((c) => c.tenant === tenant);
    return calls.slice(-limit).reverse();
  }

  /** Resume latency per server (ms). */
  resumeLatency(): Record<string, ResumeView> {
    const out: Record<string, ResumeView> = {};
    for (const [server, r] of this.resumes) out[server] = { ...summarize(r.durations), count: r.total, bySource: { ...r.bySource } };
    return out;
  }

  /** Open client sessions by transport. */
  openSessions(): Record<string, number> {
    return Object.fromEntries(this.sessions);
  }

  private recordCall(record: RequestRecord): void {
    if (!CALL_METHODS.has(record.method) || !record.outcome) return;
    const end = record.endedAt ?? record.startedAt;
    const call: CallView = {
      at: record.startedAt,
      tenant: record.tenant,
      method: record.method,
      outcome: record.outcome,
      durationMs: round(end - record.startedAt),
      transport: record.transport,
    };
    if (record.server) call.server = record.server;
    if (record.tool) call.tool = record.tool;
    if (record.errorType) call.errorType = record.errorType;
    if (record.sessionId) call.sessionId = record.sessionId;
    if (record.acquire) {
      call.acquireMs = round(record.acquire.end - record.acquire.start);
      call.acquireSource = record.acquire.source;
    }
    if (record.guest) {
      call.roundtripMs = round((record.guest.answered ?? end) - record.guest.sent);
      if (record.guest.guestMs !== undefined) call.guestMs = round(record.guest.guestMs);
    }
    // The trace id of the context passed into the guest: this gateway's request span when traced.
    const traceId = /^[\da-f]{2}-([\da-f]{32})-[\da-f]{16}-[\da-f]{2}$/.exec(record.traceparent ?? record.incomingTraceparent ?? "")?.[1];
    if (traceId) call.traceId = traceId;
    this.calls.push(call);
    if (this.calls.length > this.maxCalls) this.calls.splice(0, this.calls.length - this.maxCalls);
  }

  private recordResume(record: SandboxResumeRecord): void {
    let r = this.resumes.get(record.server);
    if (!r) this.resumes.set(record.server, (r = { durations: [], bySource: {}, total: 0 }));
    r.durations.push(record.durationMs);
    if (r.durations.length > this.maxResumes) r.durations.shift();
    r.total++;
    const key = `${record.source} from ${record.from}`;
    r.bySource[key] = (r.bySource[key] ?? 0) + 1;
  }

  private countSession(record: SessionRecord, delta: number): void {
    const n = (this.sessions.get(record.transport) ?? 0) + delta;
    if (n > 0) this.sessions.set(record.transport, n);
    else this.sessions.delete(record.transport);
  }

  close(): void {
    unsubscribe(events.requestEnd.name, this.onRequestEnd);
    unsubscribe(events.sandboxResume.name, this.onResume);
    unsubscribe(events.sessionOpened.name, this.onSessionOpened);
    unsubscribe(events.sessionClosed.name, this.onSessionClosed);
  }
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}

/** Nearest-rank percentiles. */
export function summarize(samples: number[]): LatencySummary {
  if (samples.length === 0) return { count: 0, p50: 0, p95: 0, max: 0 };
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
  return { count: sorted.length, p50: round(at(0.5)), p95: round(at(0.95)), max: round(sorted[sorted.length - 1]!) };
}

import { subscribe, unsubscribe } from "node:diagnostics_channel";
import { events, flushTelemetry, type RequestRecord, type SandboxResumeRecord, type SessionRecord } from "./events.js";
import { round, summarize, type RequestSummary } from "./request-summary.js";

/**
 * What the status page shows besides the pools: the last calls (with where their time went), resume
 * latencies per server, and open sessions. Fed by the channels in src/telemetry/events.ts; bounded.
 */

export interface CallView extends RequestSummary {
  /** Epoch milliseconds when the request arrived. */
  at: number;
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
    for (const [server, r] of this.resumes) out[server] = { ...percentiles(r.durations), count: r.total, bySource: { ...r.bySource } };
    return out;
  }

  /** Open client sessions by transport. */
  openSessions(): Record<string, number> {
    return Object.fromEntries(this.sessions);
  }

  private recordCall(record: RequestRecord): void {
    if (!CALL_METHODS.has(record.method) || !record.outcome) return;
    this.calls.push({ at: record.startedAt, ...summarize(record) });
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

/** Nearest-rank percentiles. */
export function percentiles(samples: number[]): LatencySummary {
  if (samples.length === 0) return { count: 0, p50: 0, p95: 0, max: 0 };
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
  return { count: sorted.length, p50: round(at(0.5)), p95: round(at(0.95)), max: round(sorted[sorted.length - 1]!) };
}

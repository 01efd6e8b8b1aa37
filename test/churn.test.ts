/**
 * Sessions that come and go while their sandboxes suspend, resume and die under them: every request is
 * answered (no client left hanging), what a session wrote is still there after each suspend and resume,
 * no VM outlives what holds it, and the gateway stays up. Each client's steps are drawn from a fixed
 * seed (MCPVISOR_CHURN_SEED to vary), so a failure can be replayed.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { RawMcpClient } from "../bench/raw-mcp-client.js";
import { eventually, runningVmms, serversDirWith, startReadyGateway, testConfig } from "./helpers.js";
import { prng } from "./prng.js";

const SEED = Number(process.env.MCPVISOR_CHURN_SEED ?? 20261128);
const CLIENTS = 6;
const STEPS = 6;
/** Far beyond any answer here (a resume from disk takes well under a second): past it, a request hung. */
const ANSWER_WITHIN_MS = 30_000;
const CALL_MS = 10_000;
const IDLE_SUSPEND_MS = 300;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Where the gateway saves a session whose sandbox is suspended (what a restarted gateway revives). */
const SESSIONS_DIR = join(testConfig().cacheDir, "sessions");
type Step = { kind: "write" | "read" | "idle" | "end-mid-call"; delayMs: number };

/** Every client's steps, drawn up front: the clients run at once, so drawing as they go would not replay. */
function plans(random: () => number): Step[][] {
  return Array.from({ length: CLIENTS }, () =>
    Array.from({ length: STEPS }, () => {
      const r = random();
      const kind = r < 0.35 ? "write" : r < 0.55 ? "read" : r < 0.8 ? "idle" : "end-mid-call";
      return { kind, delayMs: Math.floor(random() * 150) };
    }),
  );
}

test("churn: sessions come and go while sandboxes suspend, resume and are killed; nothing hangs, leaks or loses a write", { timeout: 300_000 }, async () => {
  // A call's own deadline well inside ANSWER_WITHIN_MS: a call that runs into it is answered (with a
  // timeout error), which the test must tell apart from a call never answered at all.
  const serversDir = await serversDirWith({ memory: (m) => ({ timeouts: { ...m.timeouts, idleSuspendMs: IDLE_SUSPEND_MS, callMs: CALL_MS } }) });
  const gateway = await startReadyGateway({ servers: ["memory"], serversDir }, { pool: { prestarted: 1, warm: 1 } });
  const url = gateway.url("memory");
  const stats = () => gateway.pool.stats().find((s) => s.server === "memory")!;
  const hung: string[] = [];
  const lost: string[] = [];

  /** The request's outcome, or a record that it hung. */
  const answered = async (what: string, request: Promise<unknown>): Promise<{ ok: boolean; error?: string }> => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const outcome = await Promise.race([
      request.then(
        () => ({ ok: true }),
        (err: Error) => ({ ok: false, error: err.message }),
      ),
      new Promise<undefined>((resolve) => {
        timer = setTimeout(() => resolve(undefined), ANSWER_WITHIN_MS);
      }),
    ]);
    clearTimeout(timer);
    if (!outcome) hung.push(what);
    // No call here takes seconds: one answered only by its own deadline waited on a guest that could not answer.
    else if ("error" in outcome && outcome.error.includes("CALL_TIMEOUT")) hung.push(`${what} (answered only by its callMs deadline)`);
    return outcome ?? { ok: false, error: "hung" };
  };
  const names = async (session: RawMcpClient, what: string): Promise<string[] | undefined> => {
    let graph: { structuredContent?: { entities: { name: string }[] } } | undefined;
    const outcome = await answered(what, session.request("tools/call", { name: "read_graph", arguments: {} }).then((r) => (graph = r as typeof graph)));
    return outcome.ok ? graph!.structuredContent!.entities.map((e) => e.name).sort() : undefined;
  };

  /**
   * One client working through its plan. With `checkState`, every read must show exactly what the
   * session wrote; without (sandboxes are being killed), a read must only be answered.
   */
  const client = async (n: number, plan: Step[], checkState: boolean) => {
    let session = new RawMcpClient(url);
    await session.initialize();
    let wrote: string[] = [];
    const check = async (what: string) => {
      const seen = await names(session, what);
      if (checkState && seen && JSON.stringify(seen) !== JSON.stringify([...wrote].sort())) lost.push(`${what}: saw [${seen}], wrote [${wrote}]`);
    };
    /**
     * Idles until the session's sandbox is suspended, which its record saved since shows. In the second
     * round, where a kill may come before any suspend, it idles for `killingMs` instead.
     */
    const idle = async (what: string, killingMs: number) => {
      if (!checkState) return await sleep(killingMs);
      const since = Date.now();
      const savedSince = () => {
        try {
          const record = JSON.parse(readFileSync(join(SESSIONS_DIR, `${session.sessionId}.json`), "utf8")) as { savedAt: string };
          return Date.parse(record.savedAt) >= since;
        } catch {
          return false; // not saved: its sandbox runs
        }
      };
      await eventually(savedSince, `${what}: the session's sandbox to be suspended`, ANSWER_WITHIN_MS);
    };
    await check(`client ${n} first call`); // the session holds a sandbox from the start, to idle in
    for (const [i, step] of plan.entries()) {
      const what = `client ${n} step ${i} (${step.kind})`;
      if (step.kind === "write") {
        const name = `c${n}-${i}`;
        const entities = [{ name, entityType: "t", observations: ["churn"] }];
        if ((await answered(what, session.request("tools/call", { name: "create_entities", arguments: { entities } }))).ok) wrote.push(name);
      } else if (step.kind === "read") {
        await check(what);
      } else if (step.kind === "idle") {
        await idle(what, IDLE_SUSPEND_MS + 400 + step.delayMs);
        await check(what);
      } else {
        // Idle until suspended, so the call resumes the sandbox from disk; the session then ends (DELETE)
        // while it comes back: the call is answered either way.
        await idle(what, IDLE_SUSPEND_MS + 2_000);
        const call = answered(what, session.request("tools/call", { name: "read_graph", arguments: {} }));
        await sleep(step.delayMs);
        await answered(`${what}: DELETE`, session.close());
        await call;
        session = new RawMcpClient(url);
        await session.initialize();
        wrote = [];
        await check(`${what}: new session's first call`);
      }
    }
    await session.close();
  };

  /** Kills the QEMU of a running session sandbox every so often, as a crashing guest would end. */
  const killer = async (stop: { done: boolean }) => {
    let kills = 0;
    while (!stop.done) {
      await sleep(700);
      const victim = stats().sandboxes.find((s) => s.pid !== undefined && s.state !== "destroyed");
      if (!victim?.pid) continue;
      try {
        process.kill(victim.pid, "SIGKILL");
        kills++;
      } catch {
        // it ended on its own meanwhile
      }
    }
    return kills;
  };

  const random = prng(SEED);
  try {
    await Promise.all(plans(random).map((plan, n) => client(n, plan, true)));
    const stop = { done: false };
    const killing = killer(stop);
    await Promise.all(plans(random).map((plan, n) => client(CLIENTS + n, plan, false)));
    stop.done = true;
    const kills = await killing;
    assert.ok(kills > 0, "the second round killed sandboxes under the sessions");

    assert.deepEqual(hung, [], "every request is answered");
    assert.deepEqual(lost, [], "every session reads back exactly what it wrote, across suspends and resumes");
    await eventually(() => stats().leased === 0, "every session's sandbox is gone with its session", 20_000);
    await eventually(() => runningVmms().length === stats().prestarted + stats().warm, "only the pool's VMs run", 20_000);
    const after = new RawMcpClient(url);
    await after.initialize();
    await after.request("tools/call", { name: "read_graph", arguments: {} });
    await after.close();
  } finally {
    await gateway.close();
  }
  assert.deepEqual(runningVmms(), [], "no VM outlives the gateway");
});

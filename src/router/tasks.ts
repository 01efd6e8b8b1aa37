import { randomUUID } from "node:crypto";
import type { JSONRPCResponse, RequestId } from "./messages.js";
import type { ModernReplyTarget } from "./modern-transport.js";

/** The tasks extension (SEP-2663): a client declares it in `_meta` clientCapabilities.extensions. */
export const TASKS_EXTENSION = "io.modelcontextprotocol/tasks";

/** How long a finished task's outcome stays readable with `tasks/get`. */
export const TASK_TTL_MS = 600_000;
/** How often a client is told to poll. */
const TASK_POLL_INTERVAL_MS = 1_000;

export type TaskStatus = "working" | "input_required" | "completed" | "failed" | "cancelled";

/**
 * A long `tools/call` turned into a task: the call goes on in its VM (the session's request `request`),
 * and its outcome is kept here for `tasks/get`.
 */
export interface Task {
  taskId: string;
  /** The session's id of the request the task is. */
  request: RequestId;
  status: TaskStatus;
  createdAt: string;
  lastUpdatedAt: string;
  /** The tool's result (completed; a tool error too) or the protocol error (failed). */
  outcome?: { result: Record<string, unknown> } | { error: Record<string, unknown> };
  /** The open input_required round, while status is input_required. */
  input?: { inputRequests: unknown; requestState: string };
  expiry?: NodeJS.Timeout;
}

/**
 * A modern session's tasks (SEP-2663): the calls that became tasks, readable by `tasks/get` while they
 * run and for TASK_TTL_MS after they finished. A task is its session's own: no other session sees it.
 */
export class TaskBoard {
  private readonly tasks = new Map<string, Task>();

  /** A new task: the call with the session's request id `request`. */
  create(request: RequestId): Task {
    const now = new Date().toISOString();
    const task: Task = { taskId: randomUUID(), request, status: "working", createdAt: now, lastUpdatedAt: now };
    this.tasks.set(task.taskId, task);
    return task;
  }

  get(taskId: unknown): Task | undefined {
    return typeof taskId === "string" ? this.tasks.get(taskId) : undefined;
  }

  /** Where the task's call answers from now on: a result or error settles it; an input_required round parks it. */
  targetFor(task: Task): ModernReplyTarget {
    return {
      notify: () => undefined, // a task's progress has no stream to go on
      answer: (answer) => {
        const result = "result" in answer ? (answer.result as Record<string, unknown>) : undefined;
        if (result?.resultType === "input_required") {
          task.input = { inputRequests: result.inputRequests, requestState: String(result.requestState) };
          return setStatus(task, "input_required");
        }
        settle(task, answer);
        this.finished(task);
      },
    };
  }

  /** A finished task stays readable for TASK_TTL_MS. */
  finished(task: Task): void {
    task.expiry = setTimeout(() => this.tasks.delete(task.taskId), TASK_TTL_MS).unref();
  }

  close(): void {
    for (const task of this.tasks.values()) clearTimeout(task.expiry);
    this.tasks.clear();
  }
}

export function setStatus(task: Task, status: TaskStatus): void {
  task.status = status;
  task.lastUpdatedAt = new Date().toISOString();
}

/** What a task is, as `tools/call` (CreateTaskResult, flat) and `tasks/get` (with the outcome inlined) show it. */
export function taskView(task: Task): Record<string, unknown> {
  return {
    taskId: task.taskId,
    status: task.status,
    createdAt: task.createdAt,
    lastUpdatedAt: task.lastUpdatedAt,
    ttlMs: TASK_TTL_MS,
    pollIntervalMs: TASK_POLL_INTERVAL_MS,
    ...(task.status === "input_required" && task.input ? { inputRequests: task.input.inputRequests } : {}),
    ...task.outcome,
  };
}

/** Files a response to the task's call: a result completes it (a tool error too), an error fails it. */
export function settle(task: Task, answer: JSONRPCResponse): void {
  if ("result" in answer) {
    const { resultType: _complete, ...result } = answer.result as Record<string, unknown>;
    task.outcome = { result };
    setStatus(task, "completed");
  } else {
    task.outcome = { error: { ...answer.error } };
    setStatus(task, "failed");
  }
}

/**
 * Whether, and when, a tools/call becomes a task for a client that declared the extension: the tool's own
 * `execution.taskSupport` (2025-11-25 tools may declare it) decides; an undeclared tool follows its
 * server's `timeouts.taskAfterMs` (0: never). `required`: at once, and a client without the extension is
 * refused; `optional`: after `taskAfterMs` (0: at once); `forbidden`: never.
 */
export type TaskPolicy = { kind: "never" } | { kind: "after"; ms: number; required: boolean };

export function taskPolicyOf(taskSupport: unknown, taskAfterMs: number): TaskPolicy {
  if (taskSupport === "required") return { kind: "after", ms: 0, required: true };
  if (taskSupport === "optional") return { kind: "after", ms: taskAfterMs, required: false };
  if (taskSupport === "forbidden" || taskAfterMs <= 0) return { kind: "never" };
  return { kind: "after", ms: taskAfterMs, required: false };
}

/** Whether the client of a request declared the tasks extension. */
export function declaresTasks(capabilities: Record<string, unknown>): boolean {
  const extensions = capabilities.extensions;
  return typeof extensions === "object" && extensions !== null && TASKS_EXTENSION in extensions;
}

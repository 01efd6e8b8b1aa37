import type { Transport, TransportSendOptions } from "@modelcontextprotocol/sdk/shared/transport.js";
import { ErrorCode } from "@modelcontextprotocol/sdk/types.js";
import { INPUT_STATE_TTL_S, InputStateCodec, inputKeyOf, inputRequestsOf, inputResponseOf, type AskedInput, type InputState } from "./input-requests.js";
import { isObject, isRequest, isResponse, type JSONRPCMessage, type JSONRPCNotification, type JSONRPCRequest, type JSONRPCResponse, type RequestId } from "./messages.js";
import { ListenStreams } from "./listen-streams.js";
import {
  CACHEABLE_METHODS,
  isSubscriptionNotification,
  logLevelAtLeast,
  ModernErrorCode,
  modernMetaOf,
  paramHeaderMismatch,
  type ModernRequestMeta,
  type SubscriptionFilter,
} from "./modern-protocol.js";
import { declaresTasks, setStatus, TaskBoard, TASK_TTL_MS, TASKS_EXTENSION, taskView, type Task, type TaskPolicy } from "./tasks.js";

/** Where one modern request's answer goes: a face's HTTP response (or, later, a WebSocket or stdio line). */
export interface ModernReplyTarget {
  /** A message about the request before its answer (progress, a log line the client asked for). */
  notify(message: JSONRPCNotification): void;
  /** The answer, with the client's own id; nothing follows it. */
  answer(message: JSONRPCResponse): void;
}

export interface CacheHints {
  ttlMs: number;
  cacheScope: "public" | "private";
}

/** What 2025-era servers answer for a resource that does not exist (the 2026-07-28 revision says -32602). */
const LEGACY_RESOURCE_NOT_FOUND = -32002;
/** One key for the process: a state shown to another session must fail the session check, not the MAC. */
const codec = new InputStateCodec();
/** A server asking several things at once (Promise.all) sends them within this; they go out in one round. */
const ASK_BATCH_MS = 20;

interface Exchange {
  /** The id the client gave the request, or its latest retry. */
  clientId: RequestId;
  method: string;
  meta: ModernRequestMeta;
  /** Where the answer goes; undefined while the request waits for the client's retry (an input_required round). */
  target: ModernReplyTarget | undefined;
  /** What the server asked of the client and has not had answered, by input key. */
  asked: Map<string, AskedInput>;
  round: number;
  /** Answers the client sent with the request itself, before any question (SEP-2322's ephemeral flow). */
  offered?: Record<string, unknown>;
  /** The server's answer, when it came while no retry was there to take it. */
  final?: JSONRPCResponse;
  /** Gathers a round's questions (with a target), or ends a round no retry came for (without). */
  timer?: NodeJS.Timeout;
  /** Turns the call into a task once it has run past its threshold (`taskAfter` ms, see TaskPolicy). */
  taskTimer?: NodeJS.Timeout;
  taskAfter?: number;
  /** The task the call became: its answers go there, for `tasks/get`. */
  task?: Task;
  /** The client asked for tool search mode with this request (`?tools=search`). */
  toolSearch?: boolean;
}

/**
 * The transport of one principal's modern-era session on a route (docs/design/protocol-eras.md). Each
 * request comes with a reply target of its own; it gets an id unique in the session, since stateless
 * clients number their requests independently (every one of them may send id 1), and its answer goes back
 * to its target under the client's id, with the 2026 result fields (`resultType`, cache hints) added.
 *
 * A hosted server asking the client something while it works on a request (sampling, elicitation, roots:
 * 2025-era requests to the client) becomes an `input_required` round (SEP-2322): the client's POST is
 * answered with the questions and a signed `requestState`, the call waits in its VM, and the client's
 * retry carrying `inputResponses` and that state hands the answers to the server and waits for what comes
 * next: the result, or another round.
 */
export class ModernTransport implements Transport {
  onmessage?: (message: JSONRPCMessage) => void;
  onclose?: () => void;
  onerror?: (error: Error) => void;
  /** A request this transport gave up on (its client went away, or never retried): the session fails it. */
  onabandoned?: (id: RequestId, why: string) => void;
  /** What the session knows of a tools/call's tool: whether, and when, it becomes a task, and its inputSchema. */
  toolFacts?: (request: JSONRPCRequest) => Promise<{ policy: TaskPolicy; inputSchema: unknown }>;
  private readonly tasks = new TaskBoard();
  private readonly exchanges = new Map<RequestId, Exchange>();
  private readonly listening = new ListenStreams();
  private next = 0;
  private asks = 0;
  private closed = false;

  constructor(
    /** The session's id: what its saved state is stored under (see ModernSessions). */
    readonly sessionId: string,
    private readonly cache: CacheHints,
  ) {}

  async start(): Promise<void> {}

  /**
   * Hands one request to the session, or a retry with `requestState` to the request it resumes; resolves
   * with a function that abandons it (its client went away). `header` reads the HTTP request's headers
   * (faces without them pass none): a tools/call's `Mcp-Param-*` headers are checked against its arguments.
   */
  async request(message: JSONRPCRequest, target: ModernReplyTarget, header?: (name: string) => string | undefined, toolSearch = false): Promise<() => void> {
    if (message.method.startsWith("tasks/")) return this.taskRequest(message, target);
    const { inputResponses, requestState, task: _hint, ...params } = message.params ?? {};
    if (typeof requestState === "string") return this.resume(message, requestState, inputResponses, target);
    // Without a state it is a new request; answers it carries up front answer the questions they name.
    const id = `modern-${++this.next}`;
    const offered = isObject(inputResponses) ? { ...inputResponses } : undefined;
    const meta = modernMetaOf(message);
    const exchange: Exchange = { clientId: message.id, method: message.method, meta, target, asked: new Map(), round: 0, offered, toolSearch };
    // The gateway decides what becomes a task (a client's `task` hint is tolerated, and ignored).
    const facts = message.method === "tools/call" && this.toolFacts ? await this.toolFacts(message) : undefined;
    const mismatch = facts && header ? paramHeaderMismatch(facts.inputSchema, params.arguments, header) : undefined;
    if (mismatch) {
      target.answer({ jsonrpc: "2.0", id: message.id, error: { code: ModernErrorCode.HeaderMismatch, message: `Bad Request: ${mismatch}` } });
      return () => undefined;
    }
    const policy: TaskPolicy = facts?.policy ?? { kind: "never" };
    if (policy.kind === "after") {
      if (!declaresTasks(meta.capabilities)) {
        if (policy.required) return this.refuseUndeclaredTasks(message, target, `Tool '${String(message.params?.name)}' runs only as a task`);
      } else {
        exchange.taskAfter = policy.ms;
        this.armTask(id, exchange);
      }
    }
    this.exchanges.set(id, exchange);
    this.onmessage?.({ ...message, id, params });
    return this.abandoner(id, target);
  }

  /** What request `id` (an id of this session's) is, and what its client declared. */
  requestOf(id: RequestId): { method: string; meta: ModernRequestMeta; toolSearch?: boolean } | undefined {
    return this.exchanges.get(id);
  }

  async send(message: JSONRPCMessage, options?: TransportSendOptions): Promise<void> {
    if (isResponse(message)) {
      const exchange = message.id === undefined ? undefined : this.exchanges.get(message.id);
      if (!exchange) return; // abandoned by its client
      this.refuseAsked(exchange, ErrorCode.InvalidRequest, "The request was answered meanwhile");
      if (!exchange.target) return void (exchange.final = message); // the next retry takes it
      this.end(message.id!);
      return exchange.target.answer(this.answerOf(message, exchange));
    }
    if (!isRequest(message) && isSubscriptionNotification(message.method)) return this.listening.publish(message);
    const id = options?.relatedRequestId;
    const related = id === undefined ? undefined : this.exchanges.get(id);
    if (!related) return; // about no request of this client
    if (isRequest(message)) return this.ask(id!, related, message);
    if (message.method === "notifications/message") {
      if (related.meta.logLevel === undefined || !logLevelAtLeast(message.params?.level, related.meta.logLevel)) return;
    }
    related.target?.notify(message);
  }

  /** Turns request `id` (`subscriptions/listen`) into a listen stream (ListenStreams). */
  listen(id: RequestId, filter: SubscriptionFilter): void {
    const exchange = this.exchanges.get(id);
    if (!exchange?.target) return;
    this.end(id);
    this.listening.open(id, { clientId: exchange.clientId, filter, target: exchange.target });
  }

  /**
   * A server's question to the client: answered at once if the request came with an answer under its key,
   * else it goes out with the others asked within ASK_BATCH_MS.
   */
  private ask(id: RequestId, exchange: Exchange, request: JSONRPCRequest): void {
    const { key, params } = inputKeyOf(request, ++this.asks, exchange.asked);
    const offered = inputResponseOf(exchange.offered, key);
    if (offered) {
      delete exchange.offered![key];
      return this.onmessage?.({ jsonrpc: "2.0", id: request.id, result: offered });
    }
    exchange.asked.set(key, { id: request.id, method: request.method, params });
    if (exchange.target && !exchange.timer) exchange.timer = setTimeout(() => void this.askClient(id), ASK_BATCH_MS);
  }

  /** Answers the request's POST with an input_required round, and parks the request until the retry. */
  private async askClient(id: RequestId): Promise<void> {
    const exchange = this.exchanges.get(id);
    const target = exchange?.target;
    if (!exchange || !target || exchange.asked.size === 0) return;
    clearTimeout(exchange.timer);
    exchange.timer = undefined;
    exchange.target = undefined;
    const round = ++exchange.round;
    const requestState = await codec.mint({ session: this.sessionId, request: id, round, keys: [...exchange.asked.keys()] });
    target.answer({
      jsonrpc: "2.0",
      id: exchange.clientId,
      result: { resultType: "input_required", inputRequests: inputRequestsOf(exchange.asked), requestState },
    });
    exchange.timer = setTimeout(() => this.drop(id, ErrorCode.RequestTimeout, `No retry answered its input_required result within ${INPUT_STATE_TTL_S} s`), INPUT_STATE_TTL_S * 1000).unref();
  }

  /** A retry with `requestState`: the answers go to the server, and the parked request answers this POST from now on. */
  private async resume(message: JSONRPCRequest, token: string, responses: unknown, target: ModernReplyTarget): Promise<() => void> {
    const refuse = (why: string) => {
      target.answer({ jsonrpc: "2.0", id: message.id, error: { code: ErrorCode.InvalidParams, message: `Invalid requestState: ${why}` } });
      return () => undefined;
    };
    const state = await codec.verify(token);
    if ("refused" in state) return refuse(`it fails verification (${state.refused}): it was altered, or is older than ${INPUT_STATE_TTL_S} s; send the request again without it`);
    if (state.session !== this.sessionId) return refuse("it was issued to another principal or for another endpoint");
    const exchange = this.exchanges.get(state.request);
    if (!exchange || exchange.target || exchange.task || exchange.round !== state.round || exchange.method !== message.method) {
      return refuse("it no longer names a request waiting for input: it was used already, or its request ended; send the request again without it");
    }
    exchange.clientId = message.id;
    return this.continueRound(state, exchange, responses, target);
  }

  /** Hands a round's answers to the server; `target` takes the request over from here. */
  private continueRound(state: InputState, exchange: Exchange, responses: unknown, target: ModernReplyTarget): () => void {
    clearTimeout(exchange.timer);
    exchange.timer = undefined;
    exchange.target = target;
    this.armTask(state.request, exchange); // its threshold counts again from this retry
    if (exchange.final) {
      this.end(state.request);
      target.answer(this.answerOf(exchange.final, exchange));
      return () => undefined;
    }
    for (const key of state.keys) {
      const asked = exchange.asked.get(key);
      const response = inputResponseOf(responses, key);
      if (!asked || !response) continue;
      exchange.asked.delete(key);
      this.onmessage?.({ jsonrpc: "2.0", id: asked.id, result: response });
    }
    // What is still unanswered is asked again at once.
    if (exchange.asked.size > 0) void this.askClient(state.request);
    return this.abandoner(state.request, target);
  }

  private abandoner(id: RequestId, target: ModernReplyTarget): () => void {
    return () => {
      // Only while this POST is the request's target: after an input_required round, the retry's is.
      if (this.exchanges.get(id)?.target === target) this.drop(id, ErrorCode.ConnectionClosed, "The client closed its connection");
      this.listening.abandoned(id, target);
    };
  }

  /** Gives up on a request: the server's questions are refused, the request cancelled, and the session told. */
  private drop(id: RequestId, code: number, why: string, taskStatus: "cancelled" | "failed" = "failed"): void {
    const exchange = this.exchanges.get(id);
    if (!exchange) return;
    this.end(id);
    if (exchange.task) {
      if (taskStatus === "failed") exchange.task.outcome = { error: { code, message: why } };
      setStatus(exchange.task, taskStatus);
      this.tasks.finished(exchange.task);
    }
    this.refuseAsked(exchange, code, why);
    this.onmessage?.({ jsonrpc: "2.0", method: "notifications/cancelled", params: { requestId: id, reason: why } });
    this.onabandoned?.(id, why);
  }

  private end(id: RequestId): void {
    const exchange = this.exchanges.get(id);
    clearTimeout(exchange?.timer);
    clearTimeout(exchange?.taskTimer);
    this.exchanges.delete(id);
  }

  private armTask(id: RequestId, exchange: Exchange): void {
    if (exchange.taskAfter === undefined || exchange.task) return;
    clearTimeout(exchange.taskTimer);
    exchange.taskTimer = setTimeout(() => this.toTask(id), exchange.taskAfter).unref();
  }

  private refuseUndeclaredTasks(message: JSONRPCRequest, target: ModernReplyTarget, what: string): () => void {
    target.answer({
      jsonrpc: "2.0",
      id: message.id,
      error: {
        code: ModernErrorCode.MissingRequiredClientCapability,
        message: `${what}: declare the '${TASKS_EXTENSION}' extension in the request's client capabilities`,
        data: { requiredCapabilities: { extensions: { [TASKS_EXTENSION]: {} } } },
      },
    });
    return () => undefined;
  }

  /**
   * The call has run past its threshold: its client gets a CreateTaskResult now, and everything the call
   * answers from here on (a result, an error, an input_required round) goes to the task.
   */
  private toTask(id: RequestId): void {
    const exchange = this.exchanges.get(id);
    const client = exchange?.target;
    if (!exchange || !client || exchange.task) return; // answered, or waiting for an input_required retry
    const task = this.tasks.create(id);
    exchange.task = task;
    exchange.target = this.tasks.targetFor(task);
    client.answer({ jsonrpc: "2.0", id: exchange.clientId, result: { resultType: "task", ...taskView(task) } });
  }

  /** `tasks/get`, `tasks/update`, `tasks/cancel` (SEP-2663), answered here: a task is this session's own. */
  private async taskRequest(message: JSONRPCRequest, target: ModernReplyTarget): Promise<() => void> {
    const reply = (result: Record<string, unknown>) => target.answer({ jsonrpc: "2.0", id: message.id, result: { resultType: "complete", ...result } });
    const refuse = (code: number, text: string, data?: Record<string, unknown>) =>
      target.answer({ jsonrpc: "2.0", id: message.id, error: { code, message: text, ...(data ? { data } : {}) } });
    const done = () => undefined;
    if (!["tasks/get", "tasks/update", "tasks/cancel"].includes(message.method)) {
      refuse(ErrorCode.MethodNotFound, `Method '${message.method}' does not exist with the tasks extension (tasks/get carries a task's result)`);
      return done;
    }
    if (!declaresTasks(modernMetaOf(message).capabilities)) return this.refuseUndeclaredTasks(message, target, message.method);
    const taskId = message.params?.taskId;
    const task = this.tasks.get(taskId);
    if (!task) {
      refuse(ErrorCode.InvalidParams, `Unknown task '${String(taskId)}': it never existed here, or finished more than ${TASK_TTL_MS / 1000} s ago`);
      return done;
    }
    if (message.method === "tasks/get") {
      reply(taskView(task));
    } else if (message.method === "tasks/cancel") {
      if (task.status === "working" || task.status === "input_required") this.drop(task.request, ErrorCode.ConnectionClosed, "The task was cancelled by its client", "cancelled");
      reply({});
    } else {
      const exchange = this.exchanges.get(task.request);
      const state = task.input ? await codec.verify(task.input.requestState) : undefined;
      if (!exchange || task.status !== "input_required" || !state || "refused" in state) {
        refuse(ErrorCode.InvalidParams, `Task '${task.taskId}' is not waiting for input (it is ${task.status})`);
        return done;
      }
      this.continueRound(state, exchange, message.params?.inputResponses, this.tasks.targetFor(task));
      // Answered in part, it stays input_required with what is still open; answered in full, it works on.
      if (exchange.asked.size > 0) task.input = { ...task.input!, inputRequests: inputRequestsOf(exchange.asked) };
      else {
        task.input = undefined;
        setStatus(task, "working");
      }
      reply({});
    }
    return done;
  }

  /** The server's unanswered questions get an error, so its handler stops waiting and the VM's call ends. */
  private refuseAsked(exchange: Exchange, code: number, why: string): void {
    for (const asked of exchange.asked.values()) this.onmessage?.({ jsonrpc: "2.0", id: asked.id, error: { code, message: why } });
    exchange.asked.clear();
  }

  private answerOf(message: JSONRPCResponse, exchange: Exchange): JSONRPCResponse {
    if (!("result" in message)) {
      // SEP-2164: a resource that does not exist is invalid params now; 2025-era servers say -32002.
      const error = message.error.code === LEGACY_RESOURCE_NOT_FOUND ? { ...message.error, code: ErrorCode.InvalidParams } : message.error;
      return { ...message, error, id: exchange.clientId };
    }
    const result: Record<string, unknown> = { resultType: "complete", ...message.result };
    if (CACHEABLE_METHODS.has(exchange.method)) {
      if (!Number.isSafeInteger(result.ttlMs) || (result.ttlMs as number) < 0) result.ttlMs = this.cache.ttlMs;
      if (result.cacheScope !== "public" && result.cacheScope !== "private") result.cacheScope = this.cache.cacheScope;
    }
    return { jsonrpc: "2.0", id: exchange.clientId, result } as JSONRPCResponse;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const exchange of this.exchanges.values()) {
      clearTimeout(exchange.timer);
      clearTimeout(exchange.taskTimer);
    }
    this.exchanges.clear();
    this.tasks.close();
    this.listening.close();
    this.onclose?.();
  }
}

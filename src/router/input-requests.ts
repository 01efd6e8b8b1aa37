import { randomBytes } from "node:crypto";
import { createRequestStateCodec, type ServerContext } from "@modelcontextprotocol/server";
import { isObject, type JSONRPCRequest, type RequestId } from "./messages.js";

/** Requests whose answer may be an `input_required` result (SEP-2322); a server asking during any other fails it. */
export const INPUT_METHODS = new Set(["tools/call", "prompts/get", "resources/read"]);

/** How long a `requestState` holds, and so how long an answered round waits for its retry. */
export const INPUT_STATE_TTL_S = 600;

/** What the gateway's `requestState` says: which parked request it resumes, in which session, for which inputs. */
export interface InputState {
  session: string;
  request: RequestId;
  /** Each input_required answer of a request is a round; only the latest round's state resumes it. */
  round: number;
  keys: string[];
}

/** A hosted server's request to the client, waiting for the client's retry to answer it. */
export interface AskedInput {
  id: RequestId;
  method: string;
  params: Record<string, unknown>;
}

/**
 * Signs and checks `requestState` (the v2 SDK's HMAC codec, one random key per gateway process: a parked
 * call lives in this process's VM, so no other process could resume it anyway). The session id inside
 * binds it to the principal and route it was minted for.
 */
export class InputStateCodec {
  private readonly codec = createRequestStateCodec<InputState>({ key: randomBytes(32), ttlSeconds: INPUT_STATE_TTL_S });

  mint(state: InputState): Promise<string> {
    return this.codec.mint(state);
  }

  /** The state, or why it is refused: malformed, mac (tampered), expired. Nothing else about it is said. */
  async verify(state: string): Promise<InputState | { refused: string }> {
    try {
      // Without a bind callback the codec never reads the context.
      return await this.codec.verify(state, undefined as unknown as ServerContext);
    } catch (error) {
      return { refused: (error as Error).message };
    }
  }
}

/** The `inputRequests` map of an input_required result. */
export function inputRequestsOf(asked: Map<string, AskedInput>): Record<string, { method: string; params: Record<string, unknown> }> {
  return Object.fromEntries([...asked].map(([key, { method, params }]) => [key, { method, params }]));
}

/** The client's answer to one input request, when it is one (an object); anything else leaves it unanswered. */
export function inputResponseOf(responses: unknown, key: string): Record<string, unknown> | undefined {
  const value = isObject(responses) ? responses[key] : undefined;
  return isObject(value) ? value : undefined;
}

/** Where a server that knows of MRTR may name its question's key, in the request's `_meta`. */
const INPUT_KEY_META = "io.mcpvisor/inputKey";

/**
 * The key a question goes under in `inputRequests`, and its params as the client sees them: the key the
 * server named (INPUT_KEY_META) when it is free, else what it asks for and a number (`elicitation-7`).
 */
export function inputKeyOf(request: JSONRPCRequest, n: number, taken: Map<string, unknown>): { key: string; params: Record<string, unknown> } {
  const { _meta, ...params } = request.params ?? {};
  const { [INPUT_KEY_META]: named, ...meta } = isObject(_meta) ? _meta : {};
  const key = typeof named === "string" && named && !taken.has(named) ? named : `${request.method.split("/")[0]}-${n}`;
  return { key, params: isObject(_meta) && Object.keys(meta).length > 0 ? { ...params, _meta: meta } : params };
}

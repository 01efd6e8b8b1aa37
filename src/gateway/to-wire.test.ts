import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { ErrorCode } from "@modelcontextprotocol/sdk/types.js";
import { AccessError } from "../auth/access-error.js";
import { CredentialError } from "../auth/refusal.js";
import { InvalidParamsError, MethodNotFoundError, SessionEndedError, UnknownToolError } from "../router/errors.js";
import * as sandboxErrors from "../sandbox/errors.js";
import { EDGE_ERROR, QuotaError } from "../tenancy/quota-error.js";
import { errorResponse, failureBody, isRefusal, toWire } from "./to-wire.js";

const {
  AgentProtocolError,
  AgentTimeoutError,
  BootTimeoutError,
  BusyError,
  CallTimeoutError,
  GuestExitedError,
  GuestRpcError,
  IllegalTransitionError,
  SandboxLostError,
  PoolClosedError,
  QmpError,
  QmpTimeoutError,
  ResumeError,
  SandboxClosedError,
  SnapshotCorruptError,
  SnapshotError,
  SuspendError,
  TemplateError,
  UnknownServerError,
  VmmExitedError,
  VmmStartError,
} = sandboxErrors;

/** The first run of three words said twice, as in "sandbox for 'x' failed: sandbox for 'x' was closed". */
function stutter(message: string): string | undefined {
  const words = message.toLowerCase().split(/[\s:().,;]+/).filter(Boolean);
  const seen = new Set<string>();
  for (let i = 0; i + 3 <= words.length; i++) {
    const run = words.slice(i, i + 3).join(" ");
    if (seen.has(run)) return run;
    seen.add(run);
  }
  return undefined;
}

interface Expected {
  status: number;
  code: number;
  retryable: boolean;
  /** What the message must say, besides the error's own message. */
  says?: RegExp;
}

// Each sandbox error with a message as its thrower writes it (src/sandbox/…), and what a client must get.
const SANDBOX_CASES: Array<[sandboxErrors.SandboxError, Expected]> = [
  [new QmpTimeoutError("QMP command stop got no reply within 5000 ms"), { status: 500, code: ErrorCode.InternalError, retryable: true, says: /retry/ }],
  [new QmpError("QMP GenericError: no such device"), { status: 500, code: ErrorCode.InternalError, retryable: true, says: /fresh sandbox/ }],
  [new VmmStartError("cannot start qemu-system-x86_64: ENOENT"), { status: 500, code: ErrorCode.InternalError, retryable: true }],
  [new VmmExitedError("QMP connection closed (QEMU exited)"), { status: 500, code: ErrorCode.InternalError, retryable: true }],
  [new GuestExitedError("the guest died: exit 1"), { status: 500, code: ErrorCode.InternalError, retryable: true, says: /gone/ }],
  [new SandboxClosedError("The sandbox was closed (session ended)"), { status: 500, code: ErrorCode.InternalError, retryable: true, says: /Nothing was answered/ }],
  [new SandboxClosedError("sandbox 3 is gone"), { status: 500, code: ErrorCode.InternalError, retryable: true, says: /^Sandbox 3 is gone/ }],
  [new AgentProtocolError("guest sent an oversized frame"), { status: 500, code: ErrorCode.InternalError, retryable: true }],
  [new AgentTimeoutError("guest agent did not send hello within 2000 ms"), { status: 500, code: ErrorCode.InternalError, retryable: true }],
  [new BootTimeoutError("guest agent did not come up within 30000 ms; console: (empty)"), { status: 500, code: ErrorCode.InternalError, retryable: true }],
  [new ResumeError("could not resume from saved state: file missing (vm 4)"), { status: 500, code: ErrorCode.InternalError, retryable: true }],
  [new SuspendError("suspend failed: disk full"), { status: 500, code: ErrorCode.InternalError, retryable: true }],
  [new SnapshotError("migration failed: no reason given"), { status: 500, code: ErrorCode.InternalError, retryable: true }],
  [new SnapshotCorruptError("the snapshot's SHA-256 does not match its record"), { status: 500, code: ErrorCode.InternalError, retryable: true }],
  [new CallTimeoutError("The call got no answer within 30000 ms (timeouts.callMs)"), { status: 500, code: ErrorCode.RequestTimeout, retryable: false }],
  [new TemplateError("template for exec failed: image missing"), { status: 500, code: ErrorCode.InternalError, retryable: false, says: /^Server 'exec' is unavailable/ }],
  [new GuestRpcError("tools/list", -32603, "boom"), { status: 500, code: ErrorCode.InternalError, retryable: true, says: /^Server 'exec' answered with an error/ }],
  [new PoolClosedError("the gateway is shutting down"), { status: 503, code: ErrorCode.InternalError, retryable: false, says: /^The gateway is shutting down/ }],
  [new UnknownServerError("nope"), { status: 404, code: ErrorCode.InvalidParams, retryable: false, says: /'nope'/ }],
  [new BusyError("all 4 VMs this gateway may run are in use and none came free in 5000 ms; retry shortly"), { status: 503, code: ErrorCode.InternalError, retryable: true, says: /^Server 'exec' is busy/ }],
  [new IllegalTransitionError("sandbox cannot go from suspended to active"), { status: 500, code: ErrorCode.InternalError, retryable: true }],
  [new SandboxLostError("the guest died: exit 1"), { status: 500, code: ErrorCode.InternalError, retryable: true, says: /^The sandbox of this session for server 'exec' ended while idle \(the guest died: exit 1\); what it held .* is gone/ }],
];

describe("toWire: every error a client can meet, with status, JSON-RPC code, retryable and a message said once", () => {
  test("every SandboxError class has a case here", () => {
    const classes = Object.values(sandboxErrors).filter((v) => typeof v === "function" && v.prototype instanceof sandboxErrors.SandboxError);
    const covered = new Set(SANDBOX_CASES.map(([error]) => error.constructor));
    assert.deepEqual(classes.filter((c) => !covered.has(c as never)).map((c) => c.name), []);
  });

  for (const [error, expected] of SANDBOX_CASES) {
    test(`${error.name} (${error.code}): ${expected.status}, ${expected.code}, retryable ${expected.retryable}`, () => {
      const wire = toWire(error, "exec");
      assert.equal(wire.status, expected.status);
      assert.equal(wire.error.code, expected.code);
      assert.deepEqual(wire.error.data, { server: "exec", retryable: expected.retryable, reason: error.code });
      assert.ok(wire.error.message.toLowerCase().includes(error.message.toLowerCase()), `keeps the cause: ${wire.error.message}`);
      if (expected.says) assert.match(wire.error.message, expected.says);
      assert.equal(stutter(wire.error.message), undefined, wire.error.message);
    });
  }

  test("the stutter check catches what the review found", () => {
    assert.equal(stutter("sandbox for 'x' failed: sandbox for 'x' was closed"), "sandbox for 'x'");
  });

  test("without a server, the message names none and data carries none", () => {
    const wire = toWire(new GuestExitedError("the guest died: exit 1"));
    assert.match(wire.error.message, /^The sandbox for the server failed/);
    assert.equal(wire.error.data?.server, undefined);
  });

  test("router errors keep their code and data, and are not retryable unless they say so", () => {
    const cases: Array<[Error, number, boolean]> = [
      [new UnknownToolError("Unknown tool 'nope'; tools/list names the tools", { tool: "nope" }), ErrorCode.InvalidParams, false],
      [new InvalidParamsError("tools/call needs a tool name"), ErrorCode.InvalidParams, false],
      [new MethodNotFoundError("Method not found: sampling/createMessage"), ErrorCode.MethodNotFound, false],
      [new SessionEndedError(), ErrorCode.ConnectionClosed, false],
    ];
    for (const [error, code, retryable] of cases) {
      const wire = toWire(error, "memory");
      assert.equal(wire.status, 200, error.name);
      assert.equal(wire.error.code, code, error.name);
      assert.equal(wire.error.message, error.message);
      assert.equal(wire.error.data?.retryable, retryable, error.name);
      assert.equal(stutter(wire.error.message), undefined, wire.error.message);
    }
    assert.equal(toWire(new UnknownToolError("Unknown tool 'nope'", { tool: "nope" })).error.data?.tool, "nope");
  });

  test("a tenant over its limit: 429 with Retry-After, retryable, the same on every face", () => {
    const wire = toWire(new QuotaError("requests", "Tenant 'acme' sent more than 5 requests per second; retry in 2 s", 2), "exec");
    assert.equal(wire.status, 429);
    assert.deepEqual(wire.headers, { "retry-after": "2" });
    assert.equal(wire.error.code, EDGE_ERROR.quota);
    assert.deepEqual(wire.error.data, { server: "exec", retryable: true, reason: "QUOTA_REQUESTS", retryAfterSeconds: 2 });
    assert.ok(isRefusal(new QuotaError("streams", "x")));
  });

  test("a server the tenant may not use: 403, not retryable", () => {
    const wire = toWire(new AccessError("Tenant 'acme' may not use server 'exec'; its servers: memory"));
    assert.equal(wire.status, 403);
    assert.equal(wire.error.code, EDGE_ERROR.forbidden);
    assert.equal(wire.error.data?.retryable, false);
    assert.ok(isRefusal(new AccessError("x")));
  });

  test("a credential refused: its status and challenge headers; only 'cannot check now' is retryable", () => {
    const challenge = { "www-authenticate": 'Bearer realm="mcpvisor"' };
    const unauthorized = toWire(new CredentialError(401, EDGE_ERROR.unauthorized, "The API key is not valid", challenge));
    assert.equal(unauthorized.status, 401);
    assert.deepEqual(unauthorized.headers, challenge);
    assert.deepEqual(unauthorized.error, { code: EDGE_ERROR.unauthorized, message: "The API key is not valid", data: { retryable: false, reason: "UNAUTHORIZED" } });
    const unavailable = toWire(new CredentialError(503, EDGE_ERROR.unavailable, "Access tokens cannot be checked right now", { "retry-after": "5" }));
    assert.equal(unavailable.status, 503);
    assert.equal(unavailable.error.data?.retryable, true);
  });

  test("anything else is an internal error that names the server and is not retried", () => {
    const wire = toWire(new TypeError("x is undefined"), "exec");
    assert.equal(wire.status, 500);
    assert.equal(wire.error.code, ErrorCode.InternalError);
    assert.equal(wire.error.message, "Internal gateway error while serving 'exec': x is undefined");
    assert.deepEqual(wire.error.data, { server: "exec", retryable: false });
    assert.equal(toWire("a string").error.message, "Internal gateway error: a string");
    assert.equal(isRefusal(new TypeError("x")), false);
  });

  test("the envelope: JSON-RPC 2.0 with the request's id, or null for a refused HTTP request", () => {
    assert.deepEqual(errorResponse(7, { code: -32602, message: "m" }), { jsonrpc: "2.0", id: 7, error: { code: -32602, message: "m" } });
    assert.deepEqual(JSON.parse(failureBody(toWire(new AccessError("no")))), { jsonrpc: "2.0", id: null, error: toWire(new AccessError("no")).error });
  });
});

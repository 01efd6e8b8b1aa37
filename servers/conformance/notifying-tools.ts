import { setTimeout as sleep } from "node:timers/promises";
import { WATCHED_RESOURCE_URI } from "./resources.js";
import { type ConformanceTool, log, NO_ARGUMENTS, textResult } from "./tool-kit.js";

/** The pause between notifications. Spread out on purpose: a proxy that buffers until the result, or that
 * only forwards the first notification of a call, then shows up as missing or late notifications. */
const STEP_MS = 50;

/** Tools that send notifications while the call is still running. */
export const notifyingTools: ConformanceTool[] = [
  {
    definition: {
      name: "test_tool_with_logging",
      description: `Sends three info-level notifications/message ${STEP_MS} ms apart (filtered by logging/setLevel), then returns.`,
      inputSchema: NO_ARGUMENTS,
      annotations: { readOnlyHint: true },
    },
    run: async (_args, context) => {
      const { signal } = context.extra;
      await log(context, "info", "test_tool_with_logging", "Tool execution started");
      await sleep(STEP_MS, undefined, { signal });
      await log(context, "info", "test_tool_with_logging", "Tool processing data");
      await sleep(STEP_MS, undefined, { signal });
      await log(context, "info", "test_tool_with_logging", "Tool execution completed");
      return textResult("Tool with logging executed successfully");
    },
  },
  {
    definition: {
      name: "test_tool_with_progress",
      description: `Reports progress 0, 50 and 100 of 100, ${STEP_MS} ms apart, when the request carries _meta.progressToken; returns ${STEP_MS} ms after the last.`,
      inputSchema: NO_ARGUMENTS,
      annotations: { readOnlyHint: true },
    },
    run: async (_args, context) => {
      const { signal, sendNotification } = context.extra;
      // The token is echoed as given (string or number): the client matches progress to its request by it.
      const progressToken = context.extra._meta?.progressToken;
      const steps = [0, 50, 100];
      for (const [index, progress] of steps.entries()) {
        if (index > 0) await sleep(STEP_MS, undefined, { signal });
        if (progressToken !== undefined) {
          await sendNotification({
            method: "notifications/progress",
            params: { progressToken, progress, total: 100, message: `Step ${index + 1} of ${steps.length}` },
          });
        }
      }
      // A pause before the result, so that the last progress does not share a read with the response: the
      // SDK Client runs notification handlers a microtask late, after the response has already removed the
      // request's progress handler, and so drops a final progress that arrives in the same chunk.
      await sleep(STEP_MS, undefined, { signal });
      return textResult(
        progressToken === undefined
          ? "Tool with progress executed successfully (no progressToken, so no progress was sent)"
          : "Tool with progress executed successfully",
      );
    },
  },
  {
    definition: {
      name: "test_reconnection",
      description:
        "Returns after a short pause. For SEP-1699 an HTTP server would close the SSE stream mid-call here; " +
        "this server speaks stdio and has no stream to close, so the result arrives on the original stream.",
      inputSchema: NO_ARGUMENTS,
      annotations: { readOnlyHint: true },
    },
    run: async (_args, context) => {
      await sleep(2 * STEP_MS, undefined, { signal: context.extra.signal });
      return textResult("Reconnection test completed");
    },
  },
  {
    definition: {
      name: "test_update_resource",
      description:
        `Changes ${WATCHED_RESOURCE_URI} (its revision goes up by one) and, if the client subscribed to it, ` +
        "sends notifications/resources/updated before returning. A deterministic way to see updates relayed.",
      inputSchema: NO_ARGUMENTS,
      annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: false },
    },
    run: async (_args, context) => {
      const revision = context.resources.bumpWatched();
      const subscribed = context.resources.isSubscribed(WATCHED_RESOURCE_URI);
      if (subscribed) {
        await context.extra.sendNotification({
          method: "notifications/resources/updated",
          params: { uri: WATCHED_RESOURCE_URI },
        });
      }
      return textResult(
        `${WATCHED_RESOURCE_URI} is now at revision ${revision}; ` +
          (subscribed ? "notifications/resources/updated was sent." : "no subscription, so no notification was sent."),
      );
    },
  },
];

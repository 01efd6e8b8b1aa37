/**
 * A long command's output as it comes, when the client asked for progress (a `progressToken`): at most
 * one `notifications/progress` a second, carrying what came since the last one (its last 4 KiB), with the
 * byte count so far as the (increasing) progress.
 */
import type { RequestHandlerExtra } from "@modelcontextprotocol/sdk/shared/protocol.js";
import type { ServerNotification, ServerRequest } from "@modelcontextprotocol/sdk/types.js";

const INTERVAL_MS = 1_000;
const MESSAGE_BYTES = 4 * 1024;

export function outputProgress(extra: RequestHandlerExtra<ServerRequest, ServerNotification>): { push: (chunk: Buffer) => void; stop: () => void } | undefined {
  const token = extra._meta?.progressToken;
  if (token === undefined) return undefined;
  let pending: Buffer[] = [];
  let total = 0;
  const flush = () => {
    if (!pending.length) return;
    const text = Buffer.concat(pending);
    pending = [];
    const message = text.subarray(Math.max(0, text.length - MESSAGE_BYTES)).toString("utf8");
    void extra.sendNotification({ method: "notifications/progress", params: { progressToken: token, progress: total, message } }).catch(() => undefined);
  };
  const timer = setInterval(flush, INTERVAL_MS);
  return {
    push(chunk) {
      pending.push(chunk);
      total += chunk.length;
    },
    stop() {
      clearInterval(timer);
    },
  };
}

import assert from "node:assert/strict";
import { test } from "node:test";
import { RawMcpClient } from "../bench/raw-mcp-client.js";
import { eventually, startReadyGateway } from "./helpers.js";

// The warm pool sized by demand (docs/design/lifecycle.md "Pool size"), on real microVMs: sessions that
// find it empty make it keep more warm clones, which the refill then really resumes and warms.
test("a burst of sessions that finds the warm pool empty grows it, and the refill fills it to its new size", { timeout: 180_000 }, async () => {
  const gateway = await startReadyGateway({ servers: ["memory"] }, { pool: { prestarted: 1, warm: 1 } });
  const stats = () => gateway.pool.stats().find((s) => s.server === "memory")!;
  try {
    assert.equal(stats().warmTarget, 1);
    const sessions = Array.from({ length: 4 }, () => new RawMcpClient(gateway.url("memory")));
    await Promise.all(sessions.map(async (s) => {
      await s.initialize();
      await s.request("tools/call", { name: "read_graph", arguments: {} });
    }));
    const grown = stats().warmTarget;
    assert.ok(grown > 1 && grown <= 4, `the target grew within 4x the manifest's 1 (it is ${grown})`);
    await eventually(() => stats().warm === grown, `${grown} warm clones resumed and warmed`, 120_000);
    await Promise.all(sessions.map((s) => s.close()));
  } finally {
    await gateway.close();
  }
});

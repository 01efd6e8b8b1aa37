/**
 * Idle clones cost no CPU: a session's sandbox idle for a moment, and every warm clone in the pool, has its
 * vCPUs stopped, and the next request runs them again with the guest's clock set right (issue 17).
 * What it saves is measured by bench:capacity; here: it happens, and nothing a client sees changes.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { Client } from "@modelcontextprotocol/sdk/client/index.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { connect, eventually, sh, startReadyGateway } from "./helpers.js";

describe("idle sandboxes are frozen and thawed on demand (real VMs)", { timeout: 300_000 }, () => {
  let gateway: Awaited<ReturnType<typeof startReadyGateway>>;
  let client: Client;
  before(async () => {
    gateway = await startReadyGateway({ servers: ["exec"] }, { pool: { prestarted: 1, warm: 1 } });
    client = await connect(gateway.url("exec"));
  });
  after(async () => {
    await client?.close();
    await gateway?.close();
  });
  const stats = () => gateway.pool.stats().find((s) => s.members.includes("exec"))!;
  const frozen = () => stats().sandboxes.some((s) => s.frozen);

  /** Resolves once `check` has held for `ms` on end; fails if it breaks, or never holds that long within the deadline. */
  async function heldFor(check: () => boolean, ms: number, what: string): Promise<void> {
    const since = Date.now();
    await eventually(() => {
      assert.ok(check(), `${what}: it stopped holding after ${Date.now() - since} ms`);
      return Date.now() - since >= ms;
    }, what, ms + 5_000);
  }

  test("a warm clone waits frozen, and the session that takes it gets answers", async () => {
    await eventually(() => stats().warm === 1, "a warm clone in the pool", 60_000);
    assert.equal(stats().warmFrozen, 1);
    assert.equal((await sh(client, "echo from-a-thawed-clone")).stdout, "from-a-thawed-clone\n");
  });

  test("an idle session's sandbox is frozen; after a while frozen, its clock is right again at the next call", async () => {
    await sh(client, "echo kept > /tmp/f");
    await eventually(frozen, "the idle sandbox to be frozen", 10_000);
    // Frozen, the guest's clock stands still: 3 s later it would be 3 s behind unless thawing sets it.
    await heldFor(frozen, 3_000, "the sandbox stays frozen while no call comes");
    const before = Date.now();
    const out = await sh(client, "python3 -c 'import time; print(int(time.time() * 1000))'; cat /tmp/f");
    const [guestMs, kept] = out.stdout.trim().split("\n");
    assert.equal(kept, "kept", "the sandbox's state is what it was");
    assert.ok(Math.abs(Number(guestMs) - before) < 1_500, `guest clock ${guestMs} vs host ${before}: ${Number(guestMs) - before} ms off`);
  });

  test("a background job keeps its sandbox running between calls; once it is stopped, the sandbox is frozen again", async () => {
    const started = (await client.callTool({ name: "start", arguments: { command: "while true; do echo tick >> /tmp/ticks; sleep 0.2; done" } })) as CallToolResult;
    const { id } = started.structuredContent as { id: number };
    const ticks = async () => Number((await sh(client, "wc -l < /tmp/ticks")).stdout.trim());
    const first = await ticks();
    // Two seconds with no call: frozen, the job would stand still; running, it writes about ten lines.
    await heldFor(() => !frozen(), 2_000, "the sandbox keeps running while its job does");
    const later = await ticks();
    assert.ok(later - first >= 5, `the job wrote ${later - first} lines in 2 s between calls`);
    await client.callTool({ name: "stop", arguments: { id } });
    await eventually(frozen, "the sandbox to be frozen once its job stopped", 10_000);
  });
});

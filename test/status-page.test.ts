import assert from "node:assert/strict";
import { request, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { serve } from "@hono/node-server";
import type { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { Hono } from "hono";
import { LOCAL_PRINCIPAL } from "../src/auth/principal.js";
import type { GatewayEnv } from "../src/gateway/admission.js";
import { registerStatusRoutes, type StatusSources } from "../src/gateway/status-routes.js";
import { Tracing } from "../src/telemetry/tracing.js";
import { connectAs, endSession, tenantsFileWith } from "./auth-helpers.js";
import { connect, sh, startReadyGateway } from "./helpers.js";
import { HeadlessChromium } from "./tools/headless-chromium.js";

type ReadyGateway = Awaited<ReturnType<typeof startReadyGateway>>;

/** Where the screenshots go, for a person to look at. */
export const SCREENSHOT = join(tmpdir(), "mcpvisor-status-page.png");

describe("the status page in a real headless browser", { timeout: 600_000 }, () => {
  let gateway: ReadyGateway;
  let browser: HeadlessChromium;
  let client: Client;

  before(async () => {
    [gateway, browser] = await Promise.all([startReadyGateway({ servers: ["exec"] }), HeadlessChromium.launch()]);
    client = await connect(gateway.url("exec"));
  });
  after(async () => {
    await client?.close();
    await browser?.close();
    await gateway?.close();
  });

  test("loads without console errors, shows a call made just before, and updates itself", async () => {
    const result = await sh(client, "echo status-check");
    assert.equal(result.stdout.trim(), "status-check");

    await browser.goto(`http://127.0.0.1:${gateway.port}/`);
    await browser.waitFor(`document.querySelector("#calls tr[data-trace]")`, "the recent calls table");
    const page = await browser.evaluate<{
      title: string;
      ready: string;
      server: string;
      tools: string[];
      call: string[];
      counts: string;
      resume: string;
      traceRows: string[];
    }>(`(() => {
      const card = document.querySelector('[data-server="exec"]');
      const row = document.querySelector("#calls tr[data-trace]");
      const trace = document.querySelector('.trace[data-trace="' + row.dataset.trace + '"]');
      return {
        title: document.title,
        ready: document.querySelector("#ready").textContent,
        server: card.querySelector("h3").textContent,
        tools: [...card.querySelectorAll(".tool")].map((t) => t.textContent),
        counts: card.querySelector(".counts").textContent,
        resume: card.querySelector(".resume").textContent,
        call: [...row.children].map((td) => td.textContent),
        traceRows: trace ? [...trace.querySelectorAll(".row")].map((r) => r.dataset.span) : [],
      };
    })()`);
    assert.equal(page.title, "mcpvisor status");
    assert.equal(page.ready, "ready");
    assert.match(page.server, /^exec/);
    assert.deepEqual(page.tools.sort(), ["download", "output", "run", "run_js", "start", "stop", "upload"]);
    assert.match(page.counts, /idle 1/, "the session's clone is counted by state");
    assert.match(page.resume, /resume p50 [\d.]+ ms · p95 [\d.]+ ms/);
    // time, server, tool, outcome, total, acquire, round trip, in guest
    assert.equal(page.call[1], "exec");
    assert.equal(page.call[2], "run");
    assert.equal(page.call[3], "ok");
    assert.match(page.call[4]!, /^[\d.]+$/);
    assert.match(page.call[5]!, /^[\d.]+ \((warm-pool|prestarted|cold-vmm)\)$/, "the first call acquired a sandbox");
    assert.deepEqual(page.traceRows, [
      "tools/call run",
      "mcpvisor.router.route",
      "mcpvisor.sandbox.acquire",
      "mcpvisor.sandbox.guest_roundtrip",
      "mcpvisor.guest.server",
    ]);

    // A call made while the page is open shows up without a reload (it polls every 2 s).
    await client.callTool({ name: "run_js", arguments: { code: "console.log(6 * 7)" } });
    await browser.waitFor(
      `[...document.querySelectorAll("#calls tr td:nth-child(3)")].some((td) => td.textContent === "run_js")`,
      "the new call to appear",
      8_000,
    );
    // Clicking a call selects its trace.
    const selected = await browser.evaluate<boolean>(`(() => {
      const row = [...document.querySelectorAll("#calls tr[data-trace]")].find((r) => r.children[2].textContent === "run_js");
      row.click(); // re-renders: look the row up again
      const trace = document.querySelector(".trace.selected");
      const selectedRow = document.querySelector("#calls tr.selected");
      return trace !== null && trace.dataset.trace === row.dataset.trace && selectedRow?.dataset.trace === row.dataset.trace;
    })()`);
    assert.ok(selected, "the clicked call's trace is highlighted");

    await browser.screenshot(SCREENSHOT);
    assert.deepEqual(browser.problems, [], "no console errors, exceptions or failed loads");
  });

  test("GET /api/status answers the same data as JSON", async () => {
    const res = await fetch(`http://127.0.0.1:${gateway.port}/api/status`);
    assert.equal(res.status, 200);
    const status = (await res.json()) as { ready: boolean; servers: { name: string }[]; calls: { tool: string }[] };
    assert.equal(status.ready, true);
    assert.deepEqual(status.servers.map((s) => s.name), ["exec"]);
    assert.deepEqual(status.calls.slice(0, 2).map((c) => c.tool), ["run_js", "run"]);
  });

  test("the status endpoints are behind the DNS-rebinding check", async () => {
    // fetch() sets Host itself; node:http sends the one given, as a rebinding attacker's browser would.
    const status = (path: string, headers: Record<string, string>) =>
      new Promise<number>((resolve, reject) => {
        request({ host: "127.0.0.1", port: gateway.port, path, headers }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        })
          .on("error", reject)
          .end();
      });
    for (const path of ["/", "/api/status", "/api/traces"]) {
      assert.equal(await status(path, { host: `evil.example:${gateway.port}` }), 403, path);
      assert.equal(await status(path, { host: `127.0.0.1:${gateway.port}`, origin: "http://evil.example" }), 403, path);
      assert.equal(await status(path, { host: `127.0.0.1:${gateway.port}` }), 200, path);
    }
  });
});

describe("the status page shows what servers name as text, never as markup", { timeout: 120_000 }, () => {
  let browser: HeadlessChromium;
  let server: Server;
  let port: number;
  let tracing: Tracing;
  const evil = `<img src=x onerror="window.__xss=1">`;

  before(async () => {
    tracing = new Tracing({ env: {} }); // created here: a Tracing made earlier would claim the other suite's requests
    // The page's inputs, with hostile names where a hosted server chooses them.
    const sources = {
      manifests: [{ name: "evil", description: `<b>${evil}</b>` }],
      readiness: { report: () => ({ ready: true, reasons: [], servers: [] }) },
      pool: {
        stats: () => [{ server: "evil", members: ["evil"], status: "ready", prestarted: 1, warm: 0, leased: 0, sandboxes: [] }],
        template: async () => ({
          server: "evil",
          prepared: { evil: { initialize: { capabilities: { tools: {} } }, catalog: { tools: [{ name: evil, description: evil }], prompts: [], resources: [], resourceTemplates: [] } } },
        }),
      },
      tracing,
      activity: {
        recentCalls: () => [{ at: Date.now(), method: "tools/call", server: "evil", tool: evil, outcome: "error", errorType: evil, durationMs: 1, transport: "test" }],
        resumeLatency: () => ({}),
        openSessions: () => ({}),
      },
      tenantUsage: async () => ({ openSessions: 0, suspendedSessions: 0, runningSandboxes: 0 }),
    } as unknown as StatusSources;
    const app = new Hono<GatewayEnv>();
    app.use("*", (c, next) => {
      c.set("principal", LOCAL_PRINCIPAL);
      return next();
    });
    registerStatusRoutes(app, sources);
    [browser, port] = await Promise.all([
      HeadlessChromium.launch(),
      new Promise<number>((resolve) => {
        server = serve({ fetch: app.fetch, hostname: "127.0.0.1", port: 0 }, (info) => resolve(info.port)) as Server;
      }),
    ]);
  });
  after(async () => {
    await browser?.close();
    server?.close();
    await tracing?.close();
  });

  test("hostile tool names are displayed literally and run nothing", async () => {
    await browser.goto(`http://127.0.0.1:${port}/`);
    await browser.waitFor(`document.querySelector('[data-server="evil"] .tool')`, "the server card");
    // A payload the page let in would load its image as it rendered and run its onerror once that failed:
    // at once under the page's CSP (img-src data:), after a round trip to this server without it. A probe
    // that makes a round trip to the server, then has an image fail, comes after either.
    await browser.evaluate(`fetch("/api/status").then(() => new Promise((resolve) => Object.assign(new Image(), { onerror: resolve, src: "data:," })))`);
    const page = await browser.evaluate<{ xss: string; images: number; tool: string; call: string; desc: string }>(`({
      xss: typeof window.__xss,
      images: document.querySelectorAll("img, .desc *, .tool *, #calls td *:not(span)").length,
      tool: document.querySelector('[data-server="evil"] .tool').textContent,
      desc: document.querySelector('[data-server="evil"] .desc').textContent,
      call: document.querySelector("#calls tr td:nth-child(3)").textContent,
    })`);
    assert.deepEqual(page, { xss: "undefined", images: 0, tool: evil, desc: `<b>${evil}</b>`, call: evil });
    assert.deepEqual(browser.problems, []);
  });
});

describe("the status page for a tenant, behind authentication", { timeout: 300_000 }, () => {
  test("asks for a key, then shows the tenant its own calls and holdings, without errors", async () => {
    const file = await tenantsFileWith({ tenants: { acme: { servers: ["exec"] }, globex: { servers: ["exec"] } } });
    const [gateway, browser] = await Promise.all([
      startReadyGateway({ servers: ["exec"], tenantsFile: file.path, auditLog: "off" }, { pool: { prestarted: 0, warm: 0 } }),
      HeadlessChromium.launch(),
    ]);
    try {
      for (const tenant of ["acme", "globex"]) {
        const client = await connectAs(gateway.url("exec"), file.keys[tenant]!);
        await sh(client, `echo ${tenant}`);
        await endSession(client);
      }
      await browser.goto(`http://127.0.0.1:${gateway.port}/`);
      await browser.waitFor(`!document.querySelector("#signin").hidden`, "the sign-in box");
      const before = browser.problems.length; // the unauthenticated polls were answered 401, as they should be
      await browser.evaluate(`(() => {
        document.querySelector("#token").value = ${JSON.stringify(file.keys.acme)};
        document.querySelector("#use-token").click();
      })()`);
      await browser.waitFor(`document.querySelector("#calls tr[data-trace]")`, "the tenant's calls");
      const page = await browser.evaluate<{ signin: boolean; summary: string; servers: string[]; calls: number }>(`({
        signin: document.querySelector("#signin").hidden,
        summary: document.querySelector("#summary").textContent,
        servers: [...document.querySelectorAll("[data-server]")].map((c) => c.dataset.server),
        calls: document.querySelectorAll("#calls tr[data-trace]").length,
      })`);
      assert.equal(page.signin, true, "the sign-in box is gone once the key works");
      assert.match(page.summary, /tenant acme: 0 open sessions · 0 sandboxes running · 0 suspended/);
      assert.deepEqual(page.servers, ["exec"]);
      assert.equal(page.calls, 1, "acme's one call, not globex's");
      assert.deepEqual(browser.problems.slice(before), [], "no errors once signed in");
      assert.ok(browser.problems.slice(0, before).every((p) => /401/.test(p.text)), JSON.stringify(browser.problems));
    } finally {
      await browser.close();
      await gateway.close();
    }
  });
});

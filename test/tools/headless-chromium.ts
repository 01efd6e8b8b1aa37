import { execFile, spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import WebSocket from "ws";

/**
 * Debian's chromium, headless, driven over the DevTools protocol (with `ws`): load a page, read its DOM,
 * collect everything it reports as an error (uncaught exceptions, console.error, failed loads, CSP
 * violations), take screenshots. Enough for checking a page without a test framework.
 */

const ENSURE = fileURLToPath(new URL("./ensure-chromium.sh", import.meta.url));

/** Installs chromium with apt if it is missing (once); returns its path. */
export async function ensureChromium(): Promise<string> {
  const { stdout } = await promisify(execFile)("sh", [ENSURE], { timeout: 600_000, maxBuffer: 16 << 20 });
  const path = stdout.trim().split("\n").pop();
  if (!path) throw new Error("ensure-chromium.sh printed no path");
  return path;
}

export interface PageProblem {
  kind: "exception" | "console" | "log";
  text: string;
}

interface Pending {
  resolve: (value: Record<string, unknown>) => void;
  reject: (error: Error) => void;
}

export class HeadlessChromium {
  readonly problems: PageProblem[] = [];
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly listeners = new Set<(method: string, params: Record<string, unknown>) => void>();
  private sessionId = "";

  private constructor(
    private readonly process: ChildProcess,
    private readonly ws: WebSocket,
    private readonly profile: string,
  ) {
    ws.on("message", (data) => {
      const message = JSON.parse(data.toString()) as {
        id?: number;
        method?: string;
        params?: Record<string, unknown>;
        result?: Record<string, unknown>;
        error?: { message: string };
      };
      if (message.id !== undefined) {
        const pending = this.pending.get(message.id);
        this.pending.delete(message.id);
        if (message.error) pending?.reject(new Error(message.error.message));
        else pending?.resolve(message.result ?? {});
      } else if (message.method) {
        for (const listener of this.listeners) listener(message.method, message.params ?? {});
      }
    });
  }

  static async launch(width = 1280, height = 900): Promise<HeadlessChromium> {
    const binary = await ensureChromium();
    const profile = await mkdtemp(join(tmpdir(), "mcpv-chromium-"));
    const child = spawn(
      binary,
      [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--no-first-run",
        "--no-default-browser-check",
        "--hide-scrollbars",
        `--user-data-dir=${profile}`,
        "--remote-debugging-port=0",
        `--window-size=${width},${height}`,
        "about:blank",
      ],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    const endpoint = await new Promise<string>((resolve, reject) => {
      let stderr = "";
      const timer = setTimeout(() => reject(new Error(`chromium did not start its DevTools server:\n${stderr}`)), 30_000);
      child.stderr!.on("data", (chunk: Buffer) => {
        stderr += chunk.toString();
        const found = /DevTools listening on (ws:\/\/\S+)/.exec(stderr);
        if (found) {
          clearTimeout(timer);
          resolve(found[1]!);
        }
      });
      child.once("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`chromium exited (${code}):\n${stderr}`));
      });
    });
    child.stderr!.resume();
    const ws = new WebSocket(endpoint, { perMessageDeflate: false });
    await new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", reject);
    });
    const browser = new HeadlessChromium(child, ws, profile);
    await browser.attach(width, height);
    return browser;
  }

  /** One DevTools command; page-level ones go to the attached page. */
  send(method: string, params: Record<string, unknown> = {}, browserLevel = false): Promise<Record<string, unknown>> {
    const id = this.nextId++;
    const reply = new Promise<Record<string, unknown>>((resolve, reject) => this.pending.set(id, { resolve, reject }));
    this.ws.send(JSON.stringify({ id, method, params, ...(browserLevel || !this.sessionId ? {} : { sessionId: this.sessionId }) }));
    return reply;
  }

  private async attach(width: number, height: number): Promise<void> {
    const { targetId } = await this.send("Target.createTarget", { url: "about:blank" }, true);
    const { sessionId } = await this.send("Target.attachToTarget", { targetId, flatten: true }, true);
    this.sessionId = sessionId as string;
    this.listeners.add((method, params) => {
      if (method === "Runtime.exceptionThrown") {
        const details = params.exceptionDetails as { text?: string; exception?: { description?: string } };
        this.problems.push({ kind: "exception", text: `${details.text ?? ""} ${details.exception?.description ?? ""}`.trim() });
      } else if (method === "Runtime.consoleAPICalled" && (params.type === "error" || params.type === "assert")) {
        const args = (params.args as { value?: unknown; description?: string }[]).map((a) => String(a.value ?? a.description ?? ""));
        this.problems.push({ kind: "console", text: args.join(" ") });
      } else if (method === "Log.entryAdded") {
        const entry = params.entry as { level: string; text: string; url?: string };
        if (entry.level === "error") this.problems.push({ kind: "log", text: `${entry.text}${entry.url ? ` (${entry.url})` : ""}` });
      }
    });
    await this.send("Runtime.enable");
    await this.send("Log.enable");
    await this.send("Page.enable");
    await this.send("Emulation.setDeviceMetricsOverride", { width, height, deviceScaleFactor: 1, mobile: false });
  }

  /** Navigates and waits for the load event. */
  async goto(url: string): Promise<void> {
    const loaded = new Promise<void>((resolve) => {
      const listener = (method: string) => {
        if (method === "Page.loadEventFired") {
          this.listeners.delete(listener);
          resolve();
        }
      };
      this.listeners.add(listener);
    });
    const result = await this.send("Page.navigate", { url });
    if (result.errorText) throw new Error(`navigation to ${url} failed: ${String(result.errorText)}`);
    await loaded;
  }

  /** Evaluates an expression in the page and returns its value (JSON-serializable). */
  async evaluate<T>(expression: string): Promise<T> {
    const result = await this.send("Runtime.evaluate", { expression, returnByValue: true, awaitPromise: true });
    if (result.exceptionDetails) throw new Error(`evaluate failed: ${JSON.stringify(result.exceptionDetails)}`);
    return (result.result as { value: T }).value;
  }

  /** Polls an expression until it is truthy. */
  async waitFor(expression: string, what: string, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!(await this.evaluate<boolean>(`Boolean(${expression})`))) {
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** A PNG of the whole page (not only the viewport). */
  async screenshot(path: string): Promise<void> {
    const metrics = await this.send("Page.getLayoutMetrics");
    const size = metrics.cssContentSize as { width: number; height: number };
    const { data } = await this.send("Page.captureScreenshot", {
      format: "png",
      captureBeyondViewport: true,
      clip: { x: 0, y: 0, width: Math.ceil(size.width), height: Math.ceil(size.height), scale: 1 },
    });
    await writeFile(path, Buffer.from(data as string, "base64"));
  }

  async close(): Promise<void> {
    await this.send("Browser.close", {}, true).catch(() => undefined);
    this.ws.close();
    if (this.process.exitCode === null) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          this.process.kill("SIGKILL");
          resolve();
        }, 5_000);
        this.process.once("exit", () => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    await rm(this.profile, { recursive: true, force: true });
  }
}

import { serveStdio } from "../gateway/stdio.js";
import { createRuntime } from "../main.js";
import { AGGREGATE } from "../router/router.js";
import { COMMON_OPTIONS, configFrom, configOptions, loggerFor, parse, progressPrinter } from "./common.js";

export const STDIO_USAGE = `mcpvisor stdio [--server NAME] [--servers a,b] [--cache-dir D] [--accel auto|kvm|tcg]
  Serves one MCP session on stdin/stdout, for clients that launch local servers (Claude Desktop,
  editors): one hosted server with --server, else every server aggregated (tools named <server>__<tool>).
  Waits until the templates are ready first; logs and progress go to stderr. Exits when stdin closes.`;

export async function stdioCommand(argv: string[]): Promise<void> {
  const { values } = parse(argv, { ...COMMON_OPTIONS, ...configOptions(["servers"]), server: { type: "string" } });
  if (values.help) return void console.error(STDIO_USAGE); // stdout belongs to MCP, even for help
  const route = values.server ?? AGGREGATE;
  const config = configFrom(values, values.server ? { servers: [values.server] } : {});
  const progress = progressPrinter();
  const log = loggerFor(config);
  const runtime = await createRuntime(config, log, progress);
  let stopping = false;
  const stop = async (code: number) => {
    if (stopping) return;
    stopping = true;
    await runtime.close();
    process.exit(code);
  };
  process.once("SIGINT", () => void stop(0));
  process.once("SIGTERM", () => void stop(0));

  await runtime.settled;
  const report = runtime.readiness.report();
  if (!report.ready) {
    progress(`not ready: ${report.reasons.join("; ")}`);
    return stop(1);
  }
  const served = values.server ? `'${values.server}'` : `${runtime.manifests.map((m) => m.name).join(", ")} aggregated`;
  progress(`serving ${served} on stdio`);
  await serveStdio(runtime.router, route, runtime.modern, log);
  await stop(0);
}

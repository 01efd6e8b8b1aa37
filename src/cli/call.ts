import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { InMemoryTransport } from "@modelcontextprotocol/sdk/inMemory.js";
import { createRuntime } from "../main.js";
import { MCPVISOR_VERSION } from "../version.js";
import { COMMON_OPTIONS, configFrom, loggerFor, parse, progressPrinter } from "./common.js";

export const CALL_USAGE = `mcpvisor call <server> <tool> [json-args] [--cache-dir D] [--accel auto|kvm|tcg]
  Resumes a clone of the server's template, makes one real tools/call through the guest agent,
  prints the result (JSON, on stdout) and the timings (on stderr).`;

export async function callCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parse(argv, COMMON_OPTIONS);
  const [server, tool, json] = positionals;
  if (values.help || !server || !tool) {
    console.log(CALL_USAGE);
    if (!values.help) process.exitCode = 2;
    return;
  }
  let args: Record<string, unknown>;
  try {
    args = json ? (JSON.parse(json) as Record<string, unknown>) : {};
  } catch (err) {
    console.error(`json-args is not valid JSON: ${(err as Error).message}`);
    process.exitCode = 2;
    return;
  }
  const config = configFrom(values, { servers: [server] });
  const progress = progressPrinter();
  // One VMM started ahead, no warm clone: the timing below is a pooled resume, the common case.
  const runtime = await createRuntime(config, loggerFor(config, true), progress, {
    pool: { prestarted: 1, warm: 0 },
  });
  const client = new Client({ name: "mcpvisor-call", version: MCPVISOR_VERSION });
  try {
    await runtime.settled;
    const [clientSide, gatewaySide] = InMemoryTransport.createLinkedPair();
    await runtime.router.connect(server, gatewaySide);
    await client.connect(clientSide);
    const t0 = performance.now();
    await client.ping(); // answered by the gateway, no VM involved: isolates the resume below
    const t1 = performance.now();
    const first = await client.callTool({ name: tool, arguments: args });
    const t2 = performance.now();
    console.log(JSON.stringify(first, null, 2));
    progress(`timings: gateway round trip ${ms(t1 - t0)}, resume + first call ${ms(t2 - t1)}`);
    if (first.isError) process.exitCode = 1;
  } catch (err) {
    console.error(`call failed: ${(err as Error).message}`);
    process.exitCode = 1;
  } finally {
    await client.close().catch(() => undefined);
    await runtime.close();
  }
}

function ms(value: number): string {
  return `${value.toFixed(1)} ms`;
}

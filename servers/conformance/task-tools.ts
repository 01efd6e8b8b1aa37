import { setTimeout as sleep } from "node:timers/promises";
import { type ConformanceTool, elicitForm, NO_ARGUMENTS, ProtocolFault, textResult } from "./tool-kit.js";

const CONFIRM = { type: "object" as const, properties: { confirm: { type: "boolean" as const } }, required: ["confirm"] };
const NAME = { type: "object" as const, properties: { name: { type: "string" as const } }, required: ["name"] };

/**
 * The tools conformance 0.2's tasks scenarios (SEP-2663) call. The server is a 2025-era one: it only
 * declares, per tool, whether it may run as a task (`execution.taskSupport`) and takes its time; a
 * gateway serving a 2026 client that declared the tasks extension turns the call into a task.
 */
export const taskTools: ConformanceTool[] = [
  {
    definition: {
      name: "greet",
      description: "Greets at once (never a task).",
      inputSchema: { type: "object", properties: { name: { type: "string" } } },
      execution: { taskSupport: "forbidden" },
    },
    run: async (args) => textResult(`Hello, ${String(args.name ?? "World")}!`),
  },
  {
    definition: {
      name: "slow_compute",
      description: "Sleeps `seconds`, then answers (a task when it takes long).",
      inputSchema: { type: "object", properties: { seconds: { type: "number" } } },
      execution: { taskSupport: "optional" },
    },
    run: async (args, { extra }) => {
      const seconds = typeof args.seconds === "number" ? args.seconds : 1;
      await sleep(seconds * 1000, undefined, { signal: extra.signal });
      return textResult(`Computed after ${seconds} s`);
    },
  },
  {
    definition: { name: "failing_job", description: "Fails as a tool after about a second (runs only as a task).", inputSchema: NO_ARGUMENTS, execution: { taskSupport: "required" } },
    run: async (_args, { extra }) => {
      await sleep(1_000, undefined, { signal: extra.signal });
      return textResult("the job failed", true);
    },
  },
  {
    definition: { name: "protocol_error_job", description: "Fails with a JSON-RPC error (a crash, not a tool error).", inputSchema: NO_ARGUMENTS, execution: { taskSupport: "optional" } },
    run: async (_args, { extra }) => {
      await sleep(500, undefined, { signal: extra.signal });
      throw new ProtocolFault("protocol_error_job crashed on purpose");
    },
  },
  {
    definition: { name: "confirm_delete", description: "Asks for a confirmation (runs only as a task), then deletes nothing.", inputSchema: NO_ARGUMENTS, execution: { taskSupport: "required" } },
    run: async (_args, { extra }) => textResult(`confirmed=${String((await elicitForm(extra, "Delete the file?", CONFIRM)).content?.confirm)}`),
  },
  {
    definition: { name: "multi_input", description: "Asks two questions at once (runs only as a task).", inputSchema: NO_ARGUMENTS, execution: { taskSupport: "required" } },
    run: async (_args, { extra }) => {
      const [first, second] = await Promise.all([elicitForm(extra, "First name?", NAME), elicitForm(extra, "Last name?", NAME)]);
      return textResult(`${String(first.content?.name)} ${String(second.content?.name)}`);
    },
  },
  {
    definition: {
      name: "test_tool_with_task",
      description: "Asks the user's name, then works on for a second (a task by then).",
      inputSchema: NO_ARGUMENTS,
      execution: { taskSupport: "optional" },
    },
    run: async (_args, { extra }) => {
      const name = String((await elicitForm(extra, "What is your name?", NAME, "user_name")).content?.name);
      await sleep(1_000, undefined, { signal: extra.signal });
      return textResult(`Done for ${name}`);
    },
  },
];

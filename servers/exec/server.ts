import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import { createExecServer } from "./exec-server.js";

await createExecServer().connect(new StdioServerTransport());

import { readFileSync } from "node:fs";

/** mcpvisor's version, as package.json says: what the gateway reports as its own (serverInfo, clientInfo). */
export const VERSION: string = (JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string }).version;

import { readFileSync } from "node:fs";

/** mcpvisor's version, from package.json: what it tells servers and clients it is. */
export const MCPVISOR_VERSION: string = (JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string }).version;

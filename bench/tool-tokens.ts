/**
 * bench/tool-tokens: what the tool list costs a client's context, in tokens, with every tool listed and in
 * tool search mode (`?tools=search`), over the default servers aggregated on /mcp and per server. Counted
 * with gpt-tokenizer (o200k_base, the GPT-4o family's encoding) on the JSON of the `tools` array, which is
 * what a client puts in front of its model. No VM is started: lists come from the templates.
 *
 * Usage: npm run bench:tools
 */
import { encode } from "gpt-tokenizer";
import { startReadyGateway } from "../test/helpers.js";
import { connect } from "../test/helpers.js";
import { table } from "./stats.js";

const gateway = await startReadyGateway({}, { pool: { prestarted: 0, warm: 0 } });
try {
  const tokensOf = async (path: string) => {
    const client = await connect(`http://127.0.0.1:${gateway.port}${path}`);
    const { tools } = await client.listTools();
    await client.close();
    return { tools: tools.length, tokens: encode(JSON.stringify(tools)).length };
  };
  const rows: string[][] = [];
  const routes = [["/mcp", "all default servers, aggregated"], ...gateway.pool.serverNames().sort().map((s) => [`/servers/${s}/mcp`, s])];
  for (const [path, what] of routes) {
    const all = await tokensOf(path!);
    const search = await tokensOf(`${path}?tools=search`);
    const saved = 1 - search.tokens / all.tokens;
    rows.push([what!, String(all.tools), String(all.tokens), String(search.tokens), `${(saved * 100).toFixed(0)} %`]);
  }
  console.log("\nbench/tool-tokens — tokens of the tools/list a client holds (gpt-tokenizer, o200k_base)\n");
  console.log(table(["endpoint", "tools", "tokens, every tool listed", "tokens, ?tools=search", "saved"], rows));
} finally {
  await gateway.close();
}

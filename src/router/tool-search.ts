import type { Item } from "./catalog.js";
import { isObject } from "./messages.js";

/**
 * Tool search mode (`?tools=search`, docs/design/tool-governance.md): a client that caps its tools, or
 * pays for every schema in its context, sees two tools instead of all of them. Which tools `search_tools`
 * can find is what the endpoint lists to the tenant, so the access rules hold here as well.
 */
export const SEARCH_TOOLS = [
  {
    name: "search_tools",
    description:
      "Finds the tools that fit a task: ranks every tool this endpoint offers by its name, description and argument names against the query, and returns the best ones with their input schemas. Call one with call_tool.",
    inputSchema: {
      type: "object",
      properties: {
        query: { type: "string", description: "What the tool should do, in a few words, e.g. 'read a file' or 'current time in a timezone'." },
        limit: { type: "integer", minimum: 1, maximum: 20, description: "How many tools to return (default 5)." },
      },
      required: ["query"],
    },
    annotations: { readOnlyHint: true },
  },
  {
    name: "call_tool",
    description: "Calls a tool found with search_tools, by its name, with arguments that fit its input schema.",
    inputSchema: {
      type: "object",
      properties: {
        name: { type: "string", description: "The tool's name, as search_tools returned it." },
        arguments: { type: "object", description: "The tool's arguments." },
      },
      required: ["name"],
    },
  },
];

/** Words of a text: split at anything but letters and digits and at camelCase, lower case, a plural's s dropped. */
function words(text: string): string[] {
  return text
    .replace(/([a-z])([A-Z])/g, "$1 $2")
    .toLowerCase()
    .split(/[^a-z0-9]+/)
    .filter((w) => w.length > 1)
    .map((w) => (w.length > 3 && w.endsWith("s") && !w.endsWith("ss") ? w.slice(0, -1) : w));
}

/** A tool's searchable words, with a weight by where they come from: its name counts most. */
function fieldsOf(tool: Item): Array<{ words: string[]; weight: number }> {
  const schema = isObject(tool.inputSchema) && isObject(tool.inputSchema.properties) ? tool.inputSchema.properties : {};
  return [
    { words: words(String(tool.name ?? "")), weight: 3 },
    { words: words(Object.keys(schema).join(" ")), weight: 1.5 },
    { words: words(`${String(tool.title ?? "")} ${String(tool.description ?? "")}`), weight: 1 },
  ];
}

/**
 * The tools that best fit `query`, best first: BM25 over each tool's words (fields weighted), so a word
 * few tools share counts more than one most do. Tools that share no word with the query are left out.
 */
export function rankTools(tools: Item[], query: string, limit: number): Item[] {
  const wanted = [...new Set(words(query))];
  if (wanted.length === 0) return [];
  const docs = tools.map((tool) => {
    const terms = new Map<string, number>();
    let length = 0;
    for (const field of fieldsOf(tool)) {
      for (const word of field.words) terms.set(word, (terms.get(word) ?? 0) + field.weight);
      length += field.words.length * field.weight;
    }
    return { tool, terms, length };
  });
  const average = docs.reduce((sum, d) => sum + d.length, 0) / Math.max(docs.length, 1) || 1;
  const k1 = 1.2;
  const b = 0.75;
  const scored = docs.map((doc) => {
    let score = 0;
    for (const word of wanted) {
      const tf = doc.terms.get(word) ?? 0;
      if (tf === 0) continue;
      const having = docs.filter((d) => d.terms.has(word)).length;
      const idf = Math.log(1 + (docs.length - having + 0.5) / (having + 0.5));
      score += (idf * tf * (k1 + 1)) / (tf + k1 * (1 - b + (b * doc.length) / average));
    }
    return { tool: doc.tool, score };
  });
  return scored
    .filter((s) => s.score > 0)
    .sort((x, y) => y.score - x.score)
    .slice(0, limit)
    .map((s) => s.tool);
}

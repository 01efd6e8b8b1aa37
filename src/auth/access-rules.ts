import { z } from "zod";

/** Patterns are `<server>/<name>`, each part a glob (`*` any run of characters, `?` one): `memory/read_*`, `*\/search*`. */
const Pattern = z.string().regex(/^[^/\s]+\/[^\s]+$/, "must be '<server>/<name>', each part a glob ('*', '?'), e.g. 'memory/read_*'");

const NameRulesSchema = z
  .object({
    /** Only what matches one of these is allowed (absent: everything). */
    allow: z.array(Pattern).optional(),
    /** What matches one of these is denied, whatever `allow` says. */
    deny: z.array(Pattern).default([]),
  })
  .strict();

/** A tenant's rules in the tenants file (docs/design/tool-governance.md). */
export const AccessRulesSchema = z
  .object({
    tools: NameRulesSchema.extend({
      /** Annotations a tool must carry with these values to be allowed, e.g. `{ "readOnlyHint": true }`. */
      annotations: z.record(z.string(), z.boolean()).default({}),
    })
      .strict()
      .optional(),
    prompts: NameRulesSchema.optional(),
    /** Patterns name resources as `<server>/<uri>`. */
    resources: NameRulesSchema.optional(),
  })
  .strict();

export type AccessRulesInput = z.infer<typeof AccessRulesSchema>;
/** The rules as written in a tenants file (defaults not yet filled in). */
export type AccessRulesText = z.input<typeof AccessRulesSchema>;

function globToRegExp(glob: string): RegExp {
  const source = glob.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".");
  return new RegExp(`^${source}$`);
}

class NameRules {
  private readonly allow: RegExp[] | undefined;
  private readonly deny: RegExp[];

  constructor(rules: { allow?: string[]; deny: string[] } | undefined) {
    this.allow = rules?.allow?.map(globToRegExp);
    this.deny = (rules?.deny ?? []).map(globToRegExp);
  }

  permits(server: string, name: string): boolean {
    const id = `${server}/${name}`;
    if (this.allow && !this.allow.some((re) => re.test(id))) return false;
    return !this.deny.some((re) => re.test(id));
  }
}

/**
 * What a tenant may see and call, enforced where calls are routed (a filter in the client is bypassed by
 * a prompt-injected agent). Something not permitted is absent from every list and, called by name, is
 * answered exactly as something that does not exist.
 */
export class AccessRules {
  private readonly tools: NameRules;
  private readonly prompts: NameRules;
  private readonly resources: NameRules;
  private readonly annotations: Record<string, boolean>;
  /** An OAuth token's `tools:<pattern>` scopes narrow the tenant's tools further. */
  private readonly scopeTools: NameRules | undefined;

  constructor(input: AccessRulesInput, extraToolAllow?: string[]) {
    this.tools = new NameRules(input.tools);
    this.prompts = new NameRules(input.prompts);
    this.resources = new NameRules(input.resources);
    this.annotations = input.tools?.annotations ?? {};
    this.scopeTools = extraToolAllow ? new NameRules({ allow: extraToolAllow, deny: [] }) : undefined;
  }

  /** A tool whose annotations do not say a required one is taken as not having it. */
  tool(server: string, tool: { name?: unknown; annotations?: unknown }): boolean {
    const name = String(tool.name);
    if (!this.tools.permits(server, name) || (this.scopeTools && !this.scopeTools.permits(server, name))) return false;
    const annotations = typeof tool.annotations === "object" && tool.annotations !== null ? (tool.annotations as Record<string, unknown>) : {};
    return Object.entries(this.annotations).every(([key, value]) => (annotations[key] ?? false) === value);
  }

  prompt(server: string, name: string): boolean {
    return this.prompts.permits(server, name);
  }

  resource(server: string, uri: string): boolean {
    return this.resources.permits(server, uri);
  }
}

import { AjvJsonSchemaValidator } from "@modelcontextprotocol/sdk/validation/ajv-provider.js";
import type { JsonSchemaType, JsonSchemaValidator } from "@modelcontextprotocol/sdk/validation/types.js";
import type { Catalog } from "./catalog.js";

export type ArgumentCheck =
  | { ok: true; /** Not in the template's catalog (a live server may have added it): not a metric label. */ unlisted?: true }
  | { ok: false; reason: "unknown-tool" }
  | { ok: false; reason: "invalid-arguments"; message: string };

/**
 * Checks a tools/call against the tool's inputSchema from the template's catalog, so a call that can
 * only fail never costs a VM resume. Compiled validators are cached per tool.
 */
export class ToolArgumentChecker {
  private static readonly byCatalog = new WeakMap<Catalog, ToolArgumentChecker>();

  /** One checker per template catalog: compiling schemas costs milliseconds, sessions must not repeat it. */
  static for(catalog: Catalog): ToolArgumentChecker {
    let checker = this.byCatalog.get(catalog);
    if (!checker) {
      checker = new ToolArgumentChecker(catalog);
      this.byCatalog.set(catalog, checker);
    }
    return checker;
  }

  private readonly ajv = new AjvJsonSchemaValidator();
  private readonly compiled = new Map<string, JsonSchemaValidator<unknown> | undefined>();

  private constructor(private readonly catalog: Catalog) {}

  hasTool(name: string): boolean {
    return this.catalog.tools.some((t) => t.name === name);
  }

  check(name: string, args: unknown): ArgumentCheck {
    const tool = this.catalog.tools.find((t) => t.name === name);
    if (!tool) return { ok: false, reason: "unknown-tool" };
    const validate = this.validatorFor(name, tool.inputSchema as JsonSchemaType | undefined);
    if (!validate) return { ok: true };
    const result = validate(args ?? {});
    return result.valid ? { ok: true } : { ok: false, reason: "invalid-arguments", message: result.errorMessage ?? "invalid" };
  }

  /** A schema our validator cannot compile (e.g. an unsupported draft) is left to the server to enforce. */
  private validatorFor(name: string, schema: JsonSchemaType | undefined): JsonSchemaValidator<unknown> | undefined {
    if (!this.compiled.has(name)) {
      let validator: JsonSchemaValidator<unknown> | undefined;
      try {
        validator = schema ? this.ajv.getValidator(schema) : undefined;
      } catch {
        validator = undefined;
      }
      this.compiled.set(name, validator);
    }
    return this.compiled.get(name);
  }
}

import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { test } from "node:test";
import { ServerManifestSchema } from "../src/config/manifest.js";

const dir = fileURLToPath(new URL(".", import.meta.url));
// The hosted servers, and the README's examples (not hosted by default: they need a service to reach).
const files = [
  ...readdirSync(dir).filter((name) => name.endsWith(".json")),
  ...readdirSync(join(dir, "examples")).filter((name) => name.endsWith(".json")).map((name) => join("examples", name)),
].sort();

test("there are server manifests", () => {
  assert.ok(files.length > 0);
});

for (const file of files) {
  test(`${file} is a valid server manifest named after its file`, () => {
    const parsed = ServerManifestSchema.safeParse(JSON.parse(readFileSync(join(dir, file), "utf8")));
    if (!parsed.success) {
      const problems = parsed.error.issues.map((issue) => `${issue.path.join(".") || "(root)"}: ${issue.message}`);
      assert.fail(`${file}:\n  ${problems.join("\n  ")}`);
    }
    assert.equal(`${parsed.data.name}.json`, file.split("/").pop());
  });
}

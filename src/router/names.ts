/**
 * Names on the aggregated endpoint: `<server>__<name>`. Server names cannot contain `_` (the manifest
 * schema forbids it), so the first `__` always splits correctly, and a tool's name never changes when
 * another server is added.
 */
export const SEPARATOR = "__";

export function qualify(server: string, name: string): string {
  return `${server}${SEPARATOR}${name}`;
}

export function splitQualified(qualified: string): { server: string; name: string } | undefined {
  const at = qualified.indexOf(SEPARATOR);
  if (at <= 0) return undefined;
  return { server: qualified.slice(0, at), name: qualified.slice(at + SEPARATOR.length) };
}

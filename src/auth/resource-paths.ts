/**
 * The protected resource a request path belongs to (RFC 9728): each hosted server's faces are one
 * resource, `/servers/<name>/mcp`; the aggregated faces are `/mcp`; anything else is the gateway itself
 * (the empty path, i.e. its base URL).
 */
export function resourcePathFor(path: string): string {
  const server = /^\/servers\/([^/]+)\/(?:mcp|sse|messages|ws)$/.exec(path);
  if (server) return `/servers/${server[1]}/mcp`;
  if (path === "/mcp" || path === "/sse" || path === "/messages" || path === "/ws") return "/mcp";
  return "";
}

export const PROTECTED_RESOURCE_METADATA = "/.well-known/oauth-protected-resource";

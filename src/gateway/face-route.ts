import { AGGREGATE, type Route } from "../router/router.js";

/**
 * The route a face's URL names: `/<endpoint>` is every server aggregated, `/servers/<name>/<endpoint>`
 * one server; undefined when the path is neither. The query string is ignored.
 */
export function faceRoute(url: string | undefined, endpoint: string): Route | undefined {
  const path = url?.split("?", 1)[0];
  if (path === `/${endpoint}`) return AGGREGATE;
  const prefix = "/servers/";
  const suffix = `/${endpoint}`;
  if (!path?.startsWith(prefix) || !path.endsWith(suffix)) return undefined;
  const name = path.slice(prefix.length, -suffix.length);
  return name && !name.includes("/") ? name : undefined;
}

/** Whether a face's URL asks for tool search mode (`?tools=search`: search_tools and call_tool only). */
export function searchesTools(url: string | undefined): boolean {
  return new URLSearchParams(url?.split("?")[1] ?? "").get("tools") === "search";
}

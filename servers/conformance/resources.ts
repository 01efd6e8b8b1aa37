import type { Server } from "@modelcontextprotocol/sdk/server/index.js";
import {
  ListResourcesRequestSchema,
  ListResourceTemplatesRequestSchema,
  McpError,
  ReadResourceRequestSchema,
  type ReadResourceResult,
  type Resource,
  type ResourceTemplate,
  SubscribeRequestSchema,
  UnsubscribeRequestSchema,
} from "@modelcontextprotocol/sdk/types.js";
import { RED_PIXEL_PNG_BASE64 } from "./media.js";

export const WATCHED_RESOURCE_URI = "test://watched-resource";

/** The spec's code for an unknown resource URI (not in the SDK's ErrorCode enum). */
const RESOURCE_NOT_FOUND = -32002;

const TEMPLATE: ResourceTemplate = {
  uriTemplate: "test://template/{id}/data",
  name: "template-data",
  title: "Templated data",
  description: "JSON data for any id; the id is substituted into the content.",
  mimeType: "application/json",
};
const TEMPLATE_PATTERN = /^test:\/\/template\/([^/]+)\/data$/;

const STATIC_RESOURCES: Resource[] = [
  {
    uri: "test://static-text",
    name: "static-text",
    title: "Static text",
    description: "A fixed text/plain resource.",
    mimeType: "text/plain",
  },
  {
    uri: "test://static-binary",
    name: "static-binary",
    title: "Static binary",
    description: "A fixed image/png resource (1x1 red pixel), read as a base64 blob.",
    mimeType: "image/png",
  },
  {
    uri: WATCHED_RESOURCE_URI,
    name: "watched-resource",
    title: "Watched resource",
    description: "Text that changes when the test_update_resource tool runs; subscribe to get resources/updated.",
    mimeType: "text/plain",
  },
];

/** The resources, their one piece of mutable state (the watched revision) and the client's subscriptions. */
export class ResourceCatalog {
  #watchedRevision = 1;
  readonly #subscriptions = new Set<string>();

  bumpWatched(): number {
    return ++this.#watchedRevision;
  }

  isSubscribed(uri: string): boolean {
    return this.#subscriptions.has(uri);
  }

  read(uri: string): ReadResourceResult {
    switch (uri) {
      case "test://static-text":
        return text(uri, "text/plain", "This is the content of the static text resource.");
      case "test://static-binary":
        return { contents: [{ uri, mimeType: "image/png", blob: RED_PIXEL_PNG_BASE64 }] };
      case WATCHED_RESOURCE_URI:
        return text(uri, "text/plain", `Watched resource, revision ${this.#watchedRevision}.`);
    }
    const id = TEMPLATE_PATTERN.exec(uri)?.[1];
    if (id !== undefined) {
      const decoded = decodeURIComponent(id);
      return text(uri, "application/json", JSON.stringify({ id: decoded, templateTest: true, data: `Data for ID: ${decoded}` }));
    }
    throw new McpError(RESOURCE_NOT_FOUND, `Resource not found: ${uri}`, { uri });
  }

  install(server: Server): void {
    server.setRequestHandler(ListResourcesRequestSchema, () => ({ resources: STATIC_RESOURCES }));
    server.setRequestHandler(ListResourceTemplatesRequestSchema, () => ({ resourceTemplates: [TEMPLATE] }));
    server.setRequestHandler(ReadResourceRequestSchema, (request) => this.read(request.params.uri));
    server.setRequestHandler(SubscribeRequestSchema, (request) => {
      this.read(request.params.uri); // only URIs that exist can be watched; this throws the not-found error
      this.#subscriptions.add(request.params.uri);
      return {};
    });
    // Unsubscribing from something not subscribed is harmless, so it is not an error.
    server.setRequestHandler(UnsubscribeRequestSchema, (request) => {
      this.#subscriptions.delete(request.params.uri);
      return {};
    });
  }
}

function text(uri: string, mimeType: string, body: string): ReadResourceResult {
  return { contents: [{ uri, mimeType, text: body }] };
}

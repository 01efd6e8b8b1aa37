/**
 * mcpvisor-conformance: an MCP server fixture with everything the official conformance suite
 * (@modelcontextprotocol/conformance, server mode) asks of a server — the test_* tools (text, image, audio,
 * embedded resource, mixed content, logging, progress, errors, sampling, elicitation), test:// resources with
 * a template and subscriptions, the test_* prompts, logging/setLevel, completion/complete and ping.
 *
 * It speaks stdio because in production it runs inside a microVM behind the gateway, which forwards MCP
 * messages unchanged; running the suite against the gateway with this server upstream therefore tests the
 * gateway's relaying of server->client requests and notifications, not this server.
 */
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import { createConformanceServer } from "./conformance-server.js";

await createConformanceServer().connect(new StdioServerTransport());

/**
 * Connections out of the guest. Every IPv4 address is routed to the guest's loopback (stage 2 sets a
 * local default route), so a connection to any address on a port of the allow list lands on a listener
 * here; its local address says where the guest meant to go, and the DNS responder says by which name.
 * Each becomes a tunnel the gateway decides on. A refused tunnel resets the guest's connection at once,
 * so the server's call fails instead of hanging. The HTTP proxy (127.0.0.1:3128, for servers that
 * honour HTTP(S)_PROXY) is carried as raw bytes: the gateway parses it.
 */
import * as net from "node:net";
import type { ClientHttp2Stream } from "node:http2";
import { GUEST_PROXY_PORT } from "../egress-protocol.js";
import { logAgent } from "../channel.js";
import type { EgressLink, TunnelAnswer } from "./egress-link.js";

export class TcpForwarder {
  private readonly servers: net.Server[] = [];
  private readonly sockets = new Set<net.Socket>();

  constructor(
    private readonly link: EgressLink,
    private readonly nameOf: (address: string) => string | undefined,
  ) {}

  async listen(ports: number[]): Promise<void> {
    for (const port of ports) {
      await this.serve(port, "0.0.0.0", (socket) => {
        const address = (socket.localAddress ?? "").replace(/^::ffff:/, "");
        return this.link.connect(this.nameOf(address) ?? address, port);
      });
    }
    await this.serve(GUEST_PROXY_PORT, "127.0.0.1", () => this.link.proxy());
  }

  private serve(port: number, host: string, open: (socket: net.Socket) => Promise<TunnelAnswer>): Promise<void> {
    const server = net.createServer({ pauseOnConnect: true }, (socket) => void this.carry(socket, open));
    this.servers.push(server);
    return new Promise((resolve) => {
      server.once("error", (err) => {
        // A port the server itself uses: that destination cannot be tunnelled, the rest still can.
        logAgent(`egress: cannot listen on ${host}:${port}: ${err.message}`);
        resolve();
      });
      server.listen(port, host, resolve);
    });
  }

  private async carry(socket: net.Socket, open: (socket: net.Socket) => Promise<TunnelAnswer>): Promise<void> {
    this.sockets.add(socket);
    socket.on("close", () => this.sockets.delete(socket));
    socket.on("error", () => undefined);
    const answer = await open(socket);
    if (!answer.ok) {
      socket.resetAndDestroy();
      return;
    }
    pipeBoth(socket, answer.stream);
    socket.resume();
  }

  /** After a resume: the connections carried before belong to a session the host no longer has. */
  resetAll(): void {
    for (const socket of this.sockets) socket.resetAndDestroy();
    this.sockets.clear();
  }
}

/** Bytes both ways; an error or reset on one side resets the other. */
function pipeBoth(socket: net.Socket, stream: ClientHttp2Stream): void {
  socket.pipe(stream);
  stream.pipe(socket);
  stream.on("error", () => socket.resetAndDestroy());
  stream.on("close", () => {
    if (stream.rstCode && !socket.destroyed) socket.resetAndDestroy();
  });
  socket.on("error", () => stream.close(0x8 /* CANCEL */));
  socket.on("close", () => {
    if (!stream.destroyed) stream.close();
  });
}

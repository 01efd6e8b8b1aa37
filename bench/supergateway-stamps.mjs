// Preloaded into the supergateway process by bench/gateway (node --import): time stamps, taken inside
// supergateway, of each tools/call it writes to its server's stdin and of the reply line it reads back,
// so the bench can subtract the server's own round trip of the very same call (as it does for mcpvisor
// with the sandbox channel). Costs one performance.now() and a string search per message. The parent asks
// over the IPC channel: {op: "last"} -> the newest completed call {id, roundTripMs}.
import childProcess from "node:child_process";
import { syncBuiltinESMExports } from "node:module";

const sent = new Map(); // `${pid}:${id}` -> time written to stdin
let last;

const spawn = childProcess.spawn;
childProcess.spawn = function patchedSpawn(...args) {
  const child = spawn.apply(this, args);
  const key = (id) => `${child.pid}:${id}`;
  const write = child.stdin.write.bind(child.stdin);
  child.stdin.write = (chunk, ...rest) => {
    if (typeof chunk === "string" && chunk.includes('"method":"tools/call"')) {
      const id = /"id":(-?\d+)/.exec(chunk)?.[1];
      if (id !== undefined) sent.set(key(id), performance.now());
    }
    return write(chunk, ...rest);
  };
  // Added before supergateway's own listener, so the time is taken before it handles the line.
  child.stdout.on("data", (chunk) => {
    const now = performance.now();
    if (sent.size === 0) return;
    for (const line of String(chunk).split("\n")) {
      if (!line || line.includes('"method"')) continue;
      const id = /"id":(-?\d+)/.exec(line)?.[1];
      if (id === undefined) continue;
      const t0 = sent.get(key(id));
      if (t0 === undefined) continue;
      sent.delete(key(id));
      last = { id: Number(id), roundTripMs: now - t0 };
    }
  });
  return child;
};
syncBuiltinESMExports();

process.on("message", (message) => {
  if (message?.op === "last") process.send?.({ last });
});
// The IPC channel must not keep supergateway alive on its own, nor stop it from exiting on a signal.
process.channel?.unref();

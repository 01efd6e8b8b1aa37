import assert from "node:assert/strict";
import { test } from "node:test";
import { crashLine } from "./sandbox.js";

test("crashLine finds the error in a node crash, past the code frame, the stack, the error's properties and the version", () => {
  const econnreset = [
    "node:events:497",
    "      throw er; // Unhandled 'error' event",
    "      ^",
    "",
    "Error: read ECONNRESET",
    "    at TCP.onStreamRead (node:internal/stream_base_commons:216:20)",
    "Emitted 'error' event on Socket instance at:",
    "    at emitErrorNT (node:internal/streams/destroy:169:8)",
    "    at emitErrorCloseNT (node:internal/streams/destroy:128:3)",
    "    at process.processTicksAndRejections (node:internal/process/task_queues:82:21) {",
    "  errno: -104,",
    "  code: 'ECONNRESET',",
    "  syscall: 'read'",
    "}",
    "",
    "Node.js v20.20.2",
    "",
  ].join("\n");
  assert.equal(crashLine(econnreset), "Error: read ECONNRESET");

  const typeError = [
    "file:///srv/server.mjs:3",
    "const client = new Client(undefined.url);",
    "                                   ^",
    "",
    "TypeError: Cannot read properties of undefined (reading 'url')",
    "    at file:///srv/server.mjs:3:36",
    "    at ModuleJob.run (node:internal/modules/esm/module_job:234:25)",
    "",
    "Node.js v20.20.2",
  ].join("\n");
  assert.equal(crashLine(typeError), "TypeError: Cannot read properties of undefined (reading 'url')");
});

test("crashLine takes a Python traceback's exception line, and otherwise the last line", () => {
  const traceback = [
    "Traceback (most recent call last):",
    '  File "/srv/server.py", line 12, in <module>',
    "    main()",
    '  File "/srv/server.py", line 9, in main',
    "    conn = psycopg.connect(dsn)",
    '  File "/usr/lib/python3/dist-packages/psycopg/connection.py", line 748, in connect',
    "    raise ex.with_traceback(None)",
    "psycopg.OperationalError: connection failed: Connection refused",
    "",
  ].join("\n");
  assert.equal(crashLine(traceback), "psycopg.OperationalError: connection failed: Connection refused");
  assert.equal(crashLine("Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\nKeyError: 'PGHOST'\n"), "KeyError: 'PGHOST'");
  assert.equal(crashLine("starting\nlistening on stdio\nsegmentation fault  \n\n"), "segmentation fault");
  assert.equal(crashLine(""), "");
  assert.equal(crashLine("\n  \n"), "");
});

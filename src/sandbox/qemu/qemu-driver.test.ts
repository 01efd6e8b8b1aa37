import { join } from "node:path";
import { loadManifests } from "../../config/load.js";
import { sandboxUnits } from "../../config/sandbox-unit.js";
import { REPO_ROOT } from "../../main.js";
import { createLogger } from "../../telemetry/log.js";
import { runDriverSuite } from "../driver.case.js";
import { prepareGuests } from "../guest-images.js";
import { QemuDriver } from "./qemu-driver.js";
import { testConfig } from "../../../test/helpers.js";

const MARKER = "driver-suite-marker";

runDriverSuite({
  name: "qemu",
  setup: async () => {
    const config = testConfig();
    const driver = new QemuDriver({ runDir: config.runDir });
    const manifests = await loadManifests(join(REPO_ROOT, "servers"), ["memory"]);
    const plan = await prepareGuests(sandboxUnits(manifests, join(REPO_ROOT, "servers")), {
      build: { cacheDir: config.cacheDir, repoRoot: REPO_ROOT, progress: () => undefined },
      driver,
      accel: config.accel,
      runDir: config.runDir,
      log: createLogger("silent"),
    });
    return {
      driver,
      spec: await plan.specs.get("memory")!,
      server: "memory",
      // The memory server keeps its graph in /tmp/memory.jsonl, on the guest's tmpfs: in guest RAM, which a suspend saves.
      statefulCalls: {
        write: { name: "create_entities", arguments: { entities: [{ name: MARKER, entityType: "test", observations: ["kept"] }] } },
        read: { name: "read_graph", arguments: {} },
        marker: MARKER,
      },
    };
  },
});

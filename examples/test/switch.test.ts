import { execFile } from "node:child_process"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"
import { describe, expect, it } from "vitest"

const run = promisify(execFile)
const root = fileURLToPath(new URL("../..", import.meta.url))

describe("examples/switch-from-pgclient.ts", () => {
  it("a PgClient.layer program runs unchanged on PgDatabase.layer", async () => {
    const { stdout } = await run("npx", ["tsx", "examples/switch-from-pgclient.ts"], { cwd: root, timeout: 60_000 })
    expect(stdout.trim().split("\n")).toEqual([
      "1: first {\"tags\":[\"a\"]}",
      "2: second {\"tags\":[]}",
      "pool max from maxConnections: 5"
    ])
  })
})

import { execFile } from "node:child_process"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"
import { describe, expect, it } from "vitest"

const run = promisify(execFile)
const root = fileURLToPath(new URL("../..", import.meta.url))

describe("examples/quickstart.ts", () => {
  it("runs and prints what it did", async () => {
    const { stdout } = await run("npx", ["tsx", "examples/quickstart.ts"], { cwd: root, timeout: 60_000 })
    const lines = stdout.trim().split("\n")
    expect(lines[0]).toMatch(/^created table quickstart_accounts_\d+$/)
    expect(lines.slice(1)).toEqual([
      "inserted 2 accounts",
      "transfer of 30 committed",
      "transfer of 500 rolled back: insufficient funds",
      "ada: 70",
      "grace: 80",
      "done"
    ])
  })
})

import { execFile } from "node:child_process"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"
import { describe, expect, it } from "vitest"

const run = promisify(execFile)
const root = fileURLToPath(new URL("../..", import.meta.url))

const quickstart = async (url: string | undefined) => {
  const env = { ...process.env }
  delete env["DATABASE_URL"]
  if (url !== undefined) env["DATABASE_URL"] = url
  const { stdout } = await run("npx", ["tsx", "examples/quickstart.ts"], { cwd: root, timeout: 60_000, env })
  return stdout.trim().split("\n")
}

const expected = [
  "inserted 2 accounts",
  "transfer of 30 committed",
  "transfer of 500 rolled back: insufficient funds",
  "ada: 70",
  "grace: 80",
  "done"
]

describe("examples/quickstart.ts (npm start)", () => {
  for (
    const [engine, url] of [
      ["pglite", undefined],
      ["pg", "postgres://postgres@127.0.0.1:5432/test"],
      ["mysql", "mysql://root@127.0.0.1:3306/test"]
    ] as const
  ) {
    it(`runs on ${engine} and prints what it did`, async () => {
      const lines = await quickstart(url)
      expect(lines[0]).toBe(`engine: ${engine}`)
      expect(lines[1]).toMatch(/^created table quickstart_accounts_\d+$/)
      expect(lines.slice(2)).toEqual(expected)
    })
  }
})

import { execFile } from "node:child_process"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"
import { describe, expect, it } from "vitest"

const run = promisify(execFile)
const root = fileURLToPath(new URL("../..", import.meta.url))

const example = async (file: string, url: string | undefined) => {
  const env = { ...process.env }
  delete env["DATABASE_URL"]
  if (url !== undefined) env["DATABASE_URL"] = url
  const { stdout } = await run("npx", ["tsx", `examples/${file}`], { cwd: root, timeout: 60_000, env })
  return stdout.trim().split("\n")
}

const transfers = ["transfer of 30 committed", "transfer of 500 rolled back: insufficient funds"]
const balances = ["ada: 70", "grace: 80"]
const servers = [["pg", "postgres://postgres@127.0.0.1:5432/test"], ["mysql", "mysql://root@127.0.0.1:3306/test"]] as const

describe("examples without Effect", () => {
  for (const [engine, url] of [["pglite", undefined], ...servers] as const) {
    it(`promise.ts runs on ${engine}`, async () => {
      expect(await example("promise.ts", url)).toEqual([
        ...transfers,
        "ConstraintViolation (unique)",
        ...balances,
        "streamed 2 rows",
        "metrics: ok",
        "done"
      ])
    })
  }
  for (const [engine, url] of servers) {
    it(`kysely.ts runs on ${engine}`, async () => {
      expect(await example("kysely.ts", url)).toEqual([...transfers, ...balances, "done"])
    })
    it(`drizzle.ts runs on ${engine}`, async () => {
      expect(await example("drizzle.ts", url)).toEqual([...transfers, ...balances, "done"])
    })
  }
})

/**
 * A program that exits without `close()` (by `process.exit` or an uncaught
 * exception) leaves no session open on the server.
 */
import { execFile } from "node:child_process"
import { fileURLToPath } from "node:url"
import * as Mysql from "mysql2/promise"
import * as Pg from "pg"
import { describe, expect, it } from "vitest"

const PG_URL = process.env["TEST_PG_URL"] ?? "postgres://postgres@127.0.0.1:5432/test"
const MYSQL_URL = process.env["TEST_MYSQL_URL"] ?? "mysql://root@127.0.0.1:3306/test"
const fixture = fileURLToPath(new URL("./fixtures/exit.ts", import.meta.url))

const run = (url: string, alias: string, how: string) =>
  new Promise<{ code: number | null; stdout: string }>((resolve) => {
    const child = execFile(process.execPath, ["--import", "tsx", fixture, url, alias, how], { timeout: 30_000 }, (_, stdout) =>
      resolve({ code: child.exitCode, stdout }))
  })

const pgSessions = async (alias: string) => {
  const c = new Pg.Client({ connectionString: PG_URL })
  await c.connect()
  try {
    return Number((await c.query("SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = $1", [alias])).rows[0].n)
  } finally {
    await c.end()
  }
}

const mysql = async <A>(f: (c: Mysql.Connection) => Promise<A>) => {
  const c = await Mysql.createConnection(MYSQL_URL)
  try {
    return await f(c)
  } finally {
    await c.end()
  }
}
const mysqlSessions = (alias: string) =>
  mysql(async (c) => (await c.query("SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ?", [alias]))[0] as Array<unknown>)
    .then((rows) => rows.length)

const gone = async (count: () => Promise<number>) => {
  const end = Date.now() + 5_000
  while (Date.now() < end && (await count()) > 0) await new Promise((r) => setTimeout(r, 100))
  return count()
}

describe("a process that exits without close()", () => {
  for (const how of ["exit", "throw"]) {
    it(`leaves no PostgreSQL session open (${how})`, async () => {
      const alias = `promise_exit_pg_${how}_${process.pid}`
      const { code, stdout } = await run(PG_URL, alias, how)
      expect(stdout).toMatch(/connected [2-4]/)
      expect(code).not.toBe(0)
      expect(await gone(() => pgSessions(alias))).toBe(0)
    }, 40_000)

    it(`leaves no MariaDB session open (${how})`, async () => {
      const alias = `promise_exit_my_${how}_${process.pid}`
      await mysql((c) => c.query(`CREATE DATABASE IF NOT EXISTS \`${alias}\``))
      try {
        const { code, stdout } = await run(MYSQL_URL, alias, how)
        expect(stdout).toMatch(/connected [2-4]/)
        expect(code).not.toBe(0)
        expect(await gone(() => mysqlSessions(alias))).toBe(0)
      } finally {
        await mysql((c) => c.query(`DROP DATABASE IF EXISTS \`${alias}\``))
      }
    }, 40_000)
  }
})

/**
 * `createMysqlPool` against mysql2's pool interface, callback and promise:
 * `query`, `execute`, `getConnection`/`release`, `end`, the events, errors
 * with mysql2's fields, and a pool that stays usable after errors.
 */
import { createMysqlPool } from "@effect-dal/mysql"
import type { DalMysqlPool } from "@effect-dal/mysql/MysqlPool"
import { Traffic } from "@effect-dal/testkit"
import type * as Mysql from "mysql2/promise"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as Effect from "effect/Effect"
import { admin as adminEffect, MYSQL_URL, threads as threadsOf, unique } from "./helpers.js"

const database = unique("mypool")
// the suite is Promise code: the package's Effect helpers, run as promises
const admin = <A>(f: (c: Mysql.Connection) => Promise<A>) => Effect.runPromise(adminEffect(f))
const threads = () => Effect.runPromise(Effect.map(threadsOf(database), (rows) => rows.map((r) => r.id)))

const pools: Array<DalMysqlPool> = []
const make = (options: Parameters<typeof createMysqlPool>[0] = {}) => {
  const pool = createMysqlPool({ uri: MYSQL_URL, database, connectionLimit: 4, alias: unique("mypool"), ...options })
  pools.push(pool)
  return pool
}

beforeAll(() => admin((c) => c.query(`CREATE DATABASE \`${database}\``)))
afterAll(async () => {
  await Promise.all(pools.map((p) => new Promise((r) => p.end(r))))
  await admin((c) => c.query(`DROP DATABASE IF EXISTS \`${database}\``))
})

describe("createMysqlPool: mysql2's pool interface", () => {
  it("query and execute with callbacks give (err, results, fields)", async () => {
    const pool = make()
    const [rows, fields] = await new Promise<[any, any]>((resolve, reject) =>
      pool.query("SELECT ? AS n, ? AS s", [7, "x"], (err, rows, fields) => (err ? reject(err) : resolve([rows, fields])))
    )
    expect(rows).toEqual([{ n: 7, s: "x" }])
    expect(fields.map((f: Mysql.FieldPacket) => f.name)).toEqual(["n", "s"])
    const executed = await new Promise<any>((resolve, reject) =>
      pool.execute("SELECT ? + 1 AS n", [1], (err, rows) => (err ? reject(err) : resolve(rows)))
    )
    expect(executed).toEqual([{ n: 2 }])
    const error = await new Promise<any>((resolve) => pool.query("SELEC 1", (err) => resolve(err)))
    expect(error).toMatchObject({ code: "ER_PARSE_ERROR", errno: 1064, _tag: "QueryError", category: "syntax" })
  })

  it("promise(): [results, fields], headers for writes, rowsAsArray and typeCast options", async () => {
    const pool = make().promise()
    const table = unique("t")
    await pool.query(`CREATE TABLE ${table} (id int AUTO_INCREMENT PRIMARY KEY, v varchar(10), at datetime(3))`)
    const [header] = await pool.execute(`INSERT INTO ${table} (v, at) VALUES (?, ?), (?, ?)`, ["a", new Date(0), "b", null])
    expect(header).toMatchObject({ affectedRows: 2, insertId: 1 })
    const [arrays] = await pool.query({ sql: `SELECT id, v FROM ${table} ORDER BY id`, rowsAsArray: true })
    expect(arrays).toEqual([[1, "a"], [2, "b"]])
    const [cast] = await pool.query({
      sql: `SELECT at FROM ${table} WHERE id = 1`,
      typeCast: (field: any, next: () => unknown) => (field.type === "DATETIME" ? field.string() : next())
    })
    expect(cast).toEqual([{ at: "1970-01-01 00:00:00.000" }])
    // `?` is mysql2's placeholder and backticks are native: nothing is translated
    const [native] = await pool.query("SELECT `v` FROM " + table + " WHERE id = ?", [2])
    expect(native).toEqual([{ v: "b" }])
  })

  it("getConnection and release: START TRANSACTION/COMMIT work; released inside a transaction, it rolls back", async () => {
    const pool = make().promise()
    const table = unique("tx")
    await pool.query(`CREATE TABLE ${table} (id int PRIMARY KEY)`)
    const conn = await pool.getConnection()
    await conn.beginTransaction()
    await conn.query(`INSERT INTO ${table} VALUES (?)`, [1])
    expect((await pool.query(`SELECT * FROM ${table}`))[0]).toEqual([])
    await conn.commit()
    expect((await pool.query(`SELECT * FROM ${table}`))[0]).toEqual([{ id: 1 }])
    conn.release()

    const open = await pool.getConnection()
    await open.beginTransaction()
    await open.query(`INSERT INTO ${table} VALUES (?)`, [2])
    open.release()
    expect((await pool.query(`SELECT * FROM ${table}`))[0]).toEqual([{ id: 1 }])

    const rolled = await pool.getConnection()
    await rolled.beginTransaction()
    await rolled.query(`INSERT INTO ${table} VALUES (?)`, [3])
    await rolled.rollback()
    rolled.release()
    expect((await pool.query(`SELECT * FROM ${table}`))[0]).toEqual([{ id: 1 }])
  })

  it("START TRANSACTION goes out with the next statement: a refused one fails that statement, a stream after it reads inside it", async () => {
    const pool = make()
    const promised = pool.promise()
    const table = unique("held")
    await promised.query(`CREATE TABLE ${table} (id int PRIMARY KEY)`)
    const conn = await promised.getConnection()
    // held, not sent: the server has not refused it yet
    await conn.query("START TRANSACTION NONSENSE")
    const refused = await conn.query(`INSERT INTO ${table} VALUES (?)`, [1]).catch((e: any) => e)
    expect(refused.errno).toBe(1064)
    expect((await promised.query(`SELECT * FROM ${table}`))[0]).toEqual([])

    // a stream (mysql2's own Query) after a held START TRANSACTION runs inside the transaction
    await conn.query("START TRANSACTION")
    const raw = (conn as unknown as { connection: { query(sql: string): { stream(): AsyncIterable<any> } } }).connection
    const streamed: Array<unknown> = []
    for await (const row of raw.query("SELECT @@in_transaction AS t").stream()) streamed.push(row)
    expect(streamed).toEqual([{ t: 1 }])
    await conn.query(`INSERT INTO ${table} VALUES (?)`, [2])
    expect((await promised.query(`SELECT * FROM ${table}`))[0]).toEqual([])
    await conn.commit()
    expect((await promised.query(`SELECT * FROM ${table}`))[0]).toEqual([{ id: 2 }])
    conn.release()
  })

  it("destroy() closes the connection instead of returning it; events: connection, acquire, release", async () => {
    const pool = make({ pool: { min: 0 } })
    const events: Array<string> = []
    pool.on("connection", () => events.push("connection"))
    pool.on("acquire", () => events.push("acquire"))
    pool.on("release", () => events.push("release"))
    await new Promise((r) => pool.query("SELECT 1", r))
    const conn = await pool.promise().getConnection()
    const id = conn.threadId!
    expect(await threads()).toContain(id)
    conn.destroy()
    expect(await Traffic.until(async () => !(await threads()).includes(id))).toBe(true)
    const again = await pool.promise().getConnection()
    expect(again.threadId).not.toBe(id)
    again.release()
    expect(events.filter((e) => e === "connection").length).toBeGreaterThanOrEqual(2)
    expect(events.filter((e) => e === "acquire")).toHaveLength(2)
    expect(events.filter((e) => e === "release")).toHaveLength(2)
  })

  it("errors keep mysql2's fields and our classification; the pool stays usable", async () => {
    const pool = make({ connectionLimit: 2 }).promise()
    const table = unique("err")
    await pool.query(`CREATE TABLE ${table} (id int PRIMARY KEY)`)
    await pool.query(`INSERT INTO ${table} VALUES (1)`)
    const dup = await pool.execute(`INSERT INTO ${table} VALUES (?)`, [1]).catch((e: any) => e)
    expect(dup).toMatchObject({ code: "ER_DUP_ENTRY", errno: 1062, sqlState: "23000", _tag: "ConstraintViolation", transient: false })
    expect(dup.sqlMessage).toContain("Duplicate entry")
    for (let i = 0; i < 10; i++) await pool.query("SELEC 1").catch(() => {})
    expect((await pool.query("SELECT 1 AS ok"))[0]).toEqual([{ ok: 1 }])
    expect(pool.pool.stats()!.size).toBeLessThanOrEqual(2)
  })

  it("end waits for checked-out connections, then refuses new work; metrics counted the traffic", async () => {
    const pool = make()
    const before = await Traffic.statementsSeen(pool)
    const conn = await pool.promise().getConnection()
    await conn.query("SELECT 1")
    let ended = false
    const ending = pool.promise().end().then(() => {
      ended = true
    })
    await new Promise((r) => setTimeout(r, 300))
    expect(ended).toBe(false)
    await conn.query("SELECT 2")
    conn.release()
    await ending
    const refused = await new Promise<any>((resolve) => pool.query("SELECT 1", (err) => resolve(err)))
    expect(refused.message).toBe("Pool is closed.")
    expect(await Traffic.statementsSeen(pool) - before).toBeGreaterThanOrEqual(2)
  })
})

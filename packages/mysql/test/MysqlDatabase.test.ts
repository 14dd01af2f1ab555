import { describe, expect, it } from "@effect/vitest"
import { Db } from "@effect-dal/core"
import { MysqlDatabase } from "@effect-dal/mysql"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Logger from "effect/Logger"
import { admin, MYSQL_URL, unique } from "./helpers.js"

const tableExists = (table: string) =>
  admin(async (c) => {
    const [rows] = await c.query("SELECT count(*) AS n FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'test' AND TABLE_NAME = ?", [table])
    return Number((rows as Array<{ n: number }>)[0]!.n) > 0
  })

describe("MysqlDatabase: DDL inside a transaction", () => {
  it.live("fails by default with DdlInTransaction before anything is sent, and the transaction still rolls back", () => {
    const table = unique("ddl")
    const created = unique("ddl_new")
    return Effect.gen(function*() {
      yield* Db.execute(`CREATE TABLE [${table}] (id int PRIMARY KEY)`)
      const error = yield* Effect.flip(Db.withTransaction(Effect.gen(function*() {
        yield* Db.execute(`INSERT INTO [${table}] VALUES (?)`, [1])
        yield* Db.execute(`CREATE TABLE [${created}] (id int)`)
      })))
      expect(error._tag).toBe("DdlInTransaction")
      expect(error.message).toContain("nothing was sent")
      expect(yield* tableExists(created)).toBe(false)
      // the insert before the DDL was rolled back, which an implicit commit would have made impossible
      expect(yield* Db.execute(`SELECT id FROM [${table}]`)).toEqual([])
      // temporary tables do not commit implicitly, so they are allowed
      yield* Db.withTransaction(Db.execute("CREATE TEMPORARY TABLE dal_tmp (id int)"))
      // outside a transaction DDL runs as usual
      yield* Db.execute(`DROP TABLE [${table}]`)
      expect(yield* tableExists(table)).toBe(false)
    }).pipe(Effect.provide(MysqlDatabase.layer({ url: MYSQL_URL, alias: unique("ddl") })))
  })

  it.live("'warn' logs a warning and runs the DDL; 'allow' runs it silently", () => {
    const table = unique("ddlw")
    const logs: Array<string> = []
    const logger = Logger.make(({ message }) => void logs.push(String(message)))
    return Effect.gen(function*() {
      yield* Db.withTransaction(Db.execute(`CREATE TABLE [${table}] (id int)`)).pipe(
        Effect.provide(MysqlDatabase.layer({ url: MYSQL_URL, alias: unique("w"), ddlInTransaction: "warn" }))
      )
      expect(yield* tableExists(table)).toBe(true)
      expect(logs.some((l) => l.includes("commits it implicitly"))).toBe(true)
      const before = logs.length
      yield* Db.withTransaction(Db.execute(`DROP TABLE [${table}]`)).pipe(
        Effect.provide(MysqlDatabase.layer({ url: MYSQL_URL, alias: unique("a"), ddlInTransaction: "allow" }))
      )
      expect(yield* tableExists(table)).toBe(false)
      expect(logs.length).toBe(before)
    }).pipe(Effect.provide(Logger.replace(Logger.defaultLogger, logger)))
  })
})

describe("MysqlDatabase: recovery", () => {
  it.live("KILL of a pooled connection: the next call succeeds on a new connection", () =>
    Effect.gen(function*() {
      const [first] = yield* Db.execute<{ id: number }>("SELECT CONNECTION_ID() AS id")
      yield* admin((c) => c.query(`KILL ${Number(first!.id)}`))
      yield* Effect.sleep(100)
      const [next] = yield* Db.execute<{ id: number }>("SELECT CONNECTION_ID() AS id")
      expect(next!.id).not.toBe(first!.id)
    }).pipe(Effect.provide(MysqlDatabase.layer({ url: MYSQL_URL, alias: unique("kill"), pool: { min: 1, max: 1 } }))))

  it.live("KILL during a query fails that call with a typed ConnectionError; the process lives and the next call succeeds", () =>
    Effect.gen(function*() {
      const [first] = yield* Db.execute<{ id: number }>("SELECT CONNECTION_ID() AS id")
      const fiber = yield* Effect.fork(Db.execute("SELECT SLEEP(5)", [], { retry: false }))
      yield* Effect.sleep(200)
      yield* admin((c) => c.query(`KILL ${Number(first!.id)}`))
      const error = yield* Effect.flip(Fiber.join(fiber))
      expect(error._tag).toBe("ConnectionError")
      expect(yield* Db.execute("SELECT 1 AS ok")).toEqual([{ ok: 1 }])
    }).pipe(Effect.provide(MysqlDatabase.layer({ url: MYSQL_URL, alias: unique("killq"), pool: { min: 1, max: 1 } }))))

  it.live("session state does not leak: a changed session is closed, not reused", () =>
    Effect.gen(function*() {
      const [first] = yield* Db.execute<{ id: number }>("SELECT CONNECTION_ID() AS id")
      yield* Db.execute("SET @dal_secret = 42")
      const [v] = yield* Db.execute<{ v: unknown }>("SELECT @dal_secret AS v")
      expect(v!.v).toBeNull()
      const [next] = yield* Db.execute<{ id: number }>("SELECT CONNECTION_ID() AS id")
      expect(next!.id).not.toBe(first!.id)
    }).pipe(Effect.provide(MysqlDatabase.layer({ url: MYSQL_URL, alias: unique("sess"), pool: { min: 0, max: 1 } }))))
})

describe("MysqlDatabase: timeouts, shutdown and errors", () => {
  it.live("duplicate-key messages name the key but never the value", () => {
    const table = unique("dup")
    return Effect.gen(function*() {
      yield* Db.execute(`CREATE TABLE [${table}] (id int PRIMARY KEY, email varchar(100), UNIQUE KEY uq_email (email))`)
      yield* Db.execute(`INSERT INTO [${table}] VALUES (?, ?)`, [1, "secret@example.com"])
      const error = yield* Effect.flip(Db.execute(`INSERT INTO [${table}] VALUES (?, ?)`, [2, "secret@example.com"]))
      expect(error).toMatchObject({ _tag: "ConstraintViolation", kind: "unique", code: "1062" })
      expect(error.message).toContain("uq_email")
      expect(error.message).not.toContain("secret@example.com")
      yield* Db.execute(`DROP TABLE [${table}]`)
    }).pipe(Effect.provide(MysqlDatabase.layer({ url: MYSQL_URL, alias: unique("dup") })))
  })

  it.live("an unreachable server fails with PoolTimeout 'unavailable' carrying the connect error", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(Db.execute("SELECT 1"))
      expect(Exit.isFailure(exit)).toBe(true)
      const error = yield* Effect.flip(Db.execute("SELECT 1"))
      expect(error).toMatchObject({ _tag: "PoolTimeout", reason: "unavailable" })
      expect((error as { cause: unknown }).cause).toMatchObject({ _tag: "ConnectionError", code: "ECONNREFUSED" })
    }).pipe(Effect.provide(
      MysqlDatabase.layer({ host: "127.0.0.1", port: 1, database: "test", alias: unique("down"), pool: { acquireTimeout: 300 } })
    )))
})

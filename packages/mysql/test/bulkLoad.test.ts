/**
 * `insertMany` past `copyThreshold` loads with `LOAD DATA LOCAL INFILE`:
 * every value stored exactly as the INSERT of the same rows stores it, and a
 * batch the server would only take in part (LOCAL turns errors into skipped
 * rows) is undone and inserted as INSERT, failing as INSERT fails.
 */
import type { DbError } from "@effect-dal/core"
import { Db } from "@effect-dal/core"
import { MysqlDatabase } from "@effect-dal/mysql"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { admin, MYSQL_URL, unique } from "./helpers.js"

const loaded = unique("dal_load")
const inserted = unique("dal_load_ins")
const ddl = (name: string) =>
  `CREATE TABLE ${name} (id int AUTO_INCREMENT PRIMARY KEY, k int UNIQUE, label varchar(64), flag boolean, n bigint, x double, at datetime(3))`
beforeAll(() => Effect.runPromise(admin(async (c) => {
  await c.query(ddl(loaded))
  await c.query(ddl(inserted))
})))
afterAll(() => Effect.runPromise(admin((c) => c.query(`DROP TABLE IF EXISTS ${loaded}, ${inserted}`))))

const run = <A, E>(effect: Effect.Effect<A, E, Db>, connectionOptions?: object) =>
  Effect.runPromise(Effect.provide(
    effect,
    MysqlDatabase.layer({ url: MYSQL_URL, alias: unique("load"), pool: { max: 2 }, ...(connectionOptions ? { connectionOptions } : {}) })
  ))

/** This session's count of statements of a kind (inside a transaction: the one connection). */
const executed = (kind: "load" | "insert") =>
  Effect.map(Db.execute<{ Value: string }>(`SHOW SESSION STATUS LIKE 'Com_${kind}'`), (rows) => Number(rows[0]!.Value))
const loads = executed("load")
const count = (table: string) => Effect.map(Db.execute<{ n: number }>(`SELECT COUNT(*) AS n FROM [${table}]`), (r) => Number(r[0]!.n))
const clear = Effect.zipRight(Db.execute(`DELETE FROM [${loaded}]`), Db.execute(`DELETE FROM [${inserted}]`))

const labels = [
  "tab\there", "new\nline", "carriage\rreturn", "back\\slash", "\\N", "N", "nul\u0000byte", "it's \"quoted\"", "é 🎉",
  "", "trailing \\", "\\\\double"
]
const rowsOf = (n: number, offset = 0) =>
  Array.from({ length: n }, (_, i) => ({
    k: offset + i,
    label: i % 13 === 12 ? null : labels[i % 13]!,
    flag: i % 3 === 0 ? null : i % 2 === 0,
    n: i % 5 === 0 ? BigInt("9007199254740993") : -i,
    x: i % 7 === 0 ? null : i / 8,
    at: i % 4 === 0 ? null : new Date(Date.UTC(2026, 10, 29, 6, 30, 0, i % 1000))
  }))

describe("MySQL insertMany: LOAD DATA LOCAL INFILE past copyThreshold", () => {
  it("stores every value exactly as the INSERT of the same rows does, in one LOAD DATA", async () => {
    const rows = rowsOf(4_000)
    const [same, loadsSeen, results] = await run(Effect.gen(function*() {
      yield* clear
      const [result, used] = yield* Db.withTransaction(Effect.gen(function*() {
        const before = [yield* loads, yield* executed("insert")]
        const result = yield* Db.insertMany(loaded, rows)
        // the load was kept: no INSERT ran after it
        return [result, [(yield* loads) - before[0]!, (yield* executed("insert")) - before[1]!]] as const
      }))
      const other = yield* Db.insertMany(inserted, rows, { copyThreshold: Infinity })
      const select = (table: string) => Db.execute(`SELECT k, label, flag, CAST(n AS char) AS n, x, at FROM [${table}] ORDER BY k`)
      const a = yield* select(loaded)
      const b = yield* select(inserted)
      expect(a.length).toBe(4_000)
      return [JSON.stringify(a) === JSON.stringify(b), used, [result.inserted, other.inserted]] as const
    }))
    expect(loadsSeen).toEqual([1, 0])
    expect(results).toEqual([4_000, 4_000])
    expect(same).toBe(true)
  })

  it("a load leaves its connection clean: the pool lends the same connection on, not a new one", async () => {
    const threads = await Effect.runPromise(Effect.provide(
      Effect.gen(function*() {
        yield* clear
        const connection = Effect.map(Db.execute<{ id: number }>("SELECT CONNECTION_ID() AS id"), (r) => Number(r[0]!.id))
        const ids = [yield* connection]
        for (let i = 0; i < 3; i++) {
          expect((yield* Db.insertMany(loaded, rowsOf(50, i * 50), { copyThreshold: 2 })).inserted).toBe(50)
          ids.push(yield* connection)
        }
        expect(yield* count(loaded)).toBe(150)
        return ids
      }),
      // one connection: a load that left it dirty would have it closed, and the next statement would open another
      MysqlDatabase.layer({ url: MYSQL_URL, alias: unique("load"), pool: { min: 1, max: 1 } })
    ))
    expect(new Set(threads).size).toBe(1)
  })

  it("reports the auto-increment keys as INSERT does; a table without one reports none and keeps the session's LAST_INSERT_ID()", async () => {
    const plain = unique("dal_load_plain")
    const seen = await run(Effect.gen(function*() {
      yield* clear
      yield* Db.execute(`CREATE TABLE [${plain}] (k int, label varchar(64))`)
      const result = yield* Db.insertMany(loaded, rowsOf(3_200))
      const ids = yield* Db.execute<{ id: number }>(`SELECT id FROM [${loaded}] ORDER BY k`)
      const [lastBefore, plainKeys, lastAfter] = yield* Db.withTransaction(Effect.gen(function*() {
        yield* Db.execute(`INSERT INTO [${loaded}] (k) VALUES (-1)`)
        const last = Db.execute<{ id: number }>("SELECT LAST_INSERT_ID() AS id")
        const before = Number((yield* last)[0]!.id)
        const plainResult = yield* Db.insertMany(plain, rowsOf(3_000).map((r) => ({ k: r.k, label: r.label })))
        return [before, plainResult.keys, Number((yield* last)[0]!.id)] as const
      }))
      yield* Db.execute(`DROP TABLE [${plain}]`)
      return { keys: result.keys, ids: ids.map((r) => r.id), lastBefore, plainKeys, lastAfter }
    }))
    expect(seen.keys.length).toBe(3_200)
    expect(seen.keys).toEqual(seen.ids)
    expect(seen.plainKeys).toEqual([])
    expect(seen.lastBefore).toBeGreaterThan(0)
    expect(seen.lastAfter).toBe(seen.lastBefore)
  })

  it("a duplicate key in the batch fails it with the INSERT's ConstraintViolation, and no row of it stays", async () => {
    const rows = rowsOf(3_500)
    rows[3_000] = { ...rows[3_000]!, k: 7 }
    const [error, left, after] = await run(Effect.gen(function*() {
      yield* clear
      const error = yield* Effect.flip(Db.insertMany(loaded, rows))
      const left = yield* count(loaded)
      // the pool is healthy afterwards: a good batch goes in
      const after = yield* Db.insertMany(loaded, rowsOf(3_000))
      return [error, left, after.inserted] as const
    }))
    expect(error._tag).toBe("ConstraintViolation")
    expect((error as DbError.ConstraintViolation).kind).toBe("unique")
    expect(left).toBe(0)
    expect(after).toBe(3_000)
  })

  it("a value the column cannot hold fails as INSERT fails it (strict mode), nothing stored", async () => {
    const rows = rowsOf(3_000).map((r, i) => (i === 2_999 ? { ...r, label: "x".repeat(65) } : r))
    const [viaLoad, viaInsert, left] = await run(Effect.gen(function*() {
      yield* clear
      const viaLoad = yield* Effect.flip(Db.insertMany(loaded, rows))
      const viaInsert = yield* Effect.flip(Db.insertMany(loaded, rows, { copyThreshold: Infinity }))
      return [viaLoad, viaInsert, yield* count(loaded)] as const
    }))
    expect(viaLoad._tag).toBe(viaInsert._tag)
    expect((viaLoad as { code?: string }).code).toBe((viaInsert as { code?: string }).code)
    expect(left).toBe(0)
  })

  it("inside a transaction: a failed load leaves the transaction's earlier rows and it goes on; a rolled-back one keeps nothing", async () => {
    const duplicate = rowsOf(3_000, 100).map((r, i) => (i === 2_000 ? { ...r, k: 1 } : r))
    const [kept, afterRollback] = await run(Effect.gen(function*() {
      yield* clear
      yield* Db.withTransaction(Effect.gen(function*() {
        yield* Db.execute(`INSERT INTO [${loaded}] (k, label) VALUES (1, 'first')`)
        const failed = yield* Effect.either(Db.insertMany(loaded, duplicate))
        expect(Either.isLeft(failed)).toBe(true)
        yield* Db.execute(`INSERT INTO [${loaded}] (k, label) VALUES (2, 'second')`)
      }))
      const kept = yield* Db.execute<{ k: number }>(`SELECT k FROM [${loaded}] ORDER BY k`)
      yield* Effect.either(Db.withTransaction(Effect.zipRight(
        Db.insertMany(loaded, rowsOf(3_000, 10_000)),
        Effect.fail("abandoned" as const)
      )))
      return [kept.map((r) => r.k), yield* count(loaded)] as const
    }))
    expect(kept).toEqual([1, 2])
    expect(afterRollback).toBe(2)
  })

  it("rows with bytes go as INSERT; a session without backslash escapes too; both store exactly", async () => {
    const [bytesLoads, nbeLoads, stored] = await run(Effect.gen(function*() {
      yield* clear
      const withBytes = rowsOf(3_000).map((r) => ({ k: r.k, label: Buffer.from(`b${r.k}\t\\`) }))
      const bytesLoads = yield* Db.withTransaction(Effect.gen(function*() {
        const before = yield* loads
        yield* Db.insertMany(loaded, withBytes)
        return (yield* loads) - before
      }))
      const nbeLoads = yield* Db.withTransaction(Effect.gen(function*() {
        // the session's mode changes inside the transaction: its connection is closed afterwards
        yield* Db.execute("SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')")
        const before = yield* loads
        yield* Db.insertMany(loaded, rowsOf(3_000, 5_000).map((r) => ({ k: r.k, label: "back\\slash\tand tab" })))
        return (yield* loads) - before
      }))
      const stored = yield* Db.execute<{ k: number; label: string }>(
        `SELECT k, label FROM [${loaded}] WHERE k IN (17, 5017) ORDER BY k`
      )
      return [bytesLoads, nbeLoads, stored] as const
    }))
    expect(bytesLoads).toBe(0)
    expect(nbeLoads).toBe(0)
    expect(stored).toEqual([{ k: 17, label: "b17\t\\" }, { k: 5_017, label: "back\\slash\tand tab" }])
  })

  it("a client without LOCAL_FILES is refused LOAD DATA: the rows go as INSERT, every time", async () => {
    const [first, second, total] = await run(
      Effect.gen(function*() {
        yield* clear
        const first = yield* Db.insertMany(loaded, rowsOf(3_000))
        const second = yield* Db.insertMany(loaded, rowsOf(3_000, 3_000))
        return [first.inserted, second.inserted, yield* count(loaded)] as const
      }),
      { flags: ["-LOCAL_FILES"] }
    )
    expect([first, second, total]).toEqual([3_000, 3_000, 6_000])
  })
})

import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Db } from "@effect-dal/core"
import type { DbError, Pool } from "@effect-dal/core"
import { PgDatabase } from "@effect-dal/pg"
import * as SqlClient from "@effect/sql/SqlClient"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import { admin, backends, countingProxy, PG_URL, schemaFor, unique } from "./helpers.js"

const schema = unique("dal_pgdb")
const { create, drop } = schemaFor(schema)
beforeAll(() => Effect.runPromise(create))
afterAll(() => Effect.runPromise(drop))

const layerFor = (alias: string, pool: Pool.PoolOptions = {}) =>
  PgDatabase.layer({ url: Redacted.make(PG_URL), alias, pool: { min: 0, max: 5, ...pool } })

/** A fresh table in this file's schema, and a layer whose connections carry a unique application_name. */
const setup = (pool: Pool.PoolOptions = {}) => {
  const alias = unique("t")
  const table = `${schema}.${alias}`
  return {
    alias,
    table,
    layer: layerFor(alias, pool),
    createTable: Db.execute(`CREATE TABLE [${table}] (id int PRIMARY KEY, v text)`)
  }
}

const count = (table: string) =>
  admin(async (c) => Number((await c.query(`SELECT count(*) AS n FROM ${table.split(".").map((p) => `"${p}"`).join(".")}`)).rows[0].n))

describe("PgDatabase: pool limits", () => {
  it.live("with max 3 and 20 concurrent callers, the server never sees more than 3 of our connections", () => {
    const { alias, layer } = setup({ max: 3 })
    return Effect.gen(function*() {
      let peak = 0
      const sampler = yield* Effect.fork(Effect.forever(
        Effect.flatMap(backends(alias), (rows) => Effect.sync(() => void (peak = Math.max(peak, rows.length))))
      ))
      const results = yield* Effect.forEach(
        Array.from({ length: 20 }, (_, i) => i),
        (i) => Db.execute<{ n: number }>("SELECT ?::int AS n, pg_sleep(0.03)", [i]),
        { concurrency: 20 }
      )
      yield* Fiber.interrupt(sampler)
      expect(results.map((r) => r[0]!.n)).toEqual(Array.from({ length: 20 }, (_, i) => i))
      expect(peak).toBeGreaterThan(0)
      expect(peak).toBeLessThanOrEqual(3)
      const db = yield* Db
      expect(db.poolStats().size).toBeLessThanOrEqual(3)
    }).pipe(Effect.provide(layer))
  })

  it.live("with every connection held, a caller gets PoolTimeout within acquireTimeout + 200 ms", () => {
    const { layer } = setup({ max: 2, acquireTimeout: 300 })
    return Effect.gen(function*() {
      const release = yield* Deferred.make<void>()
      const held = yield* Effect.forEach([1, 2], () =>
        Effect.fork(Effect.scoped(Effect.zipRight(Db.transaction, Deferred.await(release)))))
      yield* Effect.sleep(100)
      const start = Date.now()
      const error = yield* Effect.flip(Db.execute("SELECT 1"))
      const elapsed = Date.now() - start
      expect(error._tag).toBe("PoolTimeout")
      expect(error).toMatchObject({ reason: "exhausted", busy: 2, max: 2 })
      expect(elapsed).toBeGreaterThanOrEqual(290)
      expect(elapsed).toBeLessThan(500)
      yield* Deferred.succeed(release, undefined)
      yield* Fiber.joinAll(held)
      expect(yield* Db.execute("SELECT 1 AS one")).toEqual([{ one: 1 }])
    }).pipe(Effect.provide(layer))
  })
})

describe("PgDatabase: transactions", () => {
  it.live("commits a scoped transaction when the scope succeeds", () => {
    const { layer, table, createTable } = setup()
    return Effect.gen(function*() {
      yield* createTable
      yield* Effect.scoped(Effect.gen(function*() {
        const tx = yield* Db.transaction
        yield* tx.execute(`INSERT INTO [${table}] VALUES (?, ?)`, [1, "a"])
        // Db.execute inside the scope runs on the same transaction
        yield* Db.execute(`INSERT INTO [${table}] VALUES (?, ?)`, [2, "b"])
        expect(yield* count(table)).toBe(0) // not visible outside yet
      }))
      expect(yield* count(table)).toBe(2)
    }).pipe(Effect.provide(layer))
  })

  it.live("rolls back on failure", () => {
    const { layer, table, createTable } = setup()
    return Effect.gen(function*() {
      yield* createTable
      const exit = yield* Effect.exit(Db.withTransaction(Effect.gen(function*() {
        yield* Db.execute(`INSERT INTO [${table}] VALUES (?, ?)`, [1, "a"])
        return yield* Effect.fail("boom")
      })))
      expect(exit).toEqual(Exit.fail("boom"))
      expect(yield* count(table)).toBe(0)
      const scoped = yield* Effect.exit(Effect.scoped(Effect.gen(function*() {
        const tx = yield* Db.transaction
        yield* tx.execute(`INSERT INTO [${table}] VALUES (?, ?)`, [1, "a"])
        return yield* Effect.fail("boom")
      })))
      expect(Exit.isFailure(scoped)).toBe(true)
      expect(yield* count(table)).toBe(0)
    }).pipe(Effect.provide(layer))
  })

  it.live("rolls back on a defect", () => {
    const { layer, table, createTable } = setup()
    return Effect.gen(function*() {
      yield* createTable
      const exit = yield* Effect.exit(Db.withTransaction(Effect.gen(function*() {
        yield* Db.execute(`INSERT INTO [${table}] VALUES (?, ?)`, [1, "a"])
        return yield* Effect.die(new Error("defect"))
      })))
      expect(Exit.isFailure(exit) && exit.cause._tag).toBe("Die")
      expect(yield* count(table)).toBe(0)
    }).pipe(Effect.provide(layer))
  })

  it.live("rolls back on interruption, leaving no row and no open transaction", () => {
    const { layer, table, createTable, alias } = setup()
    return Effect.gen(function*() {
      yield* createTable
      const inserted = yield* Deferred.make<void>()
      const fiber = yield* Effect.fork(Db.withTransaction(Effect.gen(function*() {
        yield* Db.execute(`INSERT INTO [${table}] VALUES (?, ?)`, [1, "a"])
        yield* Deferred.succeed(inserted, undefined)
        return yield* Effect.never
      })))
      yield* Deferred.await(inserted)
      expect((yield* backends(alias)).some((b) => b.state === "idle in transaction")).toBe(true)
      yield* Fiber.interrupt(fiber)
      expect(yield* count(table)).toBe(0)
      const states = (yield* backends(alias)).map((b) => b.state)
      expect(states.filter((s) => s !== null && s.includes("transaction"))).toEqual([])
      // the same holds for an interrupted scoped transaction
      const scopedFiber = yield* Effect.fork(Effect.scoped(Effect.gen(function*() {
        const tx = yield* Db.transaction
        yield* tx.execute(`INSERT INTO [${table}] VALUES (?, ?)`, [2, "b"])
        return yield* Effect.never
      })))
      yield* Effect.sleep(100)
      yield* Fiber.interrupt(scopedFiber)
      expect(yield* count(table)).toBe(0)
    }).pipe(Effect.provide(layer))
  })

  it.live("rolls back a nested savepoint inside a committed outer transaction", () => {
    const { layer, table, createTable } = setup()
    return Effect.gen(function*() {
      yield* createTable
      yield* Db.withTransaction(Effect.gen(function*() {
        yield* Db.execute(`INSERT INTO [${table}] VALUES (?, ?)`, [1, "outer"])
        const inner = yield* Effect.exit(Db.withTransaction(Effect.gen(function*() {
          yield* Db.execute(`INSERT INTO [${table}] VALUES (?, ?)`, [2, "inner"])
          return yield* Effect.fail("inner failed")
        })))
        expect(Exit.isFailure(inner)).toBe(true)
        yield* Db.withTransaction(Db.execute(`INSERT INTO [${table}] VALUES (?, ?)`, [3, "kept"]))
      }))
      const rows = yield* Db.execute<{ id: number }>(`SELECT id FROM [${table}] ORDER BY id`)
      expect(rows.map((r) => r.id)).toEqual([1, 3])
    }).pipe(Effect.provide(layer))
  })

  it.live("applies isolation level and read-only", () => {
    const { layer } = setup()
    return Effect.gen(function*() {
      const [iso] = yield* Db.withTransaction(
        Db.execute<{ transaction_isolation: string }>("SHOW transaction_isolation"),
        { isolation: "serializable" }
      )
      expect(iso!.transaction_isolation).toBe("serializable")
      const [ro] = yield* Db.withTransaction(
        Db.execute<{ transaction_read_only: string }>("SHOW transaction_read_only"),
        { isolation: "repeatable read", readOnly: true }
      )
      expect(ro!.transaction_read_only).toBe("on")
      const write = yield* Effect.flip(Db.withTransaction(Db.execute("CREATE TEMP TABLE x (a int)"), { readOnly: true }))
      expect(write).toMatchObject({ _tag: "QueryError", code: "25006" })
      const [def] = yield* Db.execute<{ transaction_isolation: string }>("SHOW transaction_isolation")
      expect(def!.transaction_isolation).toBe("read committed")
    }).pipe(Effect.provide(layer))
  })

  it.live("sql templates inside withTransaction see the transaction's uncommitted rows", () => {
    const { layer, table, createTable } = setup()
    return Effect.gen(function*() {
      yield* createTable
      const sql = yield* SqlClient.SqlClient
      const [schemaName, tableName] = table.split(".") as [string, string]
      yield* Db.withTransaction(Effect.gen(function*() {
        yield* Db.execute(`INSERT INTO [${table}] VALUES (?, ?)`, [1, "uncommitted"])
        const seen = yield* sql<{ v: string }>`SELECT v FROM ${sql(schemaName)}.${sql(tableName)} WHERE id = ${1}`
        expect(seen).toEqual([{ v: "uncommitted" }])
        expect(yield* count(table)).toBe(0)
        // and sql.withTransaction nests as a savepoint of the same transaction
        yield* sql.withTransaction(sql`INSERT INTO ${sql(schemaName)}.${sql(tableName)} VALUES (${2}, ${"nested"})`)
        expect(yield* Db.execute(`SELECT id FROM [${table}] ORDER BY id`)).toEqual([{ id: 1 }, { id: 2 }])
      }))
      expect(yield* count(table)).toBe(2)
    }).pipe(Effect.provide(layer))
  })

  it.live("a COMMIT that fails is reported as a failure, never as success", () => {
    const { layer, table } = setup()
    return Effect.gen(function*() {
      yield* Db.execute(
        `CREATE TABLE [${table}] (id int, CONSTRAINT [${table.split(".")[1]}_u] UNIQUE (id) DEFERRABLE INITIALLY DEFERRED)`
      )
      const insertTwice = Effect.zipRight(
        Db.execute(`INSERT INTO [${table}] VALUES (?)`, [1]),
        Db.execute(`INSERT INTO [${table}] VALUES (?)`, [1])
      )
      const error = yield* Effect.flip(Db.withTransaction(insertTwice))
      expect(error).toMatchObject({ _tag: "ConstraintViolation", kind: "unique", code: "23505" })
      const scoped = yield* Effect.exit(Effect.scoped(Effect.zipRight(Db.transaction, insertTwice)))
      expect(Exit.isFailure(scoped)).toBe(true)
      expect(yield* count(table)).toBe(0)
      expect(yield* Db.execute("SELECT 1 AS ok")).toEqual([{ ok: 1 }])
    }).pipe(Effect.provide(layer))
  })

  it.live("executeMany runs every row in one transaction, and none when one fails", () => {
    const { layer, table, createTable } = setup()
    return Effect.gen(function*() {
      yield* createTable
      const n = yield* Db.executeMany(`INSERT INTO [${table}] VALUES (?, ?)`, [[1, "a"], [2, "b"], [3, "c"]])
      expect(n).toBe(3)
      const error = yield* Effect.flip(Db.executeMany(`INSERT INTO [${table}] VALUES (?, ?)`, [[4, "d"], [1, "dup"]]))
      expect(error._tag).toBe("ConstraintViolation")
      expect(yield* count(table)).toBe(3)
      const bad = yield* Effect.flip(Db.executeMany(`INSERT INTO [${table}] VALUES (?, ?)`, [[5, "e"], [6]]))
      expect(bad).toMatchObject({ _tag: "InvalidQuery", reason: "parameterCount" })
    }).pipe(Effect.provide(layer))
  })
})

describe("PgDatabase: statement cache", () => {
  it.live("evicts the least recently used statement and frees it on the server; size 0 turns it off", () =>
    Effect.gen(function*() {
      const db = yield* Db
      for (let i = 0; i < 5; i++) yield* Db.execute(`SELECT ?::int + ${i} AS v`, [1])
      yield* Db.execute("SELECT ?::int AS again", [1])
      expect(db.statementCacheStats()).toMatchObject({ misses: 6, evictions: 4 })
      // the count runs unprepared, after the pending DEALLOCATEs of this connection
      const [row] = yield* Db.execute<{ n: number }>("SELECT count(*)::int AS n FROM pg_prepared_statements")
      expect(row!.n).toBe(2)
      const off = yield* Effect.provide(
        Effect.gen(function*() {
          const plain = yield* Db
          for (let i = 0; i < 3; i++) yield* Db.execute("SELECT ?::int AS v", [i])
          const [count] = yield* Db.execute<{ n: number }>("SELECT count(*)::int AS n FROM pg_prepared_statements")
          return { stats: plain.statementCacheStats(), prepared: count!.n }
        }),
        PgDatabase.layer({ url: PG_URL, alias: unique("nocache"), statementCacheSize: 0, pool: { min: 0, max: 1 } })
      )
      expect(off).toEqual({ stats: { hits: 0, misses: 0, evictions: 0 }, prepared: 0 })
    }).pipe(Effect.provide(PgDatabase.layer({ url: PG_URL, alias: unique("cache"), statementCacheSize: 2, pool: { min: 0, max: 1 } }))))
})

describe("PgDatabase: prepared statements on the wire", () => {
  it.live("a prepared statement is described once per connection; its rows stay right, and a table changed under it is described anew", () => {
    const { table } = setup()
    return Effect.scoped(Effect.gen(function*() {
      const proxy = yield* countingProxy
      const describes = () => proxy.counts.get("D") ?? 0
      yield* Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* Db.execute(`CREATE TABLE [${table}] (id int PRIMARY KEY, v text)`)
        yield* Db.execute(`INSERT INTO [${table}] VALUES (1, 'a'), (2, 'b')`)
        const before = describes()
        for (const id of [1, 2, 1]) {
          expect(yield* Db.execute(`SELECT * FROM [${table}] WHERE id = ?`, [id])).toEqual([{ id, v: id === 1 ? "a" : "b" }])
        }
        // a statement without rows: NoData is remembered as well
        for (const v of ["x", "y"]) {
          expect(yield* Db.execute(`UPDATE [${table}] SET v = ? WHERE id = 2`, [v])).toEqual([])
        }
        expect(yield* sql`SELECT id, v FROM ${sql(table)} WHERE id = ${2}`.values).toEqual([[2, "y"]])
        expect(yield* sql`SELECT id, v FROM ${sql(table)} WHERE id = ${1}`.values).toEqual([[1, "a"]])
        // first in a transaction: BEGIN goes in front of it, and the description still stands
        expect(yield* Db.withTransaction(Db.execute(`SELECT * FROM [${table}] WHERE id = ?`, [2]))).toEqual([{ id: 2, v: "y" }])
        expect(describes() - before).toBe(3)
        // the server refuses the old statement (0A000): it is prepared and described again, once
        yield* Db.execute(`ALTER TABLE [${table}] ADD COLUMN w int DEFAULT 7`)
        for (let i = 0; i < 2; i++) {
          expect(yield* Db.execute(`SELECT * FROM [${table}] WHERE id = ?`, [1])).toEqual([{ id: 1, v: "a", w: 7 }])
        }
        expect(describes() - before).toBe(4)
      }).pipe(Effect.provide(PgDatabase.layer({ url: proxy.url, alias: unique("described"), pool: { min: 0, max: 1 } })))
    }))
  })
})

describe("PgDatabase: DDL", () => {
  it.live("DDL inside a transaction rolls back with it (no DdlInTransaction on PostgreSQL)", () => {
    const { layer, table } = setup()
    return Effect.gen(function*() {
      const exit = yield* Effect.exit(Db.withTransaction(Effect.zipRight(
        Db.execute(`CREATE TABLE [${table}] (id int)`),
        Effect.fail("undo")
      )))
      expect(exit).toEqual(Exit.fail("undo"))
      const missing = yield* Effect.flip(Db.execute(`SELECT * FROM [${table}]`))
      expect(missing).toMatchObject({ _tag: "QueryError", code: "42P01" })
    }).pipe(Effect.provide(layer))
  })
})

describe("PgDatabase: errors", () => {
  it.live("syntax errors, constraint violations and missing tables come back typed, and the pool keeps working", () => {
    const { layer, table, createTable } = setup({ max: 1 })
    return Effect.gen(function*() {
      yield* createTable
      const syntax = yield* Effect.flip(Db.execute("SELEC 1"))
      expect(syntax).toMatchObject({ _tag: "QueryError", category: "syntax", code: "42601", sql: "SELEC 1" })
      yield* Db.execute(`INSERT INTO [${table}] VALUES (?, ?)`, [1, "secret-value"])
      const unique = (yield* Effect.flip(
        Db.execute(`INSERT INTO [${table}] VALUES (?, ?)`, [1, "secret-value"])
      )) as DbError.DbError
      expect(unique).toMatchObject({ _tag: "ConstraintViolation", kind: "unique", code: "23505" })
      expect((unique as DbError.ConstraintViolation).constraint).toContain("pkey")
      expect(unique.message).not.toContain("secret-value")
      expect(unique.message).toContain("INSERT INTO")
      const missing = yield* Effect.flip(Db.execute("SELECT * FROM [no_such_table_here]"))
      expect(missing).toMatchObject({ _tag: "QueryError", code: "42P01" })
      const nul = yield* Effect.flip(Db.execute("SELECT ?::text AS t", ["a\u0000b"]))
      expect(nul).toMatchObject({ _tag: "QueryError", category: "data", code: "22021" })
      // one connection served all of the above and still works
      expect(yield* Db.execute("SELECT 1 AS ok")).toEqual([{ ok: 1 }])
    }).pipe(Effect.provide(layer))
  })

  it.live("a wrong number of parameters fails before anything is sent", () => {
    const { layer, alias } = setup()
    return Effect.gen(function*() {
      const error = yield* Effect.flip(Db.execute("SELECT ?, ?", [1]))
      expect(error).toMatchObject({ _tag: "InvalidQuery", reason: "parameterCount" })
      const empty = yield* Effect.flip(Db.execute("  "))
      expect(empty).toMatchObject({ _tag: "InvalidQuery", reason: "empty" })
      expect((yield* backends(alias)).length).toBe(0) // min 0: nothing was ever opened
    }).pipe(Effect.provide(layer))
  })

  it.live("an unreachable server fails with a typed 'database unavailable' error", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Db.execute("SELECT 1"))
      expect(error).toMatchObject({ _tag: "PoolTimeout", reason: "unavailable" })
      expect((error as DbError.PoolTimeout).cause).toMatchObject({ _tag: "ConnectionError", code: "ECONNREFUSED" })
    }).pipe(Effect.provide(
      PgDatabase.layer({ host: "127.0.0.1", port: 1, database: "test", alias: unique("down"), pool: { acquireTimeout: 300 } })
    )))
})

describe("PgDatabase: configuration, sharing and shutdown", () => {
  it.live("layerConfig reads DATABASE_URL and friends", () => {
    const alias = unique("env")
    return Effect.gen(function*() {
      const db = yield* Db
      expect(db.alias).toBe(alias)
      expect(db.config.pool.max).toBe(2)
      expect(yield* Db.execute("SELECT current_database() AS db")).toEqual([{ db: "test" }])
      expect((yield* backends(alias)).length).toBeGreaterThan(0)
    }).pipe(
      Effect.provide(PgDatabase.layerConfig()),
      Effect.withConfigProvider(ConfigProvider.fromMap(
        new Map([["DATABASE_URL", PG_URL], ["DATABASE_ALIAS", alias], ["DATABASE_POOL_MAX", "2"]])
      ))
    )
  })

  it.live("invalid config fails when the layer is built, with a ConfigError naming the field", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(Layer.build(PgDatabase.layer({ url: "postgres://h:99999/x" })).pipe(Effect.scoped))
      expect(Exit.isFailure(exit)).toBe(true)
      const port = yield* Effect.flip(Layer.build(PgDatabase.layer({ database: "x", port: 0 })).pipe(Effect.scoped))
      expect(port).toMatchObject({ _op: "InvalidData", path: ["port"] })
      const db = yield* Effect.flip(Layer.build(PgDatabase.layer({ database: "" })).pipe(Effect.scoped))
      expect(db).toMatchObject({ _op: "InvalidData", path: ["database"] })
    }))

  it.live("two layers with the same config share one pool, and closing them leaves no connection open", () => {
    const alias = unique("shared")
    const options = { url: PG_URL, alias, pool: { min: 1, max: 2 } }
    const a = PgDatabase.layer(options)
    const b = PgDatabase.layer({ ...options, password: Redacted.make("ignored-by-the-hash") })
    return Effect.gen(function*() {
      const scopeA = yield* Effect.scope
      const ctxA = yield* Layer.build(a)
      const dbA = ctxA.unsafeMap.get(Db.key) as Db["Type"]
      yield* Effect.scoped(Effect.gen(function*() {
        const ctxB = yield* Layer.build(b)
        const dbB = ctxB.unsafeMap.get(Db.key) as Db["Type"]
        // 8 concurrent slow queries through both layers: one pool of 2
        yield* Effect.forEach(
          [dbA, dbB, dbA, dbB, dbA, dbB, dbA, dbB],
          (db) => db.execute("SELECT pg_sleep(0.05)"),
          { concurrency: "unbounded" }
        )
        expect(dbA.poolStats()).toEqual(dbB.poolStats())
        expect((yield* backends(alias)).length).toBeLessThanOrEqual(2)
      }))
      // B closed; A still works on the shared pool
      expect(yield* dbA.execute("SELECT 1 AS ok")).toEqual([{ ok: 1 }])
      void scopeA
    }).pipe(
      Effect.scoped,
      Effect.zipRight(Effect.suspend(() => backends(alias))),
      Effect.map((rows) => expect(rows).toEqual([]))
    )
  })
})

/**
 * The cross-engine conformance suite: written once, run against every
 * engine (pg, mysql, pglite) by a one-line test file in each engine package,
 * as kysely runs each test once per dialect.
 *
 * @since 0.1.0
 */
import { Db } from "@effect-dal/core"
import type { DatabaseConfig, DbError } from "@effect-dal/core"
import * as Reactivity from "@effect/experimental/Reactivity"
import * as SqlClient from "@effect/sql/SqlClient"
import { describe, expect, layer } from "@effect/vitest"
import type * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Chunk from "effect/Chunk"
import * as Fiber from "effect/Fiber"
import * as Schedule from "effect/Schedule"
import * as Stream from "effect/Stream"
import * as Bank from "./Bank.js"
import type * as Layer from "effect/Layer"

/**
 * What a suite's layer may set, over the engine's defaults.
 *
 * @since 0.2.0
 */
export type LayerOptions =
  & { readonly alias: string }
  & Pick<DatabaseConfig.DatabaseOptions, "pool" | "circuitBreaker" | "statementTimeout" | "retry">

/**
 * What the suite needs to know about an engine.
 *
 * @since 0.1.0
 */
export interface EngineProfile {
  readonly name: string
  /** A layer with a distinct alias (its connections' name on the server) and pool options. */
  readonly layer: (
    options: LayerOptions
  ) => Layer.Layer<Db | SqlClient.SqlClient | Reactivity.Reactivity, ConfigError.ConfigError | DbError.DbError>
  /** Column types for the round trips. */
  readonly types: {
    readonly bool: string
    readonly bigint: string
    readonly decimal: string
    readonly text: string
    readonly bytes: string
    readonly json: string
    readonly timestamptz: string
    /** An auto-generated integer key column type. */
    readonly serial: string
  }
  /** Engine codes of the typed errors. */
  readonly codes: {
    readonly unique: string
    readonly foreignKey: string
    readonly syntax: string
    readonly missingTable: string
  }
  /** SQL that sleeps for `seconds`. */
  readonly sleep: (seconds: number) => string
  /**
   * Counts our connections on the server by alias; `undefined` for an
   * engine with a single embedded session.
   */
  readonly countConnections: ((alias: string) => Effect.Effect<number>) | undefined
  /** A NUL byte in a text parameter is rejected (PostgreSQL) rather than stored. */
  readonly rejectsNulInText: boolean
  /** The engine keeps prepared statements per connection. */
  readonly statementCache: boolean
}

let counter = 0
const uniqueName = (prefix: string) => `${prefix}_${process.pid}_${Date.now().toString(36)}_${(counter++).toString(36)}`

/** Creates a uniquely named table, runs `f` with its name, and drops it whatever happens. */
const withTable = <A, E, R>(columns: string, f: (table: string) => Effect.Effect<A, E, R>) => {
  const table = uniqueName("conf")
  return Effect.acquireUseRelease(
    Effect.as(Db.execute(`CREATE TABLE [${table}] (${columns})`), table),
    f,
    () => Effect.ignore(Db.execute(`DROP TABLE IF EXISTS [${table}]`))
  )
}

/**
 * What PostgreSQL and PGlite share: column types, error codes and a sleep.
 *
 * @since 0.1.0
 */
export const postgres: Pick<EngineProfile, "types" | "codes" | "sleep"> = {
  types: {
    bool: "boolean",
    bigint: "bigint",
    decimal: "numeric(38, 9)",
    text: "text",
    bytes: "bytea",
    json: "jsonb",
    serial: "serial",
    timestamptz: "timestamptz"
  },
  codes: { unique: "23505", foreignKey: "23503", syntax: "42601", missingTable: "42P01" },
  sleep: (seconds) => `SELECT pg_sleep(${seconds})`
}

/**
 * Registers the conformance suite for one engine.
 *
 * @since 0.1.0
 */
export const conformance = (profile: EngineProfile): void => {
  const t = profile.types
  const alias = uniqueName(`conf_${profile.name}`)

  layer(profile.layer({ alias, pool: { min: 1, max: 4 } }), { excludeTestServices: true, timeout: 60_000 })(
    `conformance: ${profile.name}`,
    (it) => {
      it.effect("translates ? placeholders and quotes [identifiers], leaving literals alone", () =>
        withTable("[id] int PRIMARY KEY, [select] int, [mixed Case] varchar(50)", (table) =>
          Effect.gen(function*() {
            yield* Db.execute(`INSERT INTO [${table}] ([id], [select], [mixed Case]) VALUES (?, ?, ?)`, [1, 2, "x?"])
            const rows = yield* Db.execute<Record<string, unknown>>(
              `SELECT [select], [mixed Case], 'what? [no]' AS [q] FROM [${table}] WHERE [id] = ? -- really?`,
              [1]
            )
            expect(rows).toEqual([{ select: 2, "mixed Case": "x?", q: "what? [no]" }])
          })))

      it.effect("round-trips null, boolean, int, bigint, decimal, text, bytes, json and timestamps", () =>
        withTable(
          `id int PRIMARY KEY, b ${t.bool}, i int, big ${t.bigint}, d ${t.decimal}, s ${t.text}, bin ${t.bytes}, j ${t.json}, ts ${t.timestamptz}, n ${t.text}`,
          (table) =>
            Effect.gen(function*() {
              const values = {
                b: true,
                i: -2147483648,
                big: "9007199254740993",
                d: "12345678901234567890.123456789",
                s: "héllo wörld 🌍👩‍👩‍👧 日本語 ✓",
                bin: Buffer.from([0, 1, 2, 127, 128, 255]),
                j: { a: 1, b: [true, null], c: "ü" },
                ts: new Date("2024-02-29T12:34:56.789Z")
              }
              yield* Db.execute(`INSERT INTO [${table}] VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, [
                1,
                values.b,
                values.i,
                values.big,
                values.d,
                values.s,
                values.bin,
                JSON.stringify(values.j),
                values.ts,
                null
              ])
              const [row] = yield* Db.execute<Record<string, any>>(`SELECT * FROM [${table}]`)
              expect(row!["n"]).toBeNull()
              expect(Boolean(row!["b"])).toBe(true)
              expect(row!["i"]).toBe(values.i)
              expect(String(row!["big"])).toBe(values.big)
              expect(String(row!["d"])).toBe(values.d)
              expect(row!["s"]).toBe(values.s)
              expect(Buffer.from(row!["bin"]).equals(values.bin)).toBe(true)
              const json = typeof row!["j"] === "string" ? JSON.parse(row!["j"]) : row!["j"]
              expect(json).toEqual(values.j)
              expect(new Date(row!["ts"]).getTime()).toBe(values.ts.getTime())
            })
        ))

      it.effect("commits, and rolls back on failure", () =>
        withTable("id int PRIMARY KEY", (table) =>
          Effect.gen(function*() {
            yield* Db.withTransaction(Db.execute(`INSERT INTO [${table}] VALUES (?)`, [1]))
            const failed = yield* Effect.exit(Db.withTransaction(Effect.zipRight(
              Db.execute(`INSERT INTO [${table}] VALUES (?)`, [2]),
              Effect.fail("nope")
            )))
            expect(failed).toEqual(Exit.fail("nope"))
            expect(yield* Db.execute(`SELECT id FROM [${table}]`)).toEqual([{ id: 1 }])
          })))

      it.effect("rolls back a savepoint inside a committed outer transaction", () =>
        withTable("id int PRIMARY KEY", (table) =>
          Effect.gen(function*() {
            yield* Effect.scoped(Effect.gen(function*() {
              const tx = yield* Db.transaction
              yield* tx.execute(`INSERT INTO [${table}] VALUES (?)`, [1])
              const inner = yield* Effect.exit(Db.withTransaction(Effect.zipRight(
                Db.execute(`INSERT INTO [${table}] VALUES (?)`, [2]),
                Effect.fail("inner")
              )))
              expect(Exit.isFailure(inner)).toBe(true)
              yield* Db.withTransaction(Db.execute(`INSERT INTO [${table}] VALUES (?)`, [3]))
            }))
            expect(yield* Db.execute(`SELECT id FROM [${table}] ORDER BY id`)).toEqual([{ id: 1 }, { id: 3 }])
          })))

      it.effect("rolls back on interruption", () =>
        withTable("id int PRIMARY KEY", (table) =>
          Effect.gen(function*() {
            const inserted = yield* Deferred.make<void>()
            const fiber = yield* Effect.fork(Db.withTransaction(Effect.gen(function*() {
              yield* Db.execute(`INSERT INTO [${table}] VALUES (?)`, [1])
              yield* Deferred.succeed(inserted, undefined)
              return yield* Effect.never
            })))
            yield* Deferred.await(inserted)
            yield* Fiber.interrupt(fiber)
            expect(yield* Db.execute(`SELECT id FROM [${table}]`)).toEqual([])
            // the connection came back clean: a new transaction starts normally
            yield* Db.withTransaction(Db.execute(`INSERT INTO [${table}] VALUES (?)`, [2]))
            expect(yield* Db.execute(`SELECT id FROM [${table}]`)).toEqual([{ id: 2 }])
          })))

      it.effect("applies read-only transactions", () =>
        withTable("id int PRIMARY KEY", (table) =>
          Effect.gen(function*() {
            const error = yield* Effect.flip(
              Db.withTransaction(Db.execute(`INSERT INTO [${table}] VALUES (?)`, [1]), { readOnly: true })
            )
            expect(error._tag).toBe("QueryError")
            expect((error as DbError.QueryError).category).toBe("permission")
            expect(yield* Db.execute(`SELECT id FROM [${table}]`)).toEqual([])
          })))

      it.effect("fails with typed errors carrying the engine code", () =>
        Effect.gen(function*() {
          const parent = uniqueName("conf_parent")
          const child = uniqueName("conf_child")
          yield* Db.execute(`CREATE TABLE [${parent}] (id int PRIMARY KEY)`)
          yield* Db.execute(
            `CREATE TABLE [${child}] (id int PRIMARY KEY, parent_id int, FOREIGN KEY (parent_id) REFERENCES [${parent}] (id))`
          )
          yield* Effect.gen(function*() {
            yield* Db.execute(`INSERT INTO [${parent}] VALUES (?)`, [1])
            const unique = yield* Effect.flip(Db.execute(`INSERT INTO [${parent}] VALUES (?)`, [1]))
            expect(unique).toMatchObject({ _tag: "ConstraintViolation", kind: "unique", code: profile.codes.unique })
            const fk = yield* Effect.flip(Db.execute(`INSERT INTO [${child}] VALUES (?, ?)`, [1, 42]))
            expect(fk).toMatchObject({ _tag: "ConstraintViolation", kind: "foreignKey", code: profile.codes.foreignKey })
            const syntax = yield* Effect.flip(Db.execute("SELEC 1"))
            expect(syntax).toMatchObject({ _tag: "QueryError", category: "syntax", code: profile.codes.syntax })
            const missing = yield* Effect.flip(Db.execute(`SELECT * FROM [${uniqueName("missing")}]`))
            expect(missing).toMatchObject({ _tag: "QueryError", code: profile.codes.missingTable })
            for (const error of [unique, fk, syntax, missing]) expect(error.transient).toBe(false)
            expect(yield* Db.execute("SELECT 1 AS ok")).toEqual([{ ok: 1 }])
          }).pipe(Effect.ensuring(Effect.ignore(Effect.zipRight(
            Db.execute(`DROP TABLE IF EXISTS [${child}]`),
            Db.execute(`DROP TABLE IF EXISTS [${parent}]`)
          ))))
        }))

      it.effect("executeMany inserts every row in one transaction", () =>
        withTable("id int PRIMARY KEY, v varchar(10)", (table) =>
          Effect.gen(function*() {
            const rows = Array.from({ length: 50 }, (_, i) => [i, `v${i}`])
            expect(yield* Db.executeMany(`INSERT INTO [${table}] VALUES (?, ?)`, rows)).toBe(50)
            const dup = yield* Effect.flip(Db.executeMany(`INSERT INTO [${table}] VALUES (?, ?)`, [[100, "x"], [0, "dup"]]))
            expect(dup._tag).toBe("ConstraintViolation")
            const [count] = yield* Db.execute<{ n: unknown }>(`SELECT count(*) AS n FROM [${table}]`)
            expect(Number(count!.n)).toBe(50)
          })))

      it.effect("sql templates of @effect/sql run on the same pool and join transactions", () =>
        withTable("id int PRIMARY KEY", (table) =>
          Effect.gen(function*() {
            const sql = yield* SqlClient.SqlClient
            yield* Db.withTransaction(Effect.gen(function*() {
              yield* Db.execute(`INSERT INTO [${table}] VALUES (?)`, [7])
              const seen = yield* sql<{ id: number }>`SELECT id FROM ${sql(table)}`
              expect(seen).toEqual([{ id: 7 }])
            }))
          })))

      it.effect("invalidations are announced once the write commits, never after a rollback, from Db calls and sql templates", () =>
        withTable("id int PRIMARY KEY", (table) =>
          Effect.gen(function*() {
            const db = yield* Db
            const sql = yield* SqlClient.SqlClient
            const heard: Array<unknown> = []
            const unsubscribe = db.invalidations.subscribe((keys) => heard.push(keys))
            yield* Effect.gen(function*() {
              // autocommit: announced when the statement succeeds; a failed one announces nothing
              yield* Db.execute(`INSERT INTO [${table}] VALUES (?)`, [1], { invalidates: { [table]: [1] } })
              expect(heard).toEqual([{ [table]: [1] }])
              yield* Effect.flip(Db.execute(`INSERT INTO [${table}] VALUES (?)`, [1], { invalidates: ["never"] }))
              expect(heard).toHaveLength(1)
              // in a transaction: nothing until COMMIT, then everything it collected
              yield* Db.withTransaction(Effect.gen(function*() {
                yield* Db.execute(`INSERT INTO [${table}] VALUES (?)`, [2], { invalidates: { [table]: [2] } })
                yield* Reactivity.mutation(sql`INSERT INTO ${sql(table)} VALUES (${3})`, [table])
                yield* Db.invalidate(["extra"])
                expect(heard).toHaveLength(1)
              }))
              expect(heard.slice(1)).toEqual([{ [table]: [2] }, [table], ["extra"]])
              // rolled back: nothing
              yield* Effect.exit(Db.withTransaction(Effect.zipRight(
                Db.execute(`INSERT INTO [${table}] VALUES (?)`, [4], { invalidates: ["rolled back"] }),
                Effect.fail("nope")
              )))
              yield* Effect.exit(sql.withTransaction(Effect.zipRight(
                Reactivity.mutation(sql`INSERT INTO ${sql(table)} VALUES (${5})`, ["rolled back too"]),
                Effect.fail("nope")
              )))
              expect(heard).toHaveLength(4)
              // the transaction after a rollback on the same connection starts clean
              yield* Db.withTransaction(Db.invalidate(["after"]))
              expect(heard.slice(4)).toEqual([["after"]])
              // through a scoped transaction's handle: at the scope's COMMIT
              yield* Effect.scoped(Effect.gen(function*() {
                const tx = yield* Db.transaction
                yield* tx.execute(`INSERT INTO [${table}] VALUES (?)`, [6], { invalidates: ["handle"] })
                yield* tx.executeMany(`INSERT INTO [${table}] VALUES (?)`, [[7]], { invalidates: ["many"] })
                expect(heard).toHaveLength(5)
              }))
              expect(heard.slice(5)).toEqual([["handle"], ["many"]])
            }).pipe(Effect.ensuring(Effect.sync(unsubscribe)))
          })))

      it.effect("insertMany chunks multi-row inserts in one transaction and reports keys where it can", () =>
        withTable(`id ${profile.types.serial} PRIMARY KEY, v varchar(20)`, (table) =>
          Effect.gen(function*() {
            const rows = Array.from({ length: 2_500 }, (_, i) => ({ v: `row ${i}` }))
            const result = yield* Db.insertMany(table, rows, { chunkSize: 1_000, returning: "id" })
            expect(result.inserted).toBe(2_500)
            if (profile.name !== "mysql" || result.keys.length > 0) {
              expect(result.keys.length).toBe(2_500)
              expect(new Set(result.keys.map(String)).size).toBe(2_500)
            }
            const [count] = yield* Db.execute<{ n: unknown }>(`SELECT count(*) AS n FROM [${table}]`)
            expect(Number(count!.n)).toBe(2_500)
            // rows of different shapes are rejected before anything is sent
            const bad = yield* Effect.flip(Db.insertMany(table, [{ v: "a" }, { w: "b" }]))
            expect(bad).toMatchObject({ _tag: "InvalidQuery", reason: "invalidArgument" })
            // a failing chunk rolls back every chunk
            const dup = yield* Effect.flip(Db.insertMany(table, [{ id: 100_000, v: "x" }, { id: 100_000, v: "y" }]))
            expect(dup._tag).toBe("ConstraintViolation")
            const [after] = yield* Db.execute<{ n: unknown }>(`SELECT count(*) AS n FROM [${table}]`)
            expect(Number(after!.n)).toBe(2_500)
            // inside a transaction it joins it, and goes with its rollback
            const failed = yield* Effect.exit(Db.withTransaction(Effect.zipRight(
              Db.insertMany(table, [{ v: "in tx" }]),
              Effect.fail("abort" as const)
            )))
            expect(Exit.isFailure(failed)).toBe(true)
            const [rolledBack] = yield* Db.execute<{ n: unknown }>(`SELECT count(*) AS n FROM [${table}] WHERE v = ?`, ["in tx"])
            expect(Number(rolledBack!.n)).toBe(0)
          })))

      it.effect("a bulk load refuses a bad row far into its rows with a typed error, storing nothing, in a transaction or not", () =>
        withTable(`id ${profile.types.serial} PRIMARY KEY, v varchar(20)`, (table) =>
          Effect.gen(function*() {
            const db = yield* Db
            const rows: Array<Record<string, unknown>> = Array.from({ length: 5_000 }, (_, i) => ({ v: `row ${i}` }))
            const undef = [...rows.slice(0, 4_500), { v: undefined }, ...rows.slice(4_500)]
            const shape = [...rows.slice(0, 4_500), { w: "other" }, ...rows.slice(4_500)]
            const refused = yield* Effect.forEach([undef, shape], (bad) => Effect.flip(Db.insertMany(table, bad, { copyThreshold: 2 })))
            expect(refused[0]).toMatchObject({ _tag: "InvalidQuery", reason: "invalidParameter" })
            expect(refused[0]!.message).toContain("row 4501: parameter 1 is undefined")
            expect(refused[1]).toMatchObject({ _tag: "InvalidQuery", reason: "invalidArgument" })
            // in a transaction: the load refused, the transaction goes on and commits what it wrote before
            const inTx = yield* Db.withTransaction(Effect.gen(function*() {
              yield* Db.execute(`INSERT INTO [${table}] (v) VALUES (?)`, ["before"])
              const error = yield* Effect.flip(Db.insertMany(table, undef, { copyThreshold: 2 }))
              yield* Db.execute(`INSERT INTO [${table}] (v) VALUES (?)`, ["after"])
              return error._tag
            }))
            expect(inTx).toBe("InvalidQuery")
            const stored = yield* Db.execute<{ v: string }>(`SELECT v FROM [${table}] ORDER BY id`)
            expect(stored.map((r) => r.v)).toEqual(["before", "after"])
            // the same rows, good, load whole; the pool lent every connection back
            const loaded = yield* Db.insertMany(table, rows, { copyThreshold: 2 })
            expect(loaded.inserted).toBe(5_000)
            expect(db.poolStats().active).toBe(0)
          })))

      it.effect("insertMany cuts statements by size too: 20 MB of rows go in, past MySQL's 16 MB packet limit", () =>
        withTable(`id ${profile.types.serial} PRIMARY KEY, body ${profile.types.text}`, (table) =>
          Effect.gen(function*() {
            const body = "x".repeat(1024 * 1024)
            const rows = Array.from({ length: 20 }, () => ({ body }))
            const result = yield* Db.insertMany(table, rows)
            expect(result.inserted).toBe(20)
            const [sum] = yield* Db.execute<{ n: unknown }>(`SELECT sum(length(body)) AS n FROM [${table}]`)
            expect(Number(sum!.n)).toBe(20 * body.length)
          })))

      it.effect("executeMany of thousands of rows takes one call and returns the affected count", () =>
        withTable("id int PRIMARY KEY, v int", (table) =>
          Effect.gen(function*() {
            const rows = Array.from({ length: 3_000 }, (_, i) => [i, i * 2])
            expect(yield* Db.executeMany(`INSERT INTO [${table}] (id, v) VALUES (?, ?)`, rows)).toBe(3_000)
            expect(yield* Db.executeMany(`UPDATE [${table}] SET v = v + 1 WHERE id = ?`, [[1], [2], [99_999]])).toBe(2)
            const [sum] = yield* Db.execute<{ s: unknown }>(`SELECT SUM(v) AS s FROM [${table}]`)
            expect(Number(sum!.s)).toBe(3_000 * 2_999 + 2)
          })))

      it.effect("stream reads a large result in chunks and releases its connection when it ends or is interrupted", () =>
        withTable("id int PRIMARY KEY", (table) =>
          Effect.gen(function*() {
            const db = yield* Db
            yield* Db.insertMany(table, Array.from({ length: 5_000 }, (_, i) => ({ id: i })))
            let seen = 0
            let max = 0
            yield* Db.stream<{ id: number }>(`SELECT id FROM [${table}] ORDER BY id`, [], { chunkSize: 100 }).pipe(
              Stream.mapChunks((chunk) => {
                max = Math.max(max, chunk.length)
                return chunk
              }),
              Stream.runForEach((row) => Effect.sync(() => void (expect(row.id).toBe(seen++)))),
            )
            expect(seen).toBe(5_000)
            expect(max).toBeLessThanOrEqual(100) // bounded: never the whole result at once
            const first = yield* Db.stream<{ id: number }>(`SELECT id FROM [${table}] ORDER BY id`).pipe(
              Stream.take(10),
              Stream.runCollect
            )
            expect(Chunk.toReadonlyArray(first).map((r) => r.id)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
            yield* Bank.eventually(Effect.sync(() => db.poolStats().active === 0), 2_000)
            expect(yield* Db.execute("SELECT 1 AS ok")).toEqual([{ ok: 1 }])
          })))

      it.effect("the statement cache hits on repeated statements and stays correct after DDL", () =>
        withTable("id int PRIMARY KEY, v int", (table) =>
          Effect.gen(function*() {
            const db = yield* Db
            yield* Db.execute(`INSERT INTO [${table}] VALUES (?, ?)`, [1, 10])
            const before = db.statementCacheStats()
            for (let i = 0; i < 20; i++) yield* Db.execute(`SELECT v FROM [${table}] WHERE id = ?`, [1])
            const after = db.statementCacheStats()
            if (profile.statementCache) {
              expect(after.hits - before.hits).toBeGreaterThanOrEqual(16) // at most one miss per pooled connection
            }
            // the table changes under prepared statements: the result follows (PostgreSQL
            // answers 0A000 "cached plan must not change result type"; the statement is re-prepared)
            for (let i = 0; i < 4; i++) yield* Db.execute(`SELECT * FROM [${table}] WHERE id = ?`, [1])
            yield* Db.execute(`ALTER TABLE [${table}] ADD COLUMN w int`)
            const rows = yield* Db.execute<Record<string, unknown>>(`SELECT * FROM [${table}] WHERE id = ?`, [1])
            expect(rows).toEqual([{ id: 1, v: 10, w: null }])
            for (let i = 0; i < 4; i++) {
              expect(yield* Db.execute<Record<string, unknown>>(`SELECT * FROM [${table}] WHERE id = ?`, [1])).toEqual(rows)
            }
          })))

      it.effect("rejects bad input with typed errors and stays healthy", () =>
        Effect.gen(function*() {
          const db = yield* Db
          for (const blank of ["", "  \n\t "]) {
            const empty = yield* Effect.flip(Db.execute(blank))
            expect(empty).toMatchObject({ _tag: "InvalidQuery", reason: "empty" })
          }
          const many = Array.from({ length: 70_000 }, (_, i) => i)
          const tooMany = yield* Effect.flip(Db.execute(`SELECT 1 WHERE 1 IN (${many.map(() => "?").join(",")})`, many))
          expect(tooMany).toMatchObject({ _tag: "InvalidQuery", reason: "tooManyParameters" })
          const big = "x".repeat(1024 * 1024 - 3) + "é✓"
          const [echo] = yield* Db.execute<{ v: string }>("SELECT ? AS v", [big])
          expect(echo!.v.length).toBe(big.length)
          expect(echo!.v === big).toBe(true)
          const nul = yield* Effect.exit(Db.execute<{ v: string }>("SELECT ? AS v", ["a\u0000b"]))
          if (profile.rejectsNulInText) {
            expect(Exit.isFailure(nul)).toBe(true)
            const error = Exit.isFailure(nul) && nul.cause._tag === "Fail" ? nul.cause.error : undefined
            expect(error).toMatchObject({ _tag: "QueryError", category: "data" })
          } else {
            expect(nul).toEqual(Exit.succeed([{ v: "a\u0000b" }]))
          }
          // undefined is no SQL value on any engine: null is. Refused before anything is sent, naming the position
          const undef = yield* Effect.flip(Db.execute("SELECT ? AS a, ? AS b", [1, undefined]))
          expect(undef).toMatchObject({ _tag: "InvalidQuery", reason: "invalidParameter" })
          expect(undef.message).toContain("parameter 2 is undefined")
          expect(yield* Db.execute("SELECT ? AS v", [null])).toEqual([{ v: null }])
          const fn = yield* Effect.flip(Db.execute("SELECT ? AS v", [() => 1]))
          expect(fn).toMatchObject({ _tag: "InvalidQuery", reason: "invalidParameter" })
          expect(fn.message).toContain("parameter 1 is a function")
          const sql = yield* SqlClient.SqlClient
          const viaSql = yield* Effect.flip(sql`SELECT ${undefined as unknown as null} AS v`)
          expect(viaSql.cause).toMatchObject({ _tag: "InvalidQuery", reason: "invalidParameter" })
          const rowsUndef = yield* Effect.flip(Db.insertMany("never_created", [{ a: 1 }, { a: undefined }]))
          expect(rowsUndef.message).toContain("row 2: parameter 1 is undefined")
          // a value of the wrong type: a typed error from the engine, or a value it converts
          yield* withTable(`id int PRIMARY KEY, n int`, (table) =>
            Effect.gen(function*() {
              const wrong = yield* Effect.exit(Db.execute(`INSERT INTO [${table}] VALUES (?, ?)`, [1, "not a number"]))
              if (Exit.isFailure(wrong)) {
                const error = wrong.cause._tag === "Fail" ? wrong.cause.error : undefined
                expect(error).toMatchObject({ _tag: "QueryError", category: "data" })
              } else {
                expect(yield* Db.execute(`SELECT n FROM [${table}]`)).toHaveLength(1)
              }
            }))
          // a hostile [identifier] is no identifier: it goes as written, and the server refuses it
          const hostile = yield* Effect.flip(Db.execute("SELECT * FROM [x\"; DROP TABLE y; --`]"))
          expect(hostile).toMatchObject({ _tag: "QueryError", category: "syntax" })
          // a hostile name the library quotes stays one identifier: the table it names does not exist
          const quoted = yield* Effect.flip(Db.insertMany("x\"; DROP TABLE y; --`", [{ a: 1 }]))
          expect(quoted).toMatchObject({ _tag: "QueryError", code: profile.codes.missingTable })
          expect(yield* Db.execute("SELECT 1 AS ok")).toEqual([{ ok: 1 }])
          expect(db.poolStats().active).toBe(0)
        }))
    }
  )

  const countConnections = profile.countConnections
  if (countConnections !== undefined) {
    describe(`conformance: ${profile.name}: pool limits and isolation`, () => {
      const limited = uniqueName(`conf_${profile.name}_lim`)
      layer(profile.layer({ alias: limited, pool: { min: 0, max: 3, acquireTimeout: 300 } }), {
        excludeTestServices: true
      })("pool of 3", (it) => {
        it.effect("20 concurrent callers never open more than 3 connections", () =>
          Effect.gen(function*() {
            let peak = 0
            const sampler = yield* Effect.fork(Effect.forever(
              Effect.flatMap(countConnections(limited), (n) => Effect.sync(() => void (peak = Math.max(peak, n))))
            ))
            yield* Effect.forEach(Array.from({ length: 20 }), () => Db.execute(profile.sleep(0.03)), {
              concurrency: 20
            })
            yield* Fiber.interrupt(sampler)
            expect(peak).toBeGreaterThan(0)
            expect(peak).toBeLessThanOrEqual(3)
          }))

        it.effect("with every connection held, a caller gets PoolTimeout within acquireTimeout + 200 ms", () =>
          Effect.gen(function*() {
            const release = yield* Deferred.make<void>()
            const held = yield* Effect.forEach([1, 2, 3], () =>
              Effect.fork(Effect.scoped(Effect.zipRight(Db.transaction, Deferred.await(release)))))
            yield* Effect.sleep(100)
            const start = Date.now()
            const error = yield* Effect.flip(Db.execute("SELECT 1"))
            expect(error).toMatchObject({ _tag: "PoolTimeout", reason: "exhausted", busy: 3 })
            expect(Date.now() - start).toBeLessThan(500)
            yield* Deferred.succeed(release, undefined)
            yield* Fiber.joinAll(held)
          }))

        it.effect("an interrupted caller waiting for a connection leaves the queue; the next caller gets the connection", () =>
          Effect.gen(function*() {
            const db = yield* Db
            const release = yield* Deferred.make<void>()
            const held = yield* Effect.forEach([1, 2, 3], () =>
              Effect.fork(Effect.scoped(Effect.zipRight(Db.transaction, Deferred.await(release)))))
            yield* Effect.sleep(50)
            const interrupted = yield* Effect.fork(Db.execute("SELECT 1 AS ok"))
            yield* Effect.sleep(20)
            expect(db.poolStats().pending).toBe(1)
            yield* Fiber.interrupt(interrupted)
            expect(db.poolStats().pending).toBe(0)
            const next = yield* Effect.fork(Db.execute("SELECT 2 AS ok"))
            yield* Effect.sleep(20)
            yield* Deferred.succeed(release, undefined)
            expect(yield* Fiber.join(next)).toEqual([{ ok: 2 }])
            yield* Fiber.joinAll(held)
            expect(db.poolStats()).toMatchObject({ active: 0, pending: 0 })
          }))

        it.effect("executeAdmitted admits an attempt before it waits for a connection and lets it go once, however it ends; a refused one runs `instead`", () =>
          Effect.gen(function*() {
            const db = yield* Db
            let inFlight = 0
            let entered = 0
            let left = 0
            let admit = true
            const admission = {
              enter: () => {
                if (!admit) return false
                entered++
                inFlight++
                return true
              },
              leave: () => {
                left++
                inFlight--
              },
              instead: () => Effect.succeed([{ instead: true }])
            }
            const executeAdmitted = db.executeAdmitted!
            const ok = yield* executeAdmitted(admission, "SELECT 1 AS ok")
            const failed = yield* Effect.flip(executeAdmitted(admission, `SELECT * FROM [${uniqueName("missing")}]`))
            // waiting for a connection, every one held: counted, and let go when interrupted
            const release = yield* Deferred.make<void>()
            const held = yield* Effect.forEach([1, 2, 3], () =>
              Effect.fork(Effect.scoped(Effect.zipRight(Db.transaction, Deferred.await(release)))))
            yield* Effect.sleep(50)
            const waiting = yield* Effect.fork(executeAdmitted(admission, "SELECT 1"))
            yield* Effect.sleep(20)
            const whileWaiting = inFlight
            yield* Fiber.interrupt(waiting)
            const afterWaiting = inFlight
            yield* Deferred.succeed(release, undefined)
            yield* Fiber.joinAll(held)
            // on the server: counted, and let go when interrupted
            const running = yield* Effect.fork(executeAdmitted(admission, profile.sleep(2)))
            yield* Effect.sleep(100)
            const whileRunning = inFlight
            yield* Fiber.interrupt(running)
            const afterRunning = inFlight
            admit = false
            const refused = yield* executeAdmitted(admission, "SELECT 1 AS ok")
            expect({ ok, failed: failed._tag, whileWaiting, afterWaiting, whileRunning, afterRunning, refused, entered, left }).toEqual({
              ok: [{ ok: 1 }],
              failed: "QueryError",
              whileWaiting: 1,
              afterWaiting: 0,
              whileRunning: 1,
              afterRunning: 0,
              refused: [{ instead: true }],
              entered: 4,
              left: 4
            })
            expect(db.poolStats()).toMatchObject({ pending: 0 })
          }))

        it.effect("whole-transaction retry: of two conflicting serializable transactions one re-runs; the result is serial", () =>
          withTable("id int PRIMARY KEY, v int NOT NULL", (table) =>
            Effect.gen(function*() {
              const db = yield* Db
              yield* Db.execute(`INSERT INTO [${table}] VALUES (?, ?)`, [1, 100])
              let attempts = 0
              const increment = (by: number, retry: boolean) =>
                Db.withTransaction(
                  Effect.gen(function*() {
                    attempts++
                    const [row] = yield* Db.execute<{ v: number }>(`SELECT v FROM [${table}] WHERE id = ?`, [1])
                    yield* Effect.sleep(100)
                    yield* Db.execute(`UPDATE [${table}] SET v = ? WHERE id = ?`, [row!.v + by, 1])
                  }),
                  { isolation: "serializable", retry }
                )
              const before = db.resilienceStats().retries
              yield* Effect.all([increment(10, true), increment(1, true)], { concurrency: 2 })
              expect(yield* Db.execute(`SELECT v FROM [${table}]`)).toEqual([{ v: 111 }])
              expect(attempts).toBe(3) // one body ran twice, never half
              expect(db.resilienceStats().retries - before).toBe(1)
              // without retry, the loser fails with a typed, transient conflict error
              const exits = yield* Effect.all([Effect.exit(increment(1, false)), Effect.exit(increment(1, false))], {
                concurrency: 2
              })
              const failures = exits.filter((e) => e._tag === "Failure")
              expect(failures.length).toBe(1)
              const error = failures[0]!._tag === "Failure" && failures[0]!.cause._tag === "Fail"
                ? failures[0]!.cause.error as DbError.DbError
                : undefined
              expect(["serialization", "deadlock"]).toContain(error?.category)
              expect(error?.transient).toBe(true)
            })))

        it.effect("isolation levels: read committed sees a concurrent commit, repeatable read does not", () =>
          withTable("id int PRIMARY KEY, v int", (table) =>
            Effect.gen(function*() {
              yield* Db.execute(`INSERT INTO [${table}] VALUES (?, ?)`, [1, 1])
              const readTwice = (isolation: "read committed" | "repeatable read", next: number) =>
                Db.withTransaction(
                  Effect.gen(function*() {
                    const [a] = yield* Db.execute<{ v: number }>(`SELECT v FROM [${table}] WHERE id = ?`, [1])
                    // a concurrent commit from another connection (outside this fiber's transaction)
                    yield* outsideTransaction(Db.execute(`UPDATE [${table}] SET v = ? WHERE id = ?`, [next, 1]))
                    const [b] = yield* Db.execute<{ v: number }>(`SELECT v FROM [${table}] WHERE id = ?`, [1])
                    return [a!.v, b!.v] as const
                  }),
                  { isolation }
                )
              expect(yield* readTwice("read committed", 2)).toEqual([1, 2])
              expect(yield* readTwice("repeatable read", 3)).toEqual([2, 2])
              expect(yield* Db.execute(`SELECT v FROM [${table}]`)).toEqual([{ v: 3 }])
            })))
      })
    })
    describe(`conformance: ${profile.name}: the breaker under load and interruption`, () => {
      const probed = uniqueName(`conf_${profile.name}_probe`)
      layer(profile.layer({
        alias: probed,
        retry: false,
        pool: { min: 0, max: 10, acquireTimeout: 2_000 },
        circuitBreaker: {
          minimumCalls: 5,
          failureRateThreshold: 0.5,
          waitInOpen: Schedule.spaced("300 millis"),
          permittedCallsInHalfOpen: 3
        }
      }), { excludeTestServices: true })("interrupted probes", (it) => {
        it.effect("probes interrupted while they run give their permits back: the breaker closes on the healthy database", () =>
          Effect.gen(function*() {
            const db = yield* Db
            // ten open connections first, so that the timeouts below are statements, not connects
            yield* Effect.forEach(Array.from({ length: 10 }), () => Db.execute(profile.sleep(0.1)), { concurrency: 10 })
            // a burst of statement timeouts opens the breaker
            yield* Effect.forEach(
              Array.from({ length: 10 }),
              () => Effect.exit(Db.execute(profile.sleep(2), [], { timeout: "50 millis" })),
              { concurrency: 10 }
            )
            expect(db.breaker!.state()).toBe("open")
            yield* Effect.sleep(400)
            // 10 calls start, the half-open probes among them, and are interrupted while they run
            const calls = yield* Effect.forEach(Array.from({ length: 10 }), () => Effect.fork(Db.execute(profile.sleep(1))))
            yield* Effect.sleep(150)
            expect(db.breaker!.state()).toBe("halfOpen")
            yield* Fiber.interruptAll(calls)
            expect(db.breaker!.stats().probesInFlight).toBe(0)
            // the next calls are probes, they succeed, and the breaker closes
            for (let i = 0; i < 3; i++) expect(yield* Db.execute("SELECT 1 AS ok")).toEqual([{ ok: 1 }])
            expect(db.breaker!.state()).toBe("closed")
          }), 30_000)
      })

      const burst = uniqueName(`conf_${profile.name}_burst`)
      layer(profile.layer({ alias: burst, retry: false, pool: { min: 0, max: 3, acquireTimeout: 300 } }), {
        excludeTestServices: true
      })("an overload burst with the default breaker", (it) => {
        it.effect("300 callers on a pool of 3 end in PoolTimeout exhausted, never open the breaker, and the next call succeeds", () =>
          Effect.gen(function*() {
            const db = yield* Db
            const exits = yield* Effect.forEach(
              Array.from({ length: 300 }),
              () => Effect.exit(Db.execute(profile.sleep(0.05))),
              { concurrency: 300 }
            )
            const failures = exits.flatMap((e) => e._tag === "Failure" && e.cause._tag === "Fail" ? [e.cause.error] : [])
            expect(failures.length).toBeGreaterThan(100)
            for (const error of failures) expect(error).toMatchObject({ _tag: "PoolTimeout", reason: "exhausted" })
            expect(db.breaker!.state()).toBe("closed")
            expect(db.breaker!.stats().failures).toBe(0)
            expect(yield* Db.execute("SELECT 1 AS ok")).toEqual([{ ok: 1 }])
          }), 30_000)
      })
    })
  } else {
    describe(`conformance: ${profile.name}: a single embedded session`, () => {
      layer(profile.layer({ alias: uniqueName("conf_single"), pool: { acquireTimeout: 300 } }), {
        excludeTestServices: true
      })("one session", (it) => {
        it.effect("concurrent transactions queue for the single session and never interleave", () =>
          withTable("id int PRIMARY KEY, writer varchar(10)", (table) =>
            Effect.gen(function*() {
              const db = yield* Db
              expect(db.poolStats().max).toBe(1)
              const writer = (name: string, base: number) =>
                Db.withTransaction(Effect.gen(function*() {
                  yield* Db.execute(`INSERT INTO [${table}] VALUES (?, ?)`, [base, name])
                  yield* Effect.sleep(30)
                  yield* Db.execute(`INSERT INTO [${table}] VALUES (?, ?)`, [base + 1, name])
                  // inside its transaction a writer sees only its own rows: the other never interleaved
                  return yield* Db.execute<{ writer: string }>(`SELECT writer FROM [${table}] WHERE writer <> ?`, [name])
                }))
              const [a, b] = yield* Effect.all([writer("a", 10), writer("b", 20)], { concurrency: 2 })
              expect(a!.length + b!.length).toBe(2) // the second saw the first's committed rows, never the reverse
              expect(Math.min(a!.length, b!.length)).toBe(0)
            })))

        it.effect("a caller waiting longer than acquireTimeout for the session gets PoolTimeout", () =>
          Effect.gen(function*() {
            const release = yield* Deferred.make<void>()
            const held = yield* Effect.fork(Effect.scoped(Effect.zipRight(Db.transaction, Deferred.await(release))))
            yield* Effect.sleep(50)
            const error = yield* Effect.flip(Db.execute("SELECT 1"))
            expect(error).toMatchObject({ _tag: "PoolTimeout", reason: "exhausted", busy: 1, max: 1 })
            yield* Deferred.succeed(release, undefined)
            yield* Fiber.join(held)
          }))

        it.effect("isolation levels are applied", () =>
          Effect.gen(function*() {
            for (const level of ["read committed", "repeatable read", "serializable"] as const) {
              const [row] = yield* Db.withTransaction(
                Db.execute<{ transaction_isolation: string }>("SHOW transaction_isolation"),
                { isolation: level }
              )
              expect(row!.transaction_isolation).toBe(level)
            }
          }))
      })
    })
  }
}

/** Runs `effect` outside the current fiber's transaction, on a connection of its own. */
const outsideTransaction = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.mapInputContext(effect, (context: Context.Context<R>) => Context.omit(SqlClient.TransactionConnection)(context) as Context.Context<R>)

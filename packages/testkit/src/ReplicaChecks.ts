/**
 * Checks of read replicas written once, run on every engine's real
 * replication by its own replicas test.
 *
 * @since 0.2.0
 */
import { Db } from "@effect-dal/core"
import type { DbError } from "@effect-dal/core"
import type * as SqlClient from "@effect/sql/SqlClient"
import { expect } from "@effect/vitest"
import type * as ConfigError from "effect/ConfigError"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import type * as Layer from "effect/Layer"
import * as Bank from "./Bank.js"

/**
 * Kills replica `index` (1-based, as in `replicationStats`) under 8 readers:
 * no read may fail, and the replica gets reads again after a restart.
 *
 * @since 0.2.0
 */
export const killedUnderLoad = (options: {
  readonly index: number
  readonly kill: Effect.Effect<void>
  readonly start: Effect.Effect<void>
}): Effect.Effect<void, DbError.DbError, Db> =>
  Effect.gen(function*() {
    const db = yield* Db
    let failed = 0
    let ok = 0
    let running = true
    const readers = yield* Effect.forEach(Array.from({ length: 8 }), () =>
      Effect.fork(Effect.gen(function*() {
        while (running) {
          const exit = yield* Effect.exit(Db.execute("SELECT 1 AS ok"))
          if (exit._tag === "Success") ok++
          else failed++
        }
      })))
    yield* Effect.sleep(500)
    yield* options.kill
    yield* Effect.sleep(1_500)
    running = false
    yield* Fiber.joinAll(readers)
    expect(failed).toBe(0)
    expect(ok).toBeGreaterThan(100)
    expect(db.replicationStats()[options.index]!.usable).toBe(false)
    yield* options.start
    yield* Bank.eventually(Effect.sync(() => db.replicationStats()[options.index]!.usable), 10_000)
    const before = db.replicationStats()[options.index]!.reads
    yield* Bank.eventually(Effect.map(Db.execute("SELECT 1"), () => db.replicationStats()[options.index]!.reads > before), 5_000)
  })

/**
 * A write through one layer, its `Db.commitToken` handed to another layer
 * with pools of its own: the read there sees the write although replay is
 * behind; a malformed token is a typed error.
 *
 * @since 0.2.0
 */
export const tokenRoundTrip = (options: {
  readonly table: string
  /** A fresh layer on the same replicated database, with the alias given. */
  readonly layer: (alias: string) => Layer.Layer<Db | SqlClient.SqlClient, ConfigError.ConfigError | DbError.DbError>
}): Effect.Effect<void, unknown> =>
  Effect.gen(function*() {
    const { layer, table } = options
    const token = yield* Effect.gen(function*() {
      yield* Db.execute(`CREATE TABLE [${table}] (v int)`)
      yield* Db.execute(`INSERT INTO [${table}] VALUES (42)`)
      return yield* Db.commitToken
    }).pipe(Effect.provide(layer("writer")))
    expect(token).toMatch(/^dal1\.[A-Za-z0-9_-]+$/)
    const rows = yield* Db.withCommitToken(token!)(Db.execute<{ v: number }>(`SELECT v FROM [${table}]`)).pipe(
      Effect.provide(layer("reader"))
    )
    expect(rows).toEqual([{ v: 42 }])
    const malformed = yield* Effect.flip(Db.withCommitToken("not-a-token")(Db.execute("SELECT 1")).pipe(Effect.provide(layer("bad"))))
    expect(malformed).toMatchObject({ _tag: "InvalidCommitToken" })
    yield* Db.execute(`DROP TABLE [${table}]`).pipe(Effect.provide(layer("cleanup")))
  })

/**
 * A transaction's BEGIN goes out with its first statement, in one flush
 * under one Sync: a failed BEGIN fails that statement, which never runs.
 * Each round trip costs the client one socket write.
 */
import { Db } from "@effect-dal/core"
import type { Driver } from "@effect-dal/core"
import { PgDatabase } from "@effect-dal/pg"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Net from "node:net"
import * as Redacted from "effect/Redacted"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { PG_URL, schemaFor, unique } from "./helpers.js"

const schema = unique("dal_pipe")
const { create, drop } = schemaFor(schema)
beforeAll(() => Effect.runPromise(create))
afterAll(() => Effect.runPromise(drop))

const run = <A, E>(effect: Effect.Effect<A, E, Db>) =>
  Effect.runPromise(Effect.provide(effect, PgDatabase.layer({ url: Redacted.make(PG_URL), alias: unique("pipe"), pool: { max: 2 } })))

/** One statement straight on the driver's connection. */
const send = (driver: Driver.DriverConnection, sql: string, params: ReadonlyArray<unknown>, prepared: boolean) =>
  Effect.async<unknown, unknown>((resume) => {
    driver.send(sql, params, "result", prepared, undefined, (exit) => resume(Exit.isSuccess(exit) ? Effect.succeed(exit.value) : Effect.failCause(exit.cause)))
  })

describe("PostgreSQL: BEGIN pipelined with the first statement", () => {
  it("one socket write per round trip: a point select, a transfer in three, a batch of 1,000 rows", async () => {
    const table = `${schema}.${unique("writes")}`
    // the driver binds each socket's write when it connects: the count is patched in before the layer opens one
    const original = Net.Socket.prototype.write
    const writes = new Map<Net.Socket, number>()
    let counting = false
    Net.Socket.prototype.write = function(this: Net.Socket, ...args: Array<any>) {
      if (counting) writes.set(this, (writes.get(this) ?? 0) + 1)
      return (original as (...args: Array<any>) => boolean).apply(this, args)
    } as typeof original
    /** The socket writes `effect` makes, after it has run once unmeasured (statements prepared, the catalog read). */
    const measured = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
      Effect.zipRight(
        effect,
        Effect.acquireUseRelease(
          Effect.sync(() => {
            writes.clear()
            counting = true
          }),
          () => effect,
          () => Effect.sync(() => (counting = false))
        ).pipe(Effect.map(() => [...writes.values()]))
      )
    try {
      const seen = await run(Effect.gen(function*() {
        yield* Db.execute(`CREATE TABLE [${table}] (id int PRIMARY KEY, balance int NOT NULL)`)
        yield* Db.execute(`INSERT INTO [${table}] SELECT g, 100 FROM generate_series(1, 2) g`)
        const point = yield* measured(Db.execute(`SELECT balance FROM [${table}] WHERE id = ?`, [1]))
        const transfer = yield* measured(Db.withTransaction(Effect.zipRight(
          Db.execute(`UPDATE [${table}] SET balance = balance - 1 WHERE id = ?`, [1]),
          Db.execute(`UPDATE [${table}] SET balance = balance + 1 WHERE id = ?`, [2])
        )))
        let next = 10
        const batch = yield* measured(Effect.suspend(() => {
          const rows = Array.from({ length: 1_000 }, () => ({ id: next++, balance: 0 }))
          return Db.insertMany(table, rows, { copyThreshold: Infinity })
        }))
        return { point, transfer, batch }
      }))
      // each on one socket; the transfer's BEGIN rides with its first UPDATE, its COMMIT goes alone
      expect(seen).toEqual({ point: [1], transfer: [3], batch: [1] })
    } finally {
      Net.Socket.prototype.write = original
    }
  })

  it("a failed BEGIN fails the statement with BEGIN's error, and the statement never runs; a good one opens the transaction", async () => {
    const table = `${schema}.${unique("t")}`
    const seen = await run(Effect.gen(function*() {
      const db = yield* Db
      yield* Db.execute(`CREATE TABLE [${table}] (id int PRIMARY KEY)`)
      const quoted = table.split(".").map((p) => `"${p}"`).join(".")
      const lease = yield* db.native.checkout
      const driver = lease.driver
      // a BEGIN the server refuses: the INSERT behind it, in the same flush, is skipped
      driver.heldBegin!.hold("BEGIN ISOLATION LEVEL NONSENSE")
      const refused = yield* Effect.flip(send(driver, `INSERT INTO ${quoted} VALUES ($1)`, [1], true))
      const afterRefusal = driver.transactionState()
      // the same prepared statement runs on its own afterwards: it was not left recorded as parsed
      yield* send(driver, `INSERT INTO ${quoted} VALUES ($1)`, [2], true)
      // a good BEGIN: the statement runs inside the transaction it opens
      driver.heldBegin!.hold("BEGIN")
      yield* send(driver, `INSERT INTO ${quoted} VALUES ($1)`, [3], true)
      const inside = driver.transactionState()
      yield* send(driver, "ROLLBACK", [], false)
      // held back and dropped: nothing was sent
      driver.heldBegin!.hold("BEGIN")
      const dropped = driver.heldBegin!.drop()
      const idle = driver.transactionState()
      yield* lease.release()
      const rows = yield* Db.execute<{ id: number }>(`SELECT id FROM [${table}] ORDER BY id`)
      return { refused: String((refused as Error).message), afterRefusal, inside, dropped, idle, rows: rows.map((r) => r.id) }
    }))
    expect(seen.refused).toContain("NONSENSE")
    expect(seen).toMatchObject({ afterRefusal: "idle", inside: "transaction", dropped: true, idle: "idle", rows: [2] })
  })

  it("transactions through Db keep their meaning: a body's failure rolls back, an empty one sends nothing, isolation applies", async () => {
    const table = `${schema}.${unique("tx")}`
    const seen = await run(Effect.gen(function*() {
      yield* Db.execute(`CREATE TABLE [${table}] (id int PRIMARY KEY)`)
      yield* Effect.flip(Db.withTransaction(Effect.zipRight(
        Db.execute(`INSERT INTO [${table}] VALUES (?)`, [1]),
        Effect.fail("body failed")
      )))
      yield* Db.withTransaction(Db.execute(`INSERT INTO [${table}] VALUES (?)`, [2]))
      yield* Db.withTransaction(Effect.void)
      const isolation = yield* Db.withTransaction(
        Db.execute<{ transaction_isolation: string }>("SHOW transaction_isolation"),
        { isolation: "serializable", readOnly: true }
      )
      const readOnly = yield* Effect.flip(Db.withTransaction(Db.execute(`INSERT INTO [${table}] VALUES (?)`, [3]), { readOnly: true }))
      const rows = yield* Db.execute<{ id: number }>(`SELECT id FROM [${table}] ORDER BY id`)
      return { rows: rows.map((r) => r.id), isolation: isolation[0]!.transaction_isolation, readOnly: readOnly._tag }
    }))
    expect(seen).toEqual({ rows: [2], isolation: "serializable", readOnly: "QueryError" })
  })

  it("a first statement without parameters goes in the simple protocol after BEGIN: several statements, and a driver-compatible pool's query", async () => {
    const table = `${schema}.${unique("simple")}`
    const seen = await run(Effect.gen(function*() {
      const db = yield* Db
      yield* Db.execute(`CREATE TABLE [${table}] (id int PRIMARY KEY)`)
      // several statements as the transaction's first: each result as outside a transaction
      const several = yield* Db.withTransaction(Db.execute(`INSERT INTO [${table}] VALUES (1); SELECT count(*)::int AS n FROM [${table}]`))
      const lease = yield* db.native.checkout
      // a driver-compatible pool's query after a held BEGIN: its row mode kept, the BEGIN in the same query
      lease.driver.heldBegin!.hold("BEGIN")
      const native = yield* lease.execute(`SELECT id FROM ${table.split(".").map((p) => `"${p}"`).join(".")}`, [], { rowMode: "array" })
      const inside = lease.driver.transactionState()
      yield* lease.execute("ROLLBACK", [], {})
      yield* lease.release()
      return { several, native: (native as { rows: unknown }).rows, inside }
    }))
    expect(seen).toEqual({ several: [[], [{ n: 1 }]], native: [[1]], inside: "transaction" })
  })

  it("COMMIT and the read after it go in one query: a failed read costs only its rows, a failed COMMIT fails alone and skips the read", async () => {
    const table = `${schema}.${unique("then")}`
    const seen = await run(Effect.gen(function*() {
      const db = yield* Db
      yield* Db.execute(`CREATE TABLE [${table}] (id int, CONSTRAINT u UNIQUE (id) DEFERRABLE INITIALLY DEFERRED)`)
      const quoted = table.split(".").map((p) => `"${p}"`).join(".")
      const lease = yield* db.native.checkout
      const driver = lease.driver
      // a read that succeeds: its rows
      yield* send(driver, "BEGIN", [], false)
      yield* send(driver, `INSERT INTO ${quoted} VALUES ($1)`, [1], true)
      const read = yield* driver.sendThenRead!("COMMIT", "SELECT 42 AS answer")
      // a read that fails after a COMMIT that went through: no rows, no error, and the insert stays
      yield* send(driver, "BEGIN", [], false)
      yield* send(driver, `INSERT INTO ${quoted} VALUES ($1)`, [2], true)
      const failedRead = yield* driver.sendThenRead!("COMMIT", "SELECT 1 / 0 AS never")
      const afterFailedRead = driver.transactionState()
      // a COMMIT that fails (a deferred unique violation): its own error, and the read never ran
      yield* send(driver, "BEGIN", [], false)
      yield* send(driver, `INSERT INTO ${quoted} VALUES ($1)`, [3], true)
      yield* send(driver, `INSERT INTO ${quoted} VALUES ($1)`, [3], true)
      const failedCommit = yield* Effect.flip(driver.sendThenRead!("COMMIT", `INSERT INTO ${quoted} VALUES (4) RETURNING id`))
      const afterFailedCommit = driver.transactionState()
      yield* lease.release()
      const rows = yield* Db.execute<{ id: number }>(`SELECT id FROM [${table}] ORDER BY id`)
      return {
        read,
        failedRead,
        afterFailedRead,
        failedCommit: (failedCommit as { _tag: string; code?: string })._tag,
        code: (failedCommit as { code?: string }).code,
        afterFailedCommit,
        rows: rows.map((r) => r.id)
      }
    }))
    expect(seen).toEqual({
      read: [{ answer: 42 }],
      failedRead: undefined,
      afterFailedRead: "idle",
      failedCommit: "ConstraintViolation",
      code: "23505",
      afterFailedCommit: "idle",
      rows: [1, 2]
    })
  })

  it("a server's error is reported once the server is ready again: the transaction state is the one after the failure, every time", async () => {
    const table = `${schema}.${unique("ready")}`
    const seen = await run(Effect.gen(function*() {
      const db = yield* Db
      yield* Db.execute(`CREATE TABLE [${table}] (id int, CONSTRAINT r UNIQUE (id) DEFERRABLE INITIALLY DEFERRED)`)
      const quoted = table.split(".").map((p) => `"${p}"`).join(".")
      const lease = yield* db.native.checkout
      const driver = lease.driver
      const states = new Map<string, number>()
      const count = (state: string) => states.set(state, (states.get(state) ?? 0) + 1)
      // the server flushes an error at once and sends its ReadyForQuery after the abort: often a later packet
      for (let i = 0; i < 200; i++) {
        yield* send(driver, "BEGIN", [], false)
        yield* Effect.flip(send(driver, "SELECT 1 / $1::int", [0], true))
        count(`inside: ${driver.transactionState()}`)
        yield* send(driver, "ROLLBACK", [], false)
        yield* send(driver, "BEGIN", [], false)
        yield* send(driver, `INSERT INTO ${quoted} VALUES ($1), ($1)`, [i], true)
        yield* Effect.flip(send(driver, "COMMIT", [], false))
        count(`commit: ${driver.transactionState()}`)
      }
      yield* lease.release()
      return Object.fromEntries(states)
    }))
    expect(seen).toEqual({ "inside: failed": 200, "commit: idle": 200 })
  })
})

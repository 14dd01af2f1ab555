/**
 * A transaction's START TRANSACTION shares one query with its first
 * statement where the text is equivalent: a refused START TRANSACTION fails
 * that statement, which never runs, and values arrive exactly as bound.
 */
import { Db } from "@effect-dal/core"
import type { Driver } from "@effect-dal/core"
import { MysqlDatabase } from "@effect-dal/mysql"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Stream from "effect/Stream"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { admin, MYSQL_URL, unique } from "./helpers.js"

const table = unique("dal_start")
beforeAll(() =>
  Effect.runPromise(admin((c) =>
    c.query(`CREATE TABLE ${table} (id int AUTO_INCREMENT PRIMARY KEY, label varchar(64), flag boolean, n bigint)`)
  ))
)
afterAll(() => Effect.runPromise(admin((c) => c.query(`DROP TABLE IF EXISTS ${table}`))))

const run = <A, E>(effect: Effect.Effect<A, E, Db>) =>
  Effect.runPromise(Effect.provide(effect, MysqlDatabase.layer({ url: MYSQL_URL, alias: unique("start"), pool: { max: 2 } })))

/** One statement straight on the driver's connection. */
const send = (driver: Driver.DriverConnection, sql: string, params: ReadonlyArray<unknown>, prepared: boolean, mode: Driver.QueryMode = "result") =>
  Effect.async<any, unknown>((resume) => {
    driver.send(sql, params, mode, prepared, undefined, (exit) => resume(Exit.isSuccess(exit) ? Effect.succeed(exit.value) : Effect.failCause(exit.cause)))
  })

/** How many prepared statements this session has executed: a statement merged with START TRANSACTION went as text. */
const executed = (driver: Driver.DriverConnection) =>
  Effect.map(
    send(driver, "SHOW SESSION STATUS LIKE 'Com_stmt_execute'", [], false, "rows"),
    (rows: Array<{ Value: string }>) => Number(rows[0]!.Value)
  )

const tricky = "it's a \\'quoted\\' \"label\" -- ; DROP TABLE x; é 🎉"

describe("MySQL: START TRANSACTION in one query with the first statement", () => {
  it("a refused START TRANSACTION fails the statement, which never runs; a good one opens the transaction with the statement inside", async () => {
    const seen = await run(Effect.gen(function*() {
      const db = yield* Db
      const lease = yield* db.native.checkout
      const driver = lease.driver
      driver.heldBegin!.hold("START TRANSACTION NONSENSE")
      const refused = yield* Effect.flip(send(driver, `INSERT INTO ${table} (label) VALUES (?)`, ["refused"], true))
      const afterRefusal = driver.transactionState()
      const before = yield* executed(driver)
      driver.heldBegin!.hold("START TRANSACTION")
      const inserted = yield* send(driver, `INSERT INTO ${table} (label, flag, n) VALUES (?, ?, ?)`, [tricky, true, 9_007_199_254_740_991], true)
      const inside = driver.transactionState()
      const merged = (yield* executed(driver)) === before
      const row = yield* send(driver, `SELECT label, flag, n FROM ${table} WHERE id = ?`, [inserted.insertId], true, "rows")
      yield* send(driver, "ROLLBACK", [], false)
      driver.heldBegin!.hold("START TRANSACTION")
      const dropped = driver.heldBegin!.drop()
      const idle = driver.transactionState()
      yield* lease.release()
      const rows = yield* Db.execute<{ label: string }>(`SELECT label FROM [${table}] WHERE label IN ('refused') OR id = ?`, [inserted.insertId])
      return { refused: String((refused as Error).message), afterRefusal, inserted, inside, merged, row, dropped, idle, rows }
    }))
    // the INSERT is valid: the syntax error is START TRANSACTION's
    expect(seen.refused).toContain("[1064]")
    expect(seen.afterRefusal).not.toBe("transaction")
    expect(seen.inserted).toMatchObject({ affected: 1 })
    expect(seen.inserted.insertId).toBeGreaterThan(0)
    expect(seen).toMatchObject({ inside: "transaction", merged: true, dropped: true, idle: "idle", rows: [] })
    expect(seen.row).toEqual([{ label: tricky, flag: 1, n: 9_007_199_254_740_991 }])
  })

  it("a statement whose text would not be equivalent (a fraction, a date, a SELECT) is prepared, after START TRANSACTION on its own", async () => {
    const seen = await run(Effect.gen(function*() {
      const db = yield* Db
      const lease = yield* db.native.checkout
      const driver = lease.driver
      const results: Array<{ merged: boolean; state: string }> = []
      for (const [sql, params] of [
        [`UPDATE ${table} SET n = n + ? WHERE id = ?`, [1.5, 0]],
        [`UPDATE ${table} SET label = ? WHERE id = ?`, [new Date(0), 0]],
        [`SELECT count(*) AS c FROM ${table} WHERE id > ?`, [0]]
      ] as const) {
        const before = yield* executed(driver)
        driver.heldBegin!.hold("START TRANSACTION")
        yield* send(driver, sql, params, true)
        const state = driver.transactionState()
        results.push({ merged: (yield* executed(driver)) === before, state })
        yield* send(driver, "ROLLBACK", [], false)
      }
      yield* lease.release()
      return results
    }))
    expect(seen).toEqual([
      { merged: false, state: "transaction" },
      { merged: false, state: "transaction" },
      { merged: false, state: "transaction" }
    ])
  })

  it("a session with NO_BACKSLASH_ESCAPES keeps its statements prepared: a backslash is stored as it was", async () => {
    const seen = await run(Effect.gen(function*() {
      const db = yield* Db
      const lease = yield* db.native.checkout
      const driver = lease.driver
      yield* send(driver, "SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')", [], false)
      const before = yield* executed(driver)
      driver.heldBegin!.hold("START TRANSACTION")
      const inserted = yield* send(driver, `INSERT INTO ${table} (label) VALUES (?)`, [tricky], true)
      const merged = (yield* executed(driver)) === before
      const row = yield* send(driver, `SELECT label FROM ${table} WHERE id = ?`, [inserted.insertId], true, "rows")
      yield* send(driver, "ROLLBACK", [], false)
      // one not to be prepared (a multi-row insert's) is not written into the merged text either
      driver.heldBegin!.hold("START TRANSACTION")
      const unprepared = yield* send(driver, `INSERT INTO ${table} (label) VALUES (?)`, [tricky], false)
      const text = yield* send(driver, `SELECT label FROM ${table} WHERE id = ?`, [unprepared.insertId], true, "rows")
      yield* send(driver, "ROLLBACK", [], false)
      // the session's mode changed: the pool closes it rather than lend it again
      yield* lease.release(true)
      return { merged, row, text }
    }))
    expect(seen).toEqual({ merged: false, row: [{ label: tricky }], text: [{ label: tricky }] })
  })

  it("transactions through Db keep their meaning: a failing first statement rolls back, a stream first sends START TRANSACTION on its own", async () => {
    const seen = await run(Effect.gen(function*() {
      const label = unique("tx")
      const [{ id }] = yield* Db.execute<{ id: number }>(`INSERT INTO [${table}] (label) VALUES (?) RETURNING id`, [label])
      // the first statement fails (duplicate key): nothing of the transaction stays
      const failed = yield* Effect.flip(Db.withTransaction(Effect.zipRight(
        Db.execute(`INSERT INTO [${table}] (id, label) VALUES (?, ?)`, [id, "duplicate"]),
        Db.execute(`UPDATE [${table}] SET label = ? WHERE id = ?`, ["changed", id])
      )))
      const committed = yield* Db.withTransaction(Effect.gen(function*() {
        const streamed = yield* Stream.runCollect(Db.stream<{ label: string }>(`SELECT label FROM [${table}] WHERE id = ?`, [id]))
        yield* Db.execute(`UPDATE [${table}] SET label = ? WHERE id = ?`, [`${label}!`, id])
        return Array.from(streamed).map((r) => r.label)
      }))
      const after = yield* Db.execute<{ label: string }>(`SELECT label FROM [${table}] WHERE id = ?`, [id])
      return { failed: failed._tag, committed, after: after.map((r) => r.label), label }
    }))
    expect(seen.failed).toBe("ConstraintViolation")
    expect(seen.committed).toEqual([seen.label])
    expect(seen.after).toEqual([`${seen.label}!`])
  })

  it("a SELECT merged with START TRANSACTION leaves the connection known to be in the transaction", async () => {
    const state = await run(Effect.gen(function*() {
      const db = yield* Db
      const lease = yield* db.native.checkout
      const driver = lease.driver
      driver.heldBegin!.hold("START TRANSACTION")
      const rows = yield* send(driver, "SELECT 1 AS one", [], false, "rows")
      const state = driver.transactionState()
      yield* send(driver, "ROLLBACK", [], false)
      const after = driver.transactionState()
      yield* lease.release()
      return { rows, state, after }
    }))
    expect(state).toEqual({ rows: [{ one: 1 }], state: "transaction", after: "idle" })
  })

  it("a transaction with an isolation level holds SET TRANSACTION and START TRANSACTION together: the first statement runs at that level", async () => {
    const label = unique("iso")
    const seen = await run(Effect.gen(function*() {
      yield* Db.execute(`INSERT INTO [${table}] (label, n) VALUES (?, 1)`, [label])
      const read = Db.execute<{ n: number }>(`SELECT n FROM [${table}] WHERE label = '${label}'`)
      const bump = admin((c) => c.query(`UPDATE ${table} SET n = n + 1 WHERE label = ?`, [label]))
      const atLevel = (isolation: "read committed" | "repeatable read") =>
        Db.withTransaction(Effect.gen(function*() {
          const first = yield* read
          yield* bump
          const second = yield* read
          // the replies of SET TRANSACTION and START TRANSACTION are not in the first statement's result
          return { first: first.map((r) => Number(r.n)), second: second.map((r) => Number(r.n)) }
        }), { isolation })
      return { committed: yield* atLevel("read committed"), repeatable: yield* atLevel("repeatable read") }
    }))
    // READ COMMITTED sees the other session's commit inside the transaction; REPEATABLE READ keeps its snapshot
    expect(seen.committed).toMatchObject({ first: [1], second: [2] })
    expect(seen.repeatable).toMatchObject({ first: [2], second: [2] })
  })

  it("a session without backslash escapes has every value bound by the server: insertMany and executeMany store strings exactly", async () => {
    const labels = [tricky, "back\\slash", "quote ' in the middle", "trailing \\"]
    const seen = await run(Effect.gen(function*() {
      yield* Db.withTransaction(Effect.gen(function*() {
        // the session's mode changes inside the transaction: its connection is closed afterwards
        yield* Db.execute("SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')")
        yield* Db.insertMany(table, labels.map((label) => ({ label, n: 1 })))
        yield* Db.executeMany(`INSERT INTO [${table}] (label, n) VALUES (?, ?)`, labels.map((label) => [label, 2]))
      }))
      const rows = yield* Db.execute<{ label: string; n: number }>(`SELECT label, n FROM [${table}] WHERE n IN (1, 2) ORDER BY id`)
      return rows.filter((r) => labels.includes(r.label))
    }))
    expect(seen).toEqual([...labels.map((label) => ({ label, n: 1 })), ...labels.map((label) => ({ label, n: 2 }))])
  })
})

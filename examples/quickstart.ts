/**
 * effect-dal quick start: a table, a few rows, a transaction that commits and
 * one that rolls back, and the same pool used through `@effect/sql`.
 *
 * Runs on the embedded PGlite by default, or on `DATABASE_URL`
 * (`postgres://…` or `mysql://…`).
 */
import { Db } from "@effect-dal/core"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import { DatabaseLive as makeDatabaseLive, engineOf } from "./DatabaseLive.js"

const DatabaseLive = makeDatabaseLive({ alias: "quickstart", pool: { min: 1, max: 5, acquireTimeout: "5 seconds" } })

const table = `quickstart_accounts_${process.pid}`

const program = Effect.gen(function*() {
  yield* Console.log(`engine: ${engineOf(process.env["DATABASE_URL"])}`)
  yield* Db.execute(`CREATE TABLE [${table}] (id int PRIMARY KEY, owner varchar(50) NOT NULL, balance int NOT NULL)`)
  yield* Console.log(`created table ${table}`)

  const inserted = yield* Db.executeMany(`INSERT INTO [${table}] (id, owner, balance) VALUES (?, ?, ?)`, [
    [1, "ada", 100],
    [2, "grace", 50]
  ])
  yield* Console.log(`inserted ${inserted} accounts`)

  // a transfer: both updates commit together when the scope closes successfully
  yield* Effect.scoped(Effect.gen(function*() {
    const tx = yield* Db.transaction
    yield* tx.execute(`UPDATE [${table}] SET balance = balance - ? WHERE id = ?`, [30, 1])
    yield* tx.execute(`UPDATE [${table}] SET balance = balance + ? WHERE id = ?`, [30, 2])
  }))
  yield* Console.log("transfer of 30 committed")

  // a failing transfer rolls back as a whole
  const failed = yield* Db.withTransaction(Effect.gen(function*() {
    yield* Db.execute(`UPDATE [${table}] SET balance = balance - ? WHERE id = ?`, [500, 1])
    return yield* Effect.fail("insufficient funds" as const)
  })).pipe(Effect.flip)
  yield* Console.log(`transfer of 500 rolled back: ${failed}`)

  // the same pool through @effect/sql
  const sql = yield* SqlClient.SqlClient
  const rows = yield* sql<{ owner: string; balance: number }>`SELECT owner, balance FROM ${sql(table)} ORDER BY id`
  for (const row of rows) yield* Console.log(`${row.owner}: ${row.balance}`)

  yield* Db.execute(`DROP TABLE [${table}]`)
  yield* Console.log("done")
})

Effect.runPromise(program.pipe(Effect.provide(DatabaseLive))).catch((error) => {
  console.error(error)
  process.exit(1)
})

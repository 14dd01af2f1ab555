/**
 * effect-dal without Effect: the Promise API. The same pool, breaker,
 * retries, timeouts and metrics as the Effect API, with `await`.
 *
 * Runs on the embedded PGlite by default, or on `DATABASE_URL`
 * (`postgres://…` or `mysql://…`).
 */
import { connect, ConstraintViolation } from "@effect-dal/promise"

const table = `promise_accounts_${process.pid}`
const db = await connect({ url: process.env["DATABASE_URL"], alias: "promise_example", pool: { max: 5 } })
try {
  await db.execute(`CREATE TABLE [${table}] (id int PRIMARY KEY, owner varchar(50) NOT NULL, balance int NOT NULL)`)
  await db.insertMany(table, [{ id: 1, owner: "ada", balance: 100 }, { id: 2, owner: "grace", balance: 50 }])

  // a transfer: COMMIT when the callback resolves; re-run on a serialization failure
  await db.transaction(async (tx) => {
    await tx.execute(`UPDATE [${table}] SET balance = balance - ? WHERE id = ?`, [30, 1])
    await tx.execute(`UPDATE [${table}] SET balance = balance + ? WHERE id = ?`, [30, 2])
  }, { isolation: "serializable", retry: true })
  console.log("transfer of 30 committed")

  // a callback that throws rolls back, and the promise rejects with what it threw
  await db.transaction(async (tx) => {
    await tx.execute(`UPDATE [${table}] SET balance = balance - ? WHERE id = ?`, [500, 1])
    throw new Error("insufficient funds")
  }).catch((error: Error) => console.log(`transfer of 500 rolled back: ${error.message}`))

  // typed errors are Error subclasses
  await db.execute(`INSERT INTO [${table}] VALUES (?, ?, ?)`, [1, "dup", 0]).catch((error) => {
    if (error instanceof ConstraintViolation) console.log(`${error._tag} (${error.kind})`)
  })

  // a per-call timeout and tags, and an AbortSignal that cancels on the server
  const rows = await db.execute<{ owner: string; balance: number }>(
    `SELECT owner, balance FROM [${table}] ORDER BY id`,
    [],
    { timeout: 5_000, tags: { operation: "list_accounts" }, signal: AbortSignal.timeout(5_000) }
  )
  for (const row of rows) console.log(`${row.owner}: ${row.balance}`)

  let streamed = 0
  for await (const _ of db.stream(`SELECT * FROM [${table}]`)) streamed++
  console.log(`streamed ${streamed} rows`)

  const statements = (await db.metrics()).find((m) => m.name === "db.client.operation.duration")
  console.log(`metrics: ${typeof statements?.value === "object" && "count" in statements.value ? "ok" : "missing"}`)
  await db.execute(`DROP TABLE [${table}]`)
} finally {
  await db.close()
}
console.log("done")

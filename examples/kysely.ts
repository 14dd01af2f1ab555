/**
 * Kysely on effect-dal: `createPgPool` (or `createMysqlPool`) where Kysely
 * wants a `pg.Pool` (or a mysql2 pool). Kysely's queries then run on our
 * pool, breaker, retries, statement cache and metrics.
 *
 * Runs on `DATABASE_URL` (`postgres://…` or `mysql://…`), PostgreSQL on
 * localhost by default.
 */
import { createMysqlPool } from "@effect-dal/mysql"
import { createPgPool } from "@effect-dal/pg"
import type { Generated } from "kysely"
import { Kysely, MysqlDialect, PostgresDialect } from "kysely"
import Cursor from "pg-cursor"

interface Database {
  [table: string]: { id: Generated<number>; owner: string; balance: number }
}

const url = process.env["DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/test"
const dialect = url.startsWith("mysql")
  ? new MysqlDialect({ pool: createMysqlPool({ uri: url, connectionLimit: 5, alias: "kysely_example" }) })
  : new PostgresDialect({ pool: createPgPool({ connectionString: url, max: 5, alias: "kysely_example" }), cursor: Cursor })
const db = new Kysely<Database>({ dialect })
const table = `kysely_accounts_${process.pid}`

try {
  await db.schema.createTable(table)
    .addColumn("id", "integer", (c) => c.primaryKey())
    .addColumn("owner", "varchar(50)", (c) => c.notNull())
    .addColumn("balance", "integer", (c) => c.notNull())
    .execute()
  await db.insertInto(table).values([{ id: 1, owner: "ada", balance: 100 }, { id: 2, owner: "grace", balance: 50 }]).execute()

  await db.transaction().execute(async (trx) => {
    await trx.updateTable(table).set((eb) => ({ balance: eb("balance", "-", 30) })).where("id", "=", 1).execute()
    await trx.updateTable(table).set((eb) => ({ balance: eb("balance", "+", 30) })).where("id", "=", 2).execute()
  })
  console.log("transfer of 30 committed")

  await db.transaction().execute(async (trx) => {
    await trx.updateTable(table).set((eb) => ({ balance: eb("balance", "-", 500) })).where("id", "=", 1).execute()
    throw new Error("insufficient funds")
  }).catch((error: Error) => console.log(`transfer of 500 rolled back: ${error.message}`))

  for await (const row of db.selectFrom(table).select(["owner", "balance"]).orderBy("id").stream()) {
    console.log(`${row.owner}: ${row.balance}`)
  }
  await db.schema.dropTable(table).execute()
} finally {
  await db.destroy()
}
console.log("done")

/**
 * Drizzle on effect-dal: `drizzle(createPgPool(…))` (node-postgres) or
 * `drizzle(createMysqlPool(…).asMysql2Pool())` (mysql2). Drizzle's queries
 * then run on our pool, breaker, retries, statement cache and metrics.
 *
 * Runs on `DATABASE_URL` (`postgres://…` or `mysql://…`), PostgreSQL on
 * localhost by default.
 */
import { createMysqlPool } from "@effect-dal/mysql"
import { createPgPool } from "@effect-dal/pg"
import { asc, eq, sql } from "drizzle-orm"
import { int, mysqlTable, varchar } from "drizzle-orm/mysql-core"
import { drizzle as drizzleMysql } from "drizzle-orm/mysql2"
import { drizzle as drizzlePg } from "drizzle-orm/node-postgres"
import { integer, pgTable, varchar as pgVarchar } from "drizzle-orm/pg-core"

const url = process.env["DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/test"
const name = `drizzle_accounts_${process.pid}`
const create = sql.raw(`CREATE TABLE ${name} (id int PRIMARY KEY, owner varchar(50) NOT NULL, balance int NOT NULL)`)
const rows = [{ id: 1, owner: "ada", balance: 100 }, { id: 2, owner: "grace", balance: 50 }]

if (url.startsWith("mysql")) {
  const pool = createMysqlPool({ uri: url, connectionLimit: 5, alias: "drizzle_example" })
  const accounts = mysqlTable(name, {
    id: int("id").primaryKey(),
    owner: varchar("owner", { length: 50 }).notNull(),
    balance: int("balance").notNull()
  })
  const db = drizzleMysql(pool.asMysql2Pool())
  try {
    await db.execute(create)
    await db.insert(accounts).values(rows)
    await db.transaction(async (tx) => {
      await tx.update(accounts).set({ balance: sql`${accounts.balance} - 30` }).where(eq(accounts.id, 1))
      await tx.update(accounts).set({ balance: sql`${accounts.balance} + 30` }).where(eq(accounts.id, 2))
    })
    console.log("transfer of 30 committed")
    await db.transaction(async (tx) => {
      await tx.update(accounts).set({ balance: sql`${accounts.balance} - 500` }).where(eq(accounts.id, 1))
      throw new Error("insufficient funds")
    }).catch((error: Error) => console.log(`transfer of 500 rolled back: ${error.message}`))
    for (const row of await db.select().from(accounts).orderBy(asc(accounts.id))) console.log(`${row.owner}: ${row.balance}`)
    await db.execute(sql.raw(`DROP TABLE ${name}`))
  } finally {
    await pool.promise().end()
  }
} else {
  const pool = createPgPool({ connectionString: url, max: 5, alias: "drizzle_example" })
  const accounts = pgTable(name, {
    id: integer("id").primaryKey(),
    owner: pgVarchar("owner", { length: 50 }).notNull(),
    balance: integer("balance").notNull()
  })
  const db = drizzlePg(pool)
  try {
    await db.execute(create)
    await db.insert(accounts).values(rows)
    await db.transaction(async (tx) => {
      await tx.update(accounts).set({ balance: sql`${accounts.balance} - 30` }).where(eq(accounts.id, 1))
      await tx.update(accounts).set({ balance: sql`${accounts.balance} + 30` }).where(eq(accounts.id, 2))
    })
    console.log("transfer of 30 committed")
    await db.transaction(async (tx) => {
      await tx.update(accounts).set({ balance: sql`${accounts.balance} - 500` }).where(eq(accounts.id, 1))
      throw new Error("insufficient funds")
    }).catch((error: Error) => console.log(`transfer of 500 rolled back: ${error.message}`))
    for (const row of await db.select().from(accounts).orderBy(asc(accounts.id))) console.log(`${row.owner}: ${row.balance}`)
    await db.execute(sql.raw(`DROP TABLE ${name}`))
  } finally {
    await pool.end()
  }
}
console.log("done")

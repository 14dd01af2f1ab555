/**
 * Kysely (`MysqlDialect`) and Drizzle (`drizzle-orm/mysql2`) run unchanged on
 * `createMysqlPool`: a realistic session each on MariaDB, with our metrics
 * showing the traffic.
 */
import { createMysqlPool } from "@effect-dal/mysql"
import { Traffic } from "@effect-dal/testkit"
import { eq, sql as dsql } from "drizzle-orm"
import { int, mysqlTable, timestamp, varchar } from "drizzle-orm/mysql-core"
import { drizzle } from "drizzle-orm/mysql2"
import type { Generated } from "kysely"
import { Kysely, MysqlDialect, sql } from "kysely"
import * as Mysql from "mysql2/promise"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { MYSQL_URL, unique } from "./helpers.js"

interface Library {
  authors: { id: Generated<number>; name: string }
  books: { id: Generated<number>; author_id: number; title: string; published: Date | null }
}

const admin = async (statement: string) => {
  const conn = await Mysql.createConnection(MYSQL_URL)
  try {
    await conn.query(statement)
  } finally {
    await conn.end()
  }
}

const createTables = async (run: (statement: string) => Promise<unknown>) => {
  await run("CREATE TABLE authors (id int AUTO_INCREMENT PRIMARY KEY, name varchar(50) NOT NULL UNIQUE)")
  await run(
    "CREATE TABLE books (id int AUTO_INCREMENT PRIMARY KEY, author_id int NOT NULL, title varchar(100) NOT NULL, published timestamp(3) NULL, FOREIGN KEY (author_id) REFERENCES authors (id))"
  )
}

describe("Kysely on createMysqlPool", () => {
  const database = unique("kysely")
  const pool = createMysqlPool({ uri: MYSQL_URL, database, connectionLimit: 4, alias: database })
  const db = new Kysely<Library>({ dialect: new MysqlDialect({ pool }) })

  beforeAll(async () => {
    await admin(`CREATE DATABASE \`${database}\``)
    await createTables((statement) => sql.raw(statement).execute(db))
  })
  afterAll(async () => {
    await db.destroy()
    await admin(`DROP DATABASE IF EXISTS \`${database}\``)
  })

  it("inserts with generated keys, joins, commits and rolls back transactions, and streams", async () => {
    const before = await Traffic.statementsSeen(pool)
    const inserted = await db.insertInto("authors").values({ name: "Ada" }).executeTakeFirstOrThrow()
    const adaId = Number(inserted.insertId)
    expect(adaId).toBeGreaterThan(0)
    const published = new Date("2024-01-02T03:04:05.678Z")
    const books = await db.insertInto("books")
      .values(Array.from({ length: 25 }, (_, i) => ({ author_id: adaId, title: `Notes ${i}`, published })))
      .executeTakeFirstOrThrow()
    expect(books.numInsertedOrUpdatedRows).toBe(25n)

    const joined = await db.selectFrom("books").innerJoin("authors", "authors.id", "books.author_id")
      .select(["authors.name", "books.title", "books.published"]).where("books.title", "=", "Notes 3").execute()
    expect(joined).toEqual([{ name: "Ada", title: "Notes 3", published }])

    await db.transaction().execute(async (trx) => {
      const grace = await trx.insertInto("authors").values({ name: "Grace" }).executeTakeFirstOrThrow()
      await trx.insertInto("books").values({ author_id: Number(grace.insertId), title: "COBOL", published: null }).execute()
    })
    const boom = new Error("rolled back")
    await expect(db.transaction().execute(async (trx) => {
      await trx.insertInto("authors").values({ name: "Edsger" }).execute()
      throw boom
    })).rejects.toBe(boom)
    const names = await db.selectFrom("authors").select("name").orderBy("name").execute()
    expect(names.map((r) => r.name)).toEqual(["Ada", "Grace"])

    const dup = await db.insertInto("authors").values({ name: "Ada" }).execute().catch((e: any) => e)
    expect(dup).toMatchObject({ code: "ER_DUP_ENTRY", _tag: "ConstraintViolation" })

    const streamed: Array<string> = []
    for await (const row of db.selectFrom("books").select("title").orderBy("id").stream()) streamed.push(row.title)
    expect(streamed).toHaveLength(26)
    expect(streamed[0]).toBe("Notes 0")
    expect(await Traffic.statementsSeen(pool) - before).toBeGreaterThanOrEqual(8)
    expect(pool.stats()!.active).toBe(0)
  })
})

describe("Drizzle on createMysqlPool", () => {
  const database = unique("drizzle")
  const pool = createMysqlPool({ uri: MYSQL_URL, database, connectionLimit: 4, alias: database })
  const authors = mysqlTable("authors", { id: int("id").primaryKey().autoincrement(), name: varchar("name", { length: 50 }).notNull() })
  const books = mysqlTable("books", {
    id: int("id").primaryKey().autoincrement(),
    authorId: int("author_id").notNull(),
    title: varchar("title", { length: 100 }).notNull(),
    published: timestamp("published", { fsp: 3 })
  })
  const db = drizzle(pool.asMysql2Pool())

  beforeAll(async () => {
    await admin(`CREATE DATABASE \`${database}\``)
    await createTables((statement) => db.execute(dsql.raw(statement)))
  })
  afterAll(async () => {
    await new Promise((resolve) => pool.end(resolve))
    await admin(`DROP DATABASE IF EXISTS \`${database}\``)
  })

  it("inserts with returned ids, joins, commits and rolls back transactions", async () => {
    const before = await Traffic.statementsSeen(pool)
    const [ada] = await db.insert(authors).values({ name: "Ada" }).$returningId()
    expect(ada!.id).toBeGreaterThan(0)
    const published = new Date("2024-01-02T03:04:05.678Z")
    await db.insert(books).values([{ authorId: ada!.id, title: "Notes", published }, { authorId: ada!.id, title: "Letters" }])

    const joined = await db.select({ name: authors.name, title: books.title, published: books.published }).from(books)
      .innerJoin(authors, eq(books.authorId, authors.id)).where(eq(books.title, "Notes"))
    expect(joined).toEqual([{ name: "Ada", title: "Notes", published }])

    await db.transaction(async (tx) => {
      const [grace] = await tx.insert(authors).values({ name: "Grace" }).$returningId()
      await tx.insert(books).values({ authorId: grace!.id, title: "COBOL" })
    })
    await expect(db.transaction(async (tx) => {
      await tx.insert(authors).values({ name: "Edsger" })
      throw new Error("rolled back")
    })).rejects.toThrow("rolled back")
    const names = await db.select({ name: authors.name }).from(authors).orderBy(authors.name)
    expect(names.map((r) => r.name)).toEqual(["Ada", "Grace"])
    expect(await db.$count(books)).toBe(3)
    expect(await Traffic.statementsSeen(pool) - before).toBeGreaterThanOrEqual(8)
    expect(pool.stats()!.active).toBe(0)
  })
})

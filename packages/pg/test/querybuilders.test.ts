/**
 * Kysely (`PostgresDialect`) and Drizzle (`drizzle-orm/node-postgres`) run
 * unchanged on `createPgPool`: a realistic session each, with our metrics
 * showing the traffic.
 */
import { createPgPool } from "@effect-dal/pg"
import { eq, sql as dsql } from "drizzle-orm"
import { drizzle } from "drizzle-orm/node-postgres"
import { integer, pgSchema, serial, text, timestamp } from "drizzle-orm/pg-core"
import type { Generated } from "kysely"
import { Kysely, PostgresDialect, sql } from "kysely"
import Cursor from "pg-cursor"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Traffic } from "@effect-dal/testkit"
import { PG_URL, unique } from "./helpers.js"

interface Library {
  authors: { id: Generated<number>; name: string }
  books: { id: Generated<number>; author_id: number; title: string; published: Date | null }
}

describe("Kysely on createPgPool", () => {
  const schema = unique("kysely")
  const pool = createPgPool({ connectionString: PG_URL, max: 4, alias: schema })
  const db = new Kysely<Library>({ dialect: new PostgresDialect({ pool, cursor: Cursor }) }).withSchema(schema)

  beforeAll(async () => {
    await db.schema.createSchema(schema).execute()
    await db.schema.createTable("authors").addColumn("id", "serial", (c) => c.primaryKey())
      .addColumn("name", "text", (c) => c.notNull().unique()).execute()
    await db.schema.createTable("books").addColumn("id", "serial", (c) => c.primaryKey())
      .addColumn("author_id", "integer", (c) => c.notNull().references("authors.id"))
      .addColumn("title", "text", (c) => c.notNull())
      .addColumn("published", "timestamptz").execute()
  })
  afterAll(async () => {
    await db.schema.dropSchema(schema).cascade().execute()
    await db.destroy()
  })

  it("inserts with returning, joins, commits and rolls back transactions, and streams", async () => {
    const before = await Traffic.statementsSeen(pool)
    const [ada] = await db.insertInto("authors").values({ name: "Ada" }).returning(["id", "name"]).execute()
    expect(ada).toEqual({ id: expect.any(Number), name: "Ada" })
    const published = new Date("2024-01-02T03:04:05.678Z")
    const books = await db.insertInto("books")
      .values(Array.from({ length: 25 }, (_, i) => ({ author_id: ada!.id, title: `Notes ${i}`, published })))
      .returning("id").execute()
    expect(books).toHaveLength(25)

    const joined = await db.selectFrom("books").innerJoin("authors", "authors.id", "books.author_id")
      .select(["authors.name", "books.title", "books.published"]).where("books.title", "=", "Notes 3").execute()
    expect(joined).toEqual([{ name: "Ada", title: "Notes 3", published }])

    await db.transaction().execute(async (trx) => {
      const [grace] = await trx.insertInto("authors").values({ name: "Grace" }).returning("id").execute()
      await trx.insertInto("books").values({ author_id: grace!.id, title: "COBOL", published: null }).execute()
    })
    const boom = new Error("rolled back")
    await expect(db.transaction().execute(async (trx) => {
      await trx.insertInto("authors").values({ name: "Edsger" }).execute()
      throw boom
    })).rejects.toBe(boom)
    const names = await db.selectFrom("authors").select("name").orderBy("name").execute()
    expect(names.map((r) => r.name)).toEqual(["Ada", "Grace"])

    // a constraint error reaches Kysely as pg's error, and the pool carries on
    const dup = await db.insertInto("authors").values({ name: "Ada" }).execute().catch((e: any) => e)
    expect(dup).toMatchObject({ code: "23505", _tag: "ConstraintViolation" })

    const streamed: Array<string> = []
    for await (const row of db.selectFrom("books").select("title").orderBy("id").stream(10)) streamed.push(row.title)
    expect(streamed).toHaveLength(26)
    expect(streamed[0]).toBe("Notes 0")

    const counted = await db.selectFrom("books").select(sql<string>`count(*)`.as("n")).executeTakeFirstOrThrow()
    expect(Number(counted.n)).toBe(26)
    expect(await Traffic.statementsSeen(pool) - before).toBeGreaterThanOrEqual(10)
    expect(pool.stats()!.active).toBe(0)
  })
})

describe("Drizzle on createPgPool", () => {
  const schemaName = unique("drizzle")
  const pool = createPgPool({ connectionString: PG_URL, max: 4, alias: schemaName })
  const s = pgSchema(schemaName)
  const authors = s.table("authors", { id: serial("id").primaryKey(), name: text("name").notNull().unique() })
  const books = s.table("books", {
    id: serial("id").primaryKey(),
    authorId: integer("author_id").notNull().references(() => authors.id),
    title: text("title").notNull(),
    published: timestamp("published", { withTimezone: true })
  })
  const db = drizzle(pool)

  beforeAll(async () => {
    await db.execute(dsql.raw(`CREATE SCHEMA "${schemaName}"`))
    await db.execute(dsql.raw(`CREATE TABLE "${schemaName}".authors (id serial PRIMARY KEY, name text NOT NULL UNIQUE)`))
    await db.execute(dsql.raw(
      `CREATE TABLE "${schemaName}".books (id serial PRIMARY KEY, author_id int NOT NULL REFERENCES "${schemaName}".authors (id), title text NOT NULL, published timestamptz)`
    ))
  })
  afterAll(async () => {
    await db.execute(dsql.raw(`DROP SCHEMA "${schemaName}" CASCADE`))
    await pool.end()
  })

  it("inserts with returning, joins, commits and rolls back transactions", async () => {
    const before = await Traffic.statementsSeen(pool)
    const [ada] = await db.insert(authors).values({ name: "Ada" }).returning()
    expect(ada).toEqual({ id: expect.any(Number), name: "Ada" })
    const published = new Date("2024-01-02T03:04:05.678Z")
    await db.insert(books).values([{ authorId: ada!.id, title: "Notes", published }, { authorId: ada!.id, title: "Letters", published: null }])

    const joined = await db.select({ name: authors.name, title: books.title, published: books.published }).from(books)
      .innerJoin(authors, eq(books.authorId, authors.id)).where(eq(books.title, "Notes"))
    expect(joined).toEqual([{ name: "Ada", title: "Notes", published }])

    await db.transaction(async (tx) => {
      const [grace] = await tx.insert(authors).values({ name: "Grace" }).returning({ id: authors.id })
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

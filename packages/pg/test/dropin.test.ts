/**
 * An `@effect/sql-pg` user's test suite, unchanged but for one line: the
 * layer is `PgDatabase.layer` instead of `PgClient.layer`.
 */
import { describe, expect, it } from "@effect/vitest"
import { Db } from "@effect-dal/core"
import { PgDatabase } from "@effect-dal/pg"
import * as Model from "@effect/sql/Model"
import * as SqlClient from "@effect/sql/SqlClient"
import * as SqlResolver from "@effect/sql/SqlResolver"
import * as Statement from "@effect/sql/Statement"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as PgMigrator from "@effect/sql-pg/PgMigrator"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import * as String from "effect/String"
import { admin, PG_URL, unique } from "./helpers.js"

const schema = unique("dropin")

// the one-line switch: PgClient.layer({ url, ... }) becomes PgDatabase.layer({ url, ... })
const ClientLive = PgDatabase.layer({
  url: Redacted.make(PG_URL.replace("postgres@", "postgres:secret@")),
  maxConnections: 3,
  transformResultNames: String.snakeToCamel,
  transformQueryNames: String.camelToSnake
})

const setup = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`CREATE SCHEMA IF NOT EXISTS ${sql(schema)}`
})

describe("drop-in for @effect/sql-pg", () => {
  it.live("provides PgClient with its config populated from the url, and maps the stock pool options", () =>
    Effect.gen(function*() {
      const pg = yield* PgClient.PgClient
      expect(pg.config).toMatchObject({ host: "127.0.0.1", port: 5432, database: "test", username: "postgres", maxConnections: 3 })
      expect(Redacted.value(pg.config.password!)).toBe("secret")
      expect(Redacted.value(pg.config.url!)).toContain("postgres:secret@")
      const db = yield* Db
      expect(db.poolStats().max).toBe(3)
      expect(yield* SqlClient.SqlClient).toBe(pg)
    }).pipe(Effect.provide(ClientLive)))

  it.live("sql helpers, onDialect, transforms and withoutTransforms work unchanged", () =>
    Effect.gen(function*() {
      yield* setup
      const sql = yield* SqlClient.SqlClient
      const table = sql(`${schema}.people`)
      yield* sql`CREATE TABLE ${table} (id serial PRIMARY KEY, first_name text NOT NULL, age int NOT NULL)`
      const inserted = yield* sql<{ id: number; firstName: string }>`INSERT INTO ${table} ${
        sql.insert([{ firstName: "Ada", age: 36 }, { firstName: "Grace", age: 45 }])
      } RETURNING *`
      expect(inserted.map((r) => r.firstName)).toEqual(["Ada", "Grace"])
      yield* sql`UPDATE ${table} SET ${sql.update({ age: 37 })} WHERE ${sql.and([sql`first_name = ${"Ada"}`, sql`age = ${36}`])}`
      yield* sql`UPDATE ${table} SET age = data.age::int FROM ${
        sql.updateValues([{ firstName: "Grace", age: 46 }], "data")
      } WHERE ${table}.first_name = data.first_name`
      const rows = yield* sql<{ firstName: string; age: number }>`SELECT first_name, age FROM ${table} WHERE ${
        sql.or([sql.in("first_name", ["Ada"]), sql`age > ${40}`])
      } ORDER BY id`
      expect(rows).toEqual([{ firstName: "Ada", age: 37 }, { firstName: "Grace", age: 46 }])
      const raw = yield* sql.withoutTransforms()<{ first_name: string }>`SELECT first_name FROM ${table} ORDER BY id LIMIT 1`
      expect(raw).toEqual([{ first_name: "Ada" }])
      const dialect = yield* sql.onDialect({
        pg: () => Effect.succeed("pg"),
        mysql: () => Effect.succeed("mysql"),
        sqlite: () => Effect.succeed("sqlite"),
        mssql: () => Effect.succeed("mssql"),
        clickhouse: () => Effect.succeed("clickhouse")
      })
      expect(dialect).toBe("pg")
    }).pipe(Effect.provide(ClientLive)))

  it.live("multi-statement queries return each result set in order; jsonb parameters round-trip", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const pg = yield* PgClient.PgClient
      const results = yield* sql.unsafe("SELECT 1 AS one; SELECT 2 AS two")
      expect(results).toEqual([[{ one: 1 }], [{ two: 2 }]])
      const [row] = yield* sql<{ doc: unknown }>`SELECT ${pg.json({ a: [1, "two"], b: { c: null } })}::jsonb AS doc`
      expect(row!.doc).toEqual({ a: [1, "two"], b: { c: null } })
    }).pipe(Effect.provide(ClientLive)))

  it.live("sql.reserve: an interrupted statement is cancelled server-side and the same connection answers the next query", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* Effect.scoped(Effect.gen(function*() {
        const conn = yield* sql.reserve
        const [before] = yield* conn.execute("SELECT pg_backend_pid() AS pid", [], undefined)
        const slow = yield* Effect.fork(conn.execute("SELECT pg_sleep(10)", [], undefined))
        yield* Effect.sleep(200)
        const start = Date.now()
        yield* Fiber.interrupt(slow)
        expect(Date.now() - start).toBeLessThan(1_000)
        const [after] = yield* conn.execute("SELECT pg_backend_pid() AS pid", [], undefined)
        expect(after).toEqual(before)
        const active = yield* admin(async (c) =>
          (await c.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(10)' AND state = 'active'")).rows[0].n
        )
        expect(active).toBe(0)
      }))
    }).pipe(Effect.provide(ClientLive)))

  it.live(".stream reads through a cursor; a transformer sees each statement exactly once", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const ids = yield* sql<{ n: number }>`SELECT generate_series(1, 1000) AS n`.stream.pipe(
        Stream.map((r) => r.n),
        Stream.runCollect
      )
      expect(ids.length).toBe(1000)
      const seen: Array<string> = []
      const logging: Statement.Statement.Transformer = (self, _sql, _context, span) =>
        Effect.sync(() => {
          seen.push(self.compile()[0])
          void span
          return self
        })
      yield* sql`SELECT ${1} AS a`.pipe(Statement.withTransformer(logging))
      yield* sql`SELECT ${2} AS b`.pipe(Statement.withTransformer(logging))
      expect(seen).toEqual(["SELECT $1 AS a", "SELECT $1 AS b"])
    }).pipe(Effect.provide(ClientLive)))

  it.live("Model.makeRepository, makeDataLoaders and SqlResolver batching", () =>
    Effect.gen(function*() {
      yield* setup
      const sql = yield* SqlClient.SqlClient
      const tableName = `${schema}.users`
      yield* sql`CREATE TABLE ${sql(tableName)} (id serial PRIMARY KEY, display_name text NOT NULL)`
      class User extends Model.Class<User>("User")({
        id: Model.Generated(Schema.Number),
        displayName: Schema.String
      }) {}
      const repo = yield* Model.makeRepository(User, { tableName, spanPrefix: "Users", idColumn: "id" })
      const ada = yield* repo.insert(User.insert.make({ displayName: "Ada" }))
      expect(ada.displayName).toBe("Ada")
      const updated = yield* repo.update(User.update.make({ id: ada.id, displayName: "Ada L." }))
      expect(updated.displayName).toBe("Ada L.")
      const found = yield* repo.findById(ada.id)
      expect(found._tag === "Some" && found.value.displayName).toBe("Ada L.")
      yield* repo.delete(ada.id)
      expect((yield* repo.findById(ada.id))._tag).toBe("None")

      const loaders = yield* Model.makeDataLoaders(User, { tableName, spanPrefix: "UserLoaders", idColumn: "id", window: "10 millis" })
      const many = yield* Effect.forEach(["a", "b", "c"], (n) => loaders.insert(User.insert.make({ displayName: n })), {
        concurrency: "unbounded"
      })
      expect(many.map((u) => u.displayName).sort()).toEqual(["a", "b", "c"])

      let batches = 0
      const byId = yield* SqlResolver.findById("UserById", {
        Id: Schema.Number,
        Result: Schema.Struct({ id: Schema.Number, displayName: Schema.String }),
        ResultId: (r) => r.id,
        execute: (ids) => {
          batches++
          return sql`SELECT id, display_name FROM ${sql(tableName)} WHERE ${sql.in("id", ids)}`
        }
      })
      const results = yield* Effect.forEach(many, (u) => byId.execute(u.id), { concurrency: "unbounded", batching: true })
      expect(results.map((r) => r._tag)).toEqual(["Some", "Some", "Some"])
      expect(batches).toBe(1)
    }).pipe(Effect.scoped, Effect.provide(ClientLive)))

  it.live("Model.makeRepository and makeDataLoaders without transforms", () =>
    Effect.gen(function*() {
      yield* setup
      const sql = yield* SqlClient.SqlClient
      const tableName = `${schema}.plain_users`
      yield* sql`CREATE TABLE ${sql(tableName)} (id serial PRIMARY KEY, "displayName" text NOT NULL)`
      class User extends Model.Class<User>("User")({
        id: Model.Generated(Schema.Number),
        displayName: Schema.String
      }) {}
      const repo = yield* Model.makeRepository(User, { tableName, spanPrefix: "PlainUsers", idColumn: "id" })
      const ada = yield* repo.insert(User.insert.make({ displayName: "Ada" }))
      yield* repo.update(User.update.make({ id: ada.id, displayName: "Ada L." }))
      const found = yield* repo.findById(ada.id)
      expect(found._tag === "Some" && found.value.displayName).toBe("Ada L.")
      yield* repo.delete(ada.id)
      expect((yield* repo.findById(ada.id))._tag).toBe("None")
      const loaders = yield* Model.makeDataLoaders(User, { tableName, spanPrefix: "PlainLoaders", idColumn: "id", window: "10 millis" })
      const [a, b] = yield* Effect.all([
        loaders.insert(User.insert.make({ displayName: "x" })),
        loaders.insert(User.insert.make({ displayName: "y" }))
      ], { concurrency: 2 })
      const [fa, fb] = yield* Effect.all([loaders.findById(a!.id), loaders.findById(b!.id)], { concurrency: 2 })
      expect([fa!._tag, fb!._tag]).toEqual(["Some", "Some"])
    }).pipe(Effect.scoped, Effect.provide(PgDatabase.layer({ url: PG_URL }))))

  it.live("PgMigrator runs migrations on our pool", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const table = unique("migrated")
      const ran = yield* PgMigrator.run({
        loader: PgMigrator.fromRecord({
          "0001_create": Effect.flatMap(SqlClient.SqlClient, (s) => s`CREATE TABLE ${s(table)} (id int)`)
        }),
        table: unique("migrations")
      })
      expect(ran.map(([id, name]) => `${id}_${name}`)).toEqual(["1_create"])
      expect(yield* sql`SELECT count(*)::int AS n FROM ${sql(table)}`).toEqual([{ n: 0 }])
      yield* sql`DROP TABLE ${sql(table)}`
    }).pipe(Effect.provide(Layer.merge(ClientLive, NodeContext.layer))))

  it.live("interplay: Db.withTransaction and sql.withTransaction share one transaction, both ways", () =>
    Effect.gen(function*() {
      yield* setup
      const sql = yield* SqlClient.SqlClient
      const table = `${schema}.shared`
      yield* Db.execute(`CREATE TABLE [${table}] (id int)`)
      const pids = yield* Db.withTransaction(Effect.gen(function*() {
        const [a] = yield* Db.execute<{ pid: number }>("SELECT pg_backend_pid() AS pid")
        const [b] = yield* sql<{ pid: number }>`SELECT pg_backend_pid() AS pid`
        yield* sql`INSERT INTO ${sql(table)} VALUES (${1})`
        return [a!.pid, b!.pid]
      }))
      expect(pids[0]).toBe(pids[1])
      const failed = yield* Effect.exit(sql.withTransaction(Effect.gen(function*() {
        yield* Db.execute(`INSERT INTO [${table}] VALUES (?)`, [2])
        return yield* Effect.fail("rollback both")
      })))
      expect(failed._tag).toBe("Failure")
      expect(yield* Db.execute(`SELECT id FROM [${table}]`)).toEqual([{ id: 1 }])
    }).pipe(Effect.provide(ClientLive)))

  it.live("listen uses its own connection: a pool of one still serves queries; notify reaches it", () =>
    Effect.gen(function*() {
      const pg = yield* PgClient.PgClient
      const channel = unique("chan")
      const received = yield* Effect.fork(pg.listen(channel).pipe(Stream.take(2), Stream.runCollect))
      yield* Effect.sleep(300)
      expect(yield* Db.execute("SELECT 1 AS ok")).toEqual([{ ok: 1 }])
      yield* pg.notify(channel, "hello")
      yield* pg.notify(channel, "world")
      const messages = yield* Fiber.join(received)
      expect(Array.from(messages)).toEqual(["hello", "world"])
    }).pipe(Effect.provide(PgDatabase.layer({ url: PG_URL, maxConnections: 1 }))))

  it.live("a listener whose connection dies fails with a typed error", () =>
    Effect.gen(function*() {
      const pg = yield* PgClient.PgClient
      const channel = unique("dying")
      const listening = yield* Effect.fork(pg.listen(channel).pipe(Stream.runDrain))
      yield* Effect.sleep(300)
      yield* admin((c) =>
        c.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = $1", [`LISTEN "${channel}"`])
      )
      const error = yield* Effect.flip(Fiber.join(listening))
      expect(error._tag).toBe("SqlError")
      expect((error as { cause: { _tag: string } }).cause._tag).toBe("ConnectionError")
    }).pipe(Effect.provide(PgDatabase.layer({ url: PG_URL }))))
})

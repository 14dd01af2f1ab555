/**
 * An `@effect/sql-mysql2` user's test suite, unchanged but for one line: the
 * layer is `MysqlDatabase.layer` instead of `MysqlClient.layer`.
 */
import { describe, expect, it } from "@effect/vitest"
import { Db } from "@effect-dal/core"
import { MysqlDatabase } from "@effect-dal/mysql"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as MysqlClient from "@effect/sql-mysql2/MysqlClient"
import * as MysqlMigrator from "@effect/sql-mysql2/MysqlMigrator"
import * as Model from "@effect/sql/Model"
import * as SqlClient from "@effect/sql/SqlClient"
import * as SqlResolver from "@effect/sql/SqlResolver"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import * as String from "effect/String"
import { admin, MYSQL_URL, unique } from "./helpers.js"

// the one-line switch: MysqlClient.layer({ url, ... }) becomes MysqlDatabase.layer({ url, ... })
const ClientLive = MysqlDatabase.layer({
  url: Redacted.make(MYSQL_URL),
  maxConnections: 3,
  transformResultNames: String.snakeToCamel,
  transformQueryNames: String.camelToSnake
})

describe("drop-in for @effect/sql-mysql2", () => {
  it.live("provides MysqlClient with its config, and maps the stock pool options", () =>
    Effect.gen(function*() {
      const mysql = yield* MysqlClient.MysqlClient
      expect(mysql.config).toMatchObject({ host: "127.0.0.1", port: 3306, database: "test", username: "root", maxConnections: 3 })
      expect((yield* Db).poolStats().max).toBe(3)
      expect(yield* SqlClient.SqlClient).toBe(mysql)
    }).pipe(Effect.provide(ClientLive)))

  it.live("sql helpers, onDialect, transforms, withoutTransforms and multi-statement queries", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const table = sql(unique("people"))
      yield* sql`CREATE TABLE ${table} (id int AUTO_INCREMENT PRIMARY KEY, first_name varchar(50) NOT NULL, age int NOT NULL)`
      yield* sql`INSERT INTO ${table} ${sql.insert([{ firstName: "Ada", age: 36 }, { firstName: "Grace", age: 45 }])}`
      yield* sql`UPDATE ${table} SET ${sql.update({ age: 37 })} WHERE ${sql.and([sql`first_name = ${"Ada"}`, sql`age = ${36}`])}`
      const rows = yield* sql<{ firstName: string; age: number }>`SELECT first_name, age FROM ${table} WHERE ${
        sql.or([sql.in("first_name", ["Ada"]), sql`age > ${40}`])
      } ORDER BY id`
      expect(rows).toEqual([{ firstName: "Ada", age: 37 }, { firstName: "Grace", age: 45 }])
      const raw = yield* sql.withoutTransforms()<{ first_name: string }>`SELECT first_name FROM ${table} ORDER BY id LIMIT 1`
      expect(raw).toEqual([{ first_name: "Ada" }])
      expect(yield* sql.onDialectOrElse({ mysql: () => Effect.succeed("mysql"), orElse: () => Effect.succeed("other") }))
        .toBe("mysql")
      expect(yield* sql.unsafe("SELECT 1 AS one; SELECT 2 AS two")).toEqual([[{ one: 1 }], [{ two: 2 }]])
      yield* sql`DROP TABLE ${table}`
    }).pipe(Effect.provide(ClientLive)))

  it.live("sql.reserve: an interrupted statement is killed server-side and the same connection answers the next query", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* Effect.scoped(Effect.gen(function*() {
        const conn = yield* sql.reserve
        const [before] = yield* conn.execute("SELECT CONNECTION_ID() AS id", [], undefined)
        const slow = yield* Effect.fork(conn.execute("SELECT SLEEP(10)", [], undefined))
        yield* Effect.sleep(200)
        yield* Fiber.interrupt(slow)
        const [after] = yield* conn.execute("SELECT CONNECTION_ID() AS id", [], undefined)
        expect(after).toEqual(before)
        const running = yield* admin(async (c) => {
          const [r] = await c.query("SELECT count(*) AS n FROM information_schema.PROCESSLIST WHERE INFO = 'SELECT SLEEP(10)'")
          return Number((r as Array<{ n: number }>)[0]!.n)
        })
        expect(running).toBe(0)
      }))
    }).pipe(Effect.provide(ClientLive)))

  it.live("streams, Model.makeRepository, SqlResolver batching and interplay with Db", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const tableName = unique("users")
      yield* sql`CREATE TABLE ${sql(tableName)} (id int AUTO_INCREMENT PRIMARY KEY, display_name varchar(50) NOT NULL)`
      class User extends Model.Class<User>("User")({
        id: Model.Generated(Schema.Number),
        displayName: Schema.String
      }) {}
      const repo = yield* Model.makeRepository(User, { tableName, spanPrefix: "Users", idColumn: "id" })
      const ada = yield* repo.insert(User.insert.make({ displayName: "Ada" }))
      expect(ada.displayName).toBe("Ada")
      yield* repo.update(User.update.make({ id: ada.id, displayName: "Ada L." }))
      const found = yield* repo.findById(ada.id)
      expect(found._tag === "Some" && found.value.displayName).toBe("Ada L.")
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
      const results = yield* Effect.forEach([ada.id, ada.id + 100], (id) => byId.execute(id), {
        concurrency: "unbounded",
        batching: true
      })
      expect(results.map((r) => r._tag)).toEqual(["Some", "None"])
      expect(batches).toBe(1)
      const streamed = yield* sql<{ id: number }>`SELECT id FROM ${sql(tableName)}`.stream.pipe(Stream.runCollect)
      expect(streamed.length).toBe(1)
      const loaders = yield* Model.makeDataLoaders(User, { tableName, spanPrefix: "UserLoaders", idColumn: "id", window: "10 millis" })
      const [x, y] = yield* Effect.all([
        loaders.insert(User.insert.make({ displayName: "x" })),
        loaders.insert(User.insert.make({ displayName: "y" }))
      ], { concurrency: 2 })
      expect([x!.displayName, y!.displayName].sort()).toEqual(["x", "y"])
      const [fx] = yield* Effect.all([loaders.findById(x!.id)])
      expect(fx!._tag).toBe("Some")
      yield* loaders.delete(x!.id)
      yield* loaders.delete(y!.id)
      // Db.withTransaction and sql templates share one transaction
      const exit = yield* Effect.exit(Db.withTransaction(Effect.gen(function*() {
        yield* sql`INSERT INTO ${sql(tableName)} (display_name) VALUES (${"rolled back"})`
        return yield* Effect.fail("undo")
      })))
      expect(exit._tag).toBe("Failure")
      expect((yield* sql`SELECT id FROM ${sql(tableName)}`).length).toBe(1)
      yield* repo.delete(ada.id)
      yield* sql`DROP TABLE ${sql(tableName)}`
    }).pipe(Effect.scoped, Effect.provide(ClientLive)))

  it.live("MysqlMigrator runs migrations on our pool (with ddlInTransaction: \"allow\": it wraps DDL in transactions)", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const table = unique("migrated")
      const migrations = unique("migrations")
      const ran = yield* MysqlMigrator.run({
        loader: MysqlMigrator.fromRecord({
          "0001_create": Effect.flatMap(SqlClient.SqlClient, (s) => s`CREATE TABLE ${s(table)} (id int)`)
        }),
        table: migrations
      })
      expect(ran.map(([id, name]) => `${id}_${name}`)).toEqual(["1_create"])
      yield* sql`DROP TABLE ${sql(table)}`
      yield* sql`DROP TABLE ${sql(migrations)}`
    }).pipe(Effect.provide(Layer.merge(
      MysqlDatabase.layer({ url: Redacted.make(MYSQL_URL), ddlInTransaction: "allow" }),
      NodeContext.layer
    ))))

  it.live("by default, the migrator's DDL inside its transaction is refused before anything is sent", () =>
    Effect.gen(function*() {
      const table = unique("refused")
      const migrations = unique("migrations")
      const exit = yield* Effect.exit(MysqlMigrator.run({
        loader: MysqlMigrator.fromRecord({
          "0001_create": Effect.flatMap(SqlClient.SqlClient, (s) => s`CREATE TABLE ${s(table)} (id int)`)
        }),
        table: migrations
      }))
      expect(exit._tag).toBe("Failure")
      // the migrator turns a failed migration into a MigrationError defect around our SqlError
      const defect = exit._tag === "Failure" ? Cause.dieOption(exit.cause) : undefined
      const migrationError = defect?._tag === "Some" ? defect.value as { cause?: { cause?: { _tag?: string } } } : undefined
      expect(migrationError?.cause?.cause?._tag).toBe("DdlInTransaction")
      const sql = yield* SqlClient.SqlClient
      yield* sql`DROP TABLE IF EXISTS ${sql(migrations)}`
    }).pipe(Effect.provide(Layer.merge(ClientLive, NodeContext.layer))))
})

/**
 * A small program written for `@effect/sql-pg`, moved to effect-dal by
 * changing one line: the layer. Everything else (the `sql` templates, the
 * transaction, `PgClient` itself) is untouched.
 *
 *   DATABASE_URL=postgres://postgres@127.0.0.1:5432/test npx tsx examples/switch-from-pgclient.ts
 */
import { PgDatabase } from "@effect-dal/pg"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Redacted from "effect/Redacted"
import * as String from "effect/String"

const config = {
  url: Redacted.make(process.env["DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/test"),
  maxConnections: 5,
  transformResultNames: String.snakeToCamel,
  transformQueryNames: String.camelToSnake
}

// before: const SqlLive = PgClient.layer(config)
const SqlLive = PgDatabase.layer(config)

const table = `switch_notes_${process.pid}`

const program = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const pg = yield* PgClient.PgClient
  yield* sql`CREATE TABLE ${sql(table)} (id serial PRIMARY KEY, note_text text NOT NULL, meta jsonb)`
  yield* sql.withTransaction(Effect.gen(function*() {
    yield* sql`INSERT INTO ${sql(table)} ${sql.insert({ noteText: "first", meta: pg.json({ tags: ["a"] }) })}`
    yield* sql`INSERT INTO ${sql(table)} ${sql.insert({ noteText: "second", meta: pg.json({ tags: [] }) })}`
  }))
  const notes = yield* sql<{ id: number; noteText: string; meta: { tags: Array<string> } }>`SELECT * FROM ${sql(table)} ORDER BY id`
  for (const note of notes) yield* Console.log(`${note.id}: ${note.noteText} ${JSON.stringify(note.meta)}`)
  yield* sql`DROP TABLE ${sql(table)}`
  yield* Console.log(`pool max from maxConnections: ${pg.config.maxConnections}`)
})

Effect.runPromise(program.pipe(Effect.provide(SqlLive))).catch((error) => {
  console.error(error)
  process.exit(1)
})

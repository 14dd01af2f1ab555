import { PgDatabase } from "@effect-dal/pg"
import { ShardingSuite } from "@effect-dal/testkit"
import * as Effect from "effect/Effect"
import { admin, PG_URL } from "./helpers.js"

const urlOf = (database: string) => PG_URL.replace(/\/[^/]*$/, `/${database}`)

ShardingSuite.suite({
  name: "PostgreSQL",
  shards: 3,
  createDatabase: (name) => Effect.runPromise(admin((c) => c.query(`CREATE DATABASE "${name}"`))).then(() => {}),
  dropDatabase: (name) => Effect.runPromise(admin((c) => c.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`))).then(() => {}),
  layer: (database, alias) => PgDatabase.layer({ url: urlOf(database), alias, pool: { min: 1, max: 5 } }),
  currentDatabase: "SELECT current_database() AS db"
})

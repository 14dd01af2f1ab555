import { Conformance } from "@effect-dal/testkit"
import { PgDatabase } from "@effect-dal/pg"
import * as Effect from "effect/Effect"
import { backends, PG_URL } from "./helpers.js"

Conformance.conformance({
  name: "pg",
  layer: (options) => PgDatabase.layer({ url: PG_URL, ...options }),
  ...Conformance.postgres,
  countConnections: (alias) => Effect.map(backends(alias), (rows) => rows.length),
  statementCache: true,
  rejectsNulInText: true
})

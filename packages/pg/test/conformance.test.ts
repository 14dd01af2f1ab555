import { Conformance } from "@effect-dal/testkit"
import { PgDatabase } from "@effect-dal/pg"
import * as Effect from "effect/Effect"
import { backends, PG_URL } from "./helpers.js"

Conformance.conformance({
  name: "pg",
  layer: ({ alias, pool }) => PgDatabase.layer({ url: PG_URL, alias, pool }),
  types: {
    bool: "boolean",
    bigint: "bigint",
    decimal: "numeric(38, 9)",
    text: "text",
    bytes: "bytea",
    json: "jsonb",
    serial: "serial",
    timestamptz: "timestamptz"
  },
  codes: { unique: "23505", foreignKey: "23503", syntax: "42601", missingTable: "42P01" },
  sleep: (seconds) => `SELECT pg_sleep(${seconds})`,
  countConnections: (alias) => Effect.map(backends(alias), (rows) => rows.length),
  statementCache: true,
  rejectsNulInText: true
})

import { Conformance } from "@effect-dal/testkit"
import { PgliteDatabase } from "@effect-dal/pglite"

Conformance.conformance({
  name: "pglite",
  layer: ({ alias, pool }) => PgliteDatabase.layer({ alias, acquireTimeout: pool?.acquireTimeout }),
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
  countConnections: undefined,
  statementCache: false,
  rejectsNulInText: true
})

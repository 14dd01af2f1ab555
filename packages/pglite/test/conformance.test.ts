import { Conformance } from "@effect-dal/testkit"
import { PgliteDatabase } from "@effect-dal/pglite"

Conformance.conformance({
  name: "pglite",
  layer: ({ alias, pool }) => PgliteDatabase.layer({ alias, acquireTimeout: pool?.acquireTimeout }),
  ...Conformance.postgres,
  countConnections: undefined,
  statementCache: false,
  rejectsNulInText: true
})

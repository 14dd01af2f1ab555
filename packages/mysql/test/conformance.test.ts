import { Conformance } from "@effect-dal/testkit"
import { MysqlDatabase } from "@effect-dal/mysql"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { MYSQL_URL, scopedDatabase, threads } from "./helpers.js"

Conformance.conformance({
  name: "mysql",
  // each layer gets a database named after its alias, so its connections can be counted on the server
  layer: (options) =>
    Layer.unwrapScoped(
      Effect.as(scopedDatabase(options.alias), MysqlDatabase.layer({ url: MYSQL_URL, database: options.alias, ...options }))
    ),
  types: {
    bool: "boolean",
    bigint: "bigint",
    decimal: "decimal(38, 9)",
    text: "longtext",
    bytes: "longblob",
    json: "json",
    serial: "int AUTO_INCREMENT",
    timestamptz: "timestamp(3) NULL"
  },
  codes: { unique: "1062", foreignKey: "1452", syntax: "1064", missingTable: "1146" },
  sleep: (seconds) => `SELECT SLEEP(${seconds})`,
  countConnections: (database) => Effect.map(threads(database), (rows) => rows.length),
  statementCache: true,
  rejectsNulInText: false
})

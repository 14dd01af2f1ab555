/**
 * Two-phase commit (XA) over 2 MariaDB shards: databases on the shared
 * server, dropped afterwards.
 */
import { AtomicSuite } from "@effect-dal/testkit"
import * as Effect from "effect/Effect"
import { fileURLToPath } from "node:url"
import { MYSQL_URL, scopedDatabase, shardNodeLayer } from "./helpers.js"

const url = new URL(MYSQL_URL)

AtomicSuite.suite({
  name: "MariaDB",
  shards: 2,
  server: Effect.succeed({ host: url.hostname, port: Number(url.port || 3306) }),
  createDatabase: (_, name) => Effect.asVoid(scopedDatabase(name)),
  layer: shardNodeLayer,
  // a locking read of the whole table also locks the gap past its last row: every INSERT waits
  blockInserts: (table) => `SELECT * FROM \`${table}\` LOCK IN SHARE MODE`,
  fixture: fileURLToPath(new URL("./fixtures/coordinator.ts", import.meta.url))
})

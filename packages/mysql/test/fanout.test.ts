import { MysqlDatabase } from "@effect-dal/mysql"
import { ShardingSuite } from "@effect-dal/testkit"
import * as Effect from "effect/Effect"
import { admin, MYSQL_URL } from "./helpers.js"

ShardingSuite.suite({
  name: "MariaDB",
  shards: 2,
  createDatabase: (name) => Effect.runPromise(admin((c) => c.query(`CREATE DATABASE \`${name}\``))).then(() => {}),
  dropDatabase: (name) => Effect.runPromise(admin((c) => c.query(`DROP DATABASE IF EXISTS \`${name}\``))).then(() => {}),
  layer: (database, alias) => MysqlDatabase.layer({ url: MYSQL_URL, database, alias, pool: { min: 1, max: 5 } }),
  currentDatabase: "SELECT DATABASE() AS db"
})

import { MysqlDatabase } from "@effect-dal/mysql"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Mysql from "mysql2/promise"

/** The shared local server; tests isolate themselves by table or database name. */
export const MYSQL_URL = process.env["TEST_MYSQL_URL"] ?? "mysql://root@127.0.0.1:3306/test"

let counter = 0
/** A name unique to this process and call, usable as an identifier. */
export const unique = (prefix: string): string =>
  `${prefix}_${process.pid}_${Date.now().toString(36)}_${(counter++).toString(36)}`

/** Runs `f` on a short-lived admin connection that is not ours. */
export const admin = <A>(f: (conn: Mysql.Connection) => Promise<A>): Effect.Effect<A> =>
  Effect.promise(async () => {
    const conn = await Mysql.createConnection(MYSQL_URL)
    try {
      return await f(conn)
    } finally {
      await conn.end()
    }
  })

/**
 * The server's threads connected to `database`. MariaDB here runs without
 * performance_schema, so tests that count connections give each layer a
 * database of its own and find its threads by that.
 */
export const threads = (database: string) =>
  admin(async (c) => {
    const [rows] = await c.query(
      "SELECT ID AS id, COMMAND AS command, STATE AS state, INFO AS info FROM information_schema.PROCESSLIST WHERE DB = ?",
      [database]
    )
    return rows as Array<{ id: number; command: string; state: string | null; info: string | null }>
  })

/** A database for one layer, dropped when the scope closes. */
export const scopedDatabase = (name: string) =>
  Effect.acquireRelease(
    admin((c) => c.query(`CREATE DATABASE IF NOT EXISTS \`${name}\``)),
    () => admin((c) => c.query(`DROP DATABASE IF EXISTS \`${name}\``))
  )

/** A shard node of the 2PC suite: one database on a server, its own small pool. */
export const shardNodeLayer = (
  endpoint: { readonly host: string; readonly port: number; readonly database: string },
  alias: string,
  statementTimeout?: Duration.DurationInput
) =>
  MysqlDatabase.layer({
    url: `mysql://root@${endpoint.host}:${endpoint.port}/${endpoint.database}`,
    alias,
    pool: { min: 1, max: 10 },
    statementTimeout
  })

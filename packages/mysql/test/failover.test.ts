/**
 * The failover suite on MariaDB: a throwaway primary with a semi-sync GTID
 * replica (`AFTER_SYNC`), used as `app` (a user without READ_ONLY ADMIN, so
 * that `read_only` binds it); promoted with `STOP SLAVE; RESET SLAVE ALL;
 * SET GLOBAL read_only = OFF`, the primary fenced with `SET GLOBAL read_only = ON`.
 */
import { MysqlDatabase } from "@effect-dal/mysql"
import { FailoverSuite, MariaCluster } from "@effect-dal/testkit"
import * as Effect from "effect/Effect"
import * as Mysql from "mysql2/promise"

/** Runs `sql` on one server as root, on a connection that is not ours. */
const on = (url: string, sql: string) =>
  Effect.promise(async () => {
    const conn = await Mysql.createConnection(url)
    try {
      return (await conn.query(sql))[0] as Array<Record<string, unknown>>
    } finally {
      await conn.end()
    }
  })

FailoverSuite.failover({
  rejoins: false,
  name: "MariaDB",
  port: 26_000 + (process.pid % 99) * 4,
  portSql: "SELECT @@port AS port",
  cluster: (port, synchronous) =>
    Effect.map(MariaCluster.makeReplicated(port, [port + 1], { semiSync: synchronous }), ({ primary, replicas }) => {
      const standby = replicas[0]!
      return {
        primary,
        standby,
        fence: primary.fence,
        count: (where, table) =>
          Effect.map(
            on((where === "primary" ? primary : standby).url, `SELECT COUNT(*) AS n FROM \`${table}\` WHERE id >= 100`),
            (rows) => Number(rows[0]!.n)
          ),
        // only ours run there
        openTransactions: () =>
          Effect.map(on(standby.url, "SELECT COUNT(*) AS n FROM information_schema.INNODB_TRX"), (rows) => Number(rows[0]!.n))
      }
    }),
  layer: (cluster, alias, validationWindow) =>
    MysqlDatabase.layer({
      hosts: [cluster.primary.port, cluster.standby.port].map((port) => ({ host: "127.0.0.1", port })),
      database: "test",
      user: "app",
      targetRole: "read-write",
      alias,
      connectTimeout: "1 second",
      statementTimeout: "5 seconds",
      retry: { maxRetries: 10, base: "50 millis", cap: "500 millis" },
      pool: { min: 0, max: 16, acquireTimeout: "8 seconds", validationWindow }
    })
})

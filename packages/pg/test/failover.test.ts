/**
 * The failover suite on PostgreSQL: a throwaway primary with a synchronous
 * standby (`synchronous_standby_names = '*'`), promoted with `pg_ctl promote`,
 * the primary fenced with `default_transaction_read_only = on`.
 */
import { PgDatabase } from "@effect-dal/pg"
import { FailoverSuite, PgCluster } from "@effect-dal/testkit"
import * as Effect from "effect/Effect"
import { on } from "./helpers.js"

FailoverSuite.failover({
  rejoins: true,
  name: "PostgreSQL",
  port: 23_000 + (process.pid % 99) * 4,
  portSql: "SELECT inet_server_port() AS port",
  cluster: (port, synchronous) =>
    Effect.map(PgCluster.makeReplicated(port, [port + 1], { synchronous }), ({ primary, replicas }) => {
      const standby = replicas[0]!
      return {
        primary,
        standby,
        fence: Effect.zipRight(
          on(primary.url, "ALTER SYSTEM SET default_transaction_read_only = on"),
          on(primary.url, "SELECT pg_reload_conf()")
        ),
        count: (where, table) =>
          Effect.map(
            on((where === "primary" ? primary : standby).url, `SELECT count(*)::int AS n FROM "${table}" WHERE id >= 100`),
            (rows) => Number(rows[0]!.n)
          ),
        openTransactions: (alias) =>
          Effect.map(
            on(
              standby.url,
              "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1 AND state LIKE 'idle in transaction%'",
              [alias]
            ),
            (rows) => Number(rows[0]!.n)
          )
      }
    }),
  layer: (cluster, alias, validationWindow) =>
    PgDatabase.layer({
      hosts: [cluster.primary.port, cluster.standby.port].map((port) => ({ host: "127.0.0.1", port })),
      database: "postgres",
      user: "postgres",
      targetRole: "read-write",
      alias,
      connectTimeout: "1 second",
      statementTimeout: "5 seconds",
      retry: { maxRetries: 10, base: "50 millis", cap: "500 millis" },
      pool: { min: 0, max: 16, acquireTimeout: "8 seconds", validationWindow }
    })
})

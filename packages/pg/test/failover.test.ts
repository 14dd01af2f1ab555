/**
 * Failover on real promotions: a throwaway primary with a synchronous
 * standby (`synchronous_standby_names = '*'`), both named in one layer's
 * hosts with `targetRole: "read-write"`. The primary is killed and the
 * standby promoted under the bank workload, or the primary fenced
 * read-only while the standby is promoted.
 */
import { describe, expect, it } from "@effect/vitest"
import { Db, Metrics } from "@effect-dal/core"
import { PgDatabase } from "@effect-dal/pg"
import { Bank, PgCluster } from "@effect-dal/testkit"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Metric from "effect/Metric"
import * as Pg from "pg"
import { unique } from "./helpers.js"

const PORT = 58_000 + (process.pid % 300) * 3

/** Runs `sql` on one server, on a connection that is not ours. */
const on = (url: string, sql: string, params: Array<unknown> = []) =>
  Effect.promise(async () => {
    const client = new Pg.Client({ connectionString: url, application_name: "effect-dal-test-admin" })
    await client.connect()
    try {
      return (await client.query(sql, params)).rows
    } finally {
      await client.end()
    }
  })

const layerOn = (
  cluster: PgCluster.PgReplicatedCluster,
  alias: string,
  validationWindow: Duration.DurationInput = "100 millis"
) =>
  PgDatabase.layer({
    hosts: [cluster.primary, ...cluster.replicas].map((s) => ({ host: "127.0.0.1", port: s.port })),
    database: "postgres",
    user: "postgres",
    targetRole: "read-write",
    alias,
    connectTimeout: "1 second",
    statementTimeout: "5 seconds",
    retry: { maxRetries: 10, base: "50 millis", cap: "500 millis" },
    pool: { min: 0, max: 16, acquireTimeout: "8 seconds", validationWindow }
  })

/** Writes until one commits; when it did. */
const firstWrite = (table: string) =>
  Effect.gen(function*() {
    for (;;) {
      const exit = yield* Effect.exit(Db.execute(`INSERT INTO [${table}] VALUES (?)`, [Date.now()]))
      if (exit._tag === "Success") return Date.now()
      yield* Effect.sleep(20)
    }
  })

/** Our transactions still open on a server. */
const openTransactions = (url: string, alias: string) =>
  Effect.map(
    on(url, "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1 AND state LIKE 'idle in transaction%'", [
      alias
    ]),
    (rows) => Number(rows[0]!.n)
  )

describe("failover: PostgreSQL", () => {
  it.live("primary killed, synchronous standby promoted under the bank workload: 0 committed transfers lost", () =>
    Effect.gen(function*() {
      const cluster = yield* PgCluster.makeReplicated(PORT, [PORT + 1], { synchronous: true })
      const standby = cluster.replicas[0]!
      const alias = unique("failover")
      const probe = unique("probe")
      let promotedAt = 0
      let writesResumedAt = 0
      const report = yield* Effect.gen(function*() {
        yield* Db.execute(`CREATE TABLE [${probe}] (at bigint)`)
        // the failover, while the bank runs
        const failover = yield* Effect.fork(Effect.gen(function*() {
          yield* Effect.sleep(1_500)
          yield* cluster.primary.kill
          yield* standby.promote
          promotedAt = Date.now()
          writesResumedAt = yield* firstWrite(probe)
        }))
        const report = yield* Bank.run(unique("bank"), {
          accounts: 20,
          workers: 16,
          durationMillis: 5_000,
          callBoundMillis: 20_000,
          // the one disturbance is the failover, forked above
          chaos: { none: Effect.void },
          chaosEveryMillis: 200,
          heal: Effect.void,
          openTransactions: openTransactions(standby.url, alias)
        })
        yield* Fiber.join(failover)
        // every connection now is to the new primary
        const [where] = yield* Db.execute<{ port: number }>("SELECT inet_server_port() AS port")
        expect(Number(where!.port)).toBe(standby.port)
        // the move is counted, with how long finding the new primary took
        const db = yield* Db
        expect((yield* Metric.value(Metric.taggedWithLabels(Metrics.metrics.failovers, db.metricLabels))).count).toBe(1)
        const took = yield* Metric.value(Metric.taggedWithLabels(Metrics.metrics.failoverDuration, db.metricLabels))
        expect(took.count).toBe(1)
        expect(took.max).toBeLessThan(10)
        return report
      }).pipe(Effect.provide(layerOn(cluster, alias)))
      const resumedMillis = writesResumedAt - promotedAt
      yield* Effect.logInfo(
        `failover: writes resumed ${resumedMillis} ms after the promotion; ${report.committed} transfers committed, ` +
          `${report.outcomeUnknown} outcome unknown (reconciled), failed ${JSON.stringify(report.failedByCategory)}, ` +
          `${report.retries} retries, slowest call ${report.slowestMillis} ms`
      )
      expect(resumedMillis).toBeLessThan(5_000)
      expect(report.committed).toBeGreaterThan(0)
    }).pipe(Effect.scoped), 60_000)

  it.live("the primary fenced read-only while the standby is promoted: the pools move, no write is reported committed on it", () =>
    Effect.gen(function*() {
      const cluster = yield* PgCluster.makeReplicated(PORT + 2, [PORT + 3], { synchronous: true })
      const old = cluster.primary
      const standby = cluster.replicas[0]!
      const alias = unique("fenced")
      yield* Effect.gen(function*() {
        const table = unique("fence")
        yield* Db.execute(`CREATE TABLE [${table}] (id int PRIMARY KEY)`)
        // connections to the old primary are open and idle in the pool
        yield* Effect.forEach(Array.from({ length: 8 }, (_, i) => i), (i) => Db.execute(`INSERT INTO [${table}] VALUES (?)`, [i]), {
          concurrency: 8
        })
        // fence the old primary: it stays up, but refuses writes
        yield* on(old.url, "ALTER SYSTEM SET default_transaction_read_only = on")
        yield* on(old.url, "SELECT pg_reload_conf()")
        // the standby has everything (synchronous), and is promoted
        yield* standby.promote
        const fencedAt = Date.now()
        // writes on stale connections are refused by the old primary and run again on the new one
        const db = yield* Db
        const retriesBefore = db.resilienceStats().retries
        yield* Effect.forEach(
          Array.from({ length: 40 }, (_, i) => 100 + i),
          (i) => Db.withTransaction(Db.execute(`INSERT INTO [${table}] VALUES (?)`, [i]), { retry: true }),
          { concurrency: 8 }
        )
        expect(Date.now() - fencedAt).toBeLessThan(5_000)
        expect(db.resilienceStats().retries - retriesBefore).toBeGreaterThan(0) // refused on the fenced server, run again
        // every write reported committed is on the new primary, none on the fenced one
        const onNew = yield* on(standby.url, `SELECT count(*)::int AS n FROM "${table}" WHERE id >= 100`)
        const onOld = yield* on(old.url, `SELECT count(*)::int AS n FROM "${table}" WHERE id >= 100`)
        expect(Number(onNew[0]!.n)).toBe(40)
        expect(Number(onOld[0]!.n)).toBe(0)
        const [where] = yield* Db.execute<{ port: number }>("SELECT inet_server_port() AS port")
        expect(Number(where!.port)).toBe(standby.port)
      }).pipe(Effect.provide(layerOn(cluster, alias, "1 minute"))) // no validation: the stale connections are used
    }).pipe(Effect.scoped), 60_000)
})

/**
 * Failover on real promotions: a throwaway MariaDB primary with a
 * semi-synchronous GTID replica, both named in one layer's hosts with
 * `targetRole: "read-write"`, used as `app` (a user without READ_ONLY ADMIN,
 * so that `read_only` binds it). The primary is killed and the replica
 * promoted under the bank workload, or the primary fenced read-only while
 * the replica is promoted.
 */
import { describe, expect, it } from "@effect/vitest"
import { Db, Metrics } from "@effect-dal/core"
import { MysqlDatabase } from "@effect-dal/mysql"
import { Bank, MariaCluster } from "@effect-dal/testkit"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Metric from "effect/Metric"
import * as Mysql from "mysql2/promise"
import { unique } from "./helpers.js"

const PORT = 59_700 + (process.pid % 100) * 4

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

const layerOn = (
  cluster: MariaCluster.MariaReplicatedCluster,
  alias: string,
  validationWindow: Duration.DurationInput = "100 millis"
) =>
  MysqlDatabase.layer({
    hosts: [cluster.primary, ...cluster.replicas].map((s) => ({ host: "127.0.0.1", port: s.port })),
    database: "test",
    user: "app",
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

/** Open transactions on a server: only ours run there. */
const openTransactions = (url: string) =>
  Effect.map(on(url, "SELECT COUNT(*) AS n FROM information_schema.INNODB_TRX"), (rows) => Number(rows[0]!.n))

describe("failover: MariaDB", () => {
  it.live("primary killed, semi-sync replica promoted under the bank workload: 0 committed transfers lost", () =>
    Effect.gen(function*() {
      const cluster = yield* MariaCluster.makeReplicated(PORT, [PORT + 1], { semiSync: true })
      const replica = cluster.replicas[0]!
      const alias = unique("failover")
      const probe = unique("probe")
      let promotedAt = 0
      let writesResumedAt = 0
      const report = yield* Effect.gen(function*() {
        yield* Db.execute(`CREATE TABLE [${probe}] (at bigint)`)
        const failover = yield* Effect.fork(Effect.gen(function*() {
          yield* Effect.sleep(1_500)
          yield* cluster.primary.kill
          yield* replica.promote
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
          openTransactions: openTransactions(replica.url)
        })
        yield* Fiber.join(failover)
        const [where] = yield* Db.execute<{ port: number }>("SELECT @@port AS port")
        expect(Number(where!.port)).toBe(replica.port)
        const db = yield* Db
        expect((yield* Metric.value(Metric.taggedWithLabels(Metrics.metrics.failovers, db.metricLabels))).count).toBe(1)
        return report
      }).pipe(Effect.provide(layerOn(cluster, alias)))
      yield* Effect.logInfo(
        `MariaDB failover: writes resumed ${writesResumedAt - promotedAt} ms after the promotion; ${report.committed} transfers committed, ` +
          `${report.outcomeUnknown} outcome unknown (reconciled), failed ${JSON.stringify(report.failedByCategory)}, ` +
          `${report.retries} retries, slowest call ${report.slowestMillis} ms`
      )
      expect(writesResumedAt - promotedAt).toBeLessThan(5_000)
      expect(report.committed).toBeGreaterThan(0)
    }).pipe(Effect.scoped), 60_000)

  it.live("the primary fenced read-only while the replica is promoted: the pools move, no write is reported committed on it", () =>
    Effect.gen(function*() {
      const cluster = yield* MariaCluster.makeReplicated(PORT + 2, [PORT + 3], { semiSync: true })
      const old = cluster.primary
      const replica = cluster.replicas[0]!
      yield* Effect.gen(function*() {
        const db = yield* Db
        const table = unique("fence")
        yield* Db.execute(`CREATE TABLE [${table}] (id int PRIMARY KEY)`)
        yield* Effect.forEach(Array.from({ length: 8 }, (_, i) => i), (i) => Db.execute(`INSERT INTO [${table}] VALUES (?)`, [i]), {
          concurrency: 8
        })
        yield* old.fence
        yield* replica.promote
        const fencedAt = Date.now()
        const retriesBefore = db.resilienceStats().retries
        yield* Effect.forEach(
          Array.from({ length: 40 }, (_, i) => 100 + i),
          (i) => Db.withTransaction(Db.execute(`INSERT INTO [${table}] VALUES (?)`, [i]), { retry: true }),
          { concurrency: 8 }
        )
        expect(Date.now() - fencedAt).toBeLessThan(5_000)
        expect(db.resilienceStats().retries - retriesBefore).toBeGreaterThan(0) // refused on the fenced server, run again
        const onNew = yield* on(replica.url, `SELECT COUNT(*) AS n FROM \`${table}\` WHERE id >= 100`)
        const onOld = yield* on(old.url, `SELECT COUNT(*) AS n FROM \`${table}\` WHERE id >= 100`)
        expect(Number(onNew[0]!.n)).toBe(40)
        expect(Number(onOld[0]!.n)).toBe(0)
        const [where] = yield* Db.execute<{ port: number }>("SELECT @@port AS port")
        expect(Number(where!.port)).toBe(replica.port)
      }).pipe(Effect.provide(layerOn(cluster, unique("fenced"), "1 minute"))) // no validation: the stale connections are used
    }).pipe(Effect.scoped), 60_000)
})

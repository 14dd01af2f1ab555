/**
 * The failover suite, written once and run per engine: a primary with a
 * synchronous standby, both named in one layer's hosts with
 * `targetRole: "read-write"`. The primary is killed and the standby
 * promoted under the bank workload, or the primary fenced read-only while
 * the standby is promoted.
 *
 * @since 0.2.0
 */
import { Db, Metrics } from "@effect-dal/core"
import type { DbError } from "@effect-dal/core"
import { describe, expect, it } from "@effect/vitest"
import type * as ConfigError from "effect/ConfigError"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import type * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import type * as Scope from "effect/Scope"
import * as Bank from "./Bank.js"

/**
 * A primary and its synchronous standby, made for one test.
 *
 * @since 0.2.0
 */
export interface FailoverCluster {
  readonly primary: {
    readonly port: number
    readonly kill: Effect.Effect<void>
    /** Makes the old primary a standby of the server on `primaryPort`, where the engine can (`undefined`: not tested). */
    readonly rejoin?: ((primaryPort: number) => Effect.Effect<void>) | undefined
  }
  readonly standby: { readonly port: number; readonly promote: Effect.Effect<void> }
  /** Makes the primary refuse writes while it stays up. */
  readonly fence: Effect.Effect<void>
  /** Rows of `table` with `id >= 100` on the primary (`on: "primary"`) or the standby, counted as an admin. */
  readonly count: (on: "primary" | "standby", table: string) => Effect.Effect<number>
  /** Open transactions of `alias` on the standby. */
  readonly openTransactions: (alias: string) => Effect.Effect<number>
}

/**
 * What the suite needs to know about an engine.
 *
 * @since 0.2.0
 */
export interface FailoverProfile {
  readonly name: string
  /** A primary with a synchronous (semi-sync) standby, or an asynchronous one, on ports from `port`. */
  readonly cluster: (port: number, synchronous: boolean) => Effect.Effect<FailoverCluster, never, Scope.Scope>
  /** `Db` over both servers, `targetRole: "read-write"`, whole-transaction retries allowed. */
  readonly layer: (
    cluster: FailoverCluster,
    alias: string,
    validationWindow: Duration.DurationInput
  ) => Layer.Layer<Db, ConfigError.ConfigError | DbError.DbError>
  /** SQL returning the server's port as `port`. */
  readonly portSql: string
  /** The first of four free ports for this process. */
  readonly port: number
  /** Whether the cluster can make an old primary a standby of the new one (`primary.rejoin`). */
  readonly rejoins: boolean
}

let counter = 0
const unique = (prefix: string) => `${prefix}_${process.pid}_${Date.now().toString(36)}_${(counter++).toString(36)}`

/** Writes until one commits; when it did. */
const firstWrite = (table: string) =>
  Effect.gen(function*() {
    for (;;) {
      const exit = yield* Effect.exit(Db.execute(`INSERT INTO [${table}] VALUES (?)`, [Date.now()]))
      if (exit._tag === "Success") return Date.now()
      yield* Effect.sleep(20)
    }
  })

/**
 * Registers the failover suite for one engine.
 *
 * @since 0.2.0
 */
export const failover = (profile: FailoverProfile): void => {
  const portOf = (rows: ReadonlyArray<{ port: unknown }>) => Number(rows[0]!.port)

  describe(`failover: ${profile.name}`, () => {
    /** The bank for 5 s; at 1.5 s the primary is killed and the standby promoted. */
    const bankThroughFailover = (synchronous: boolean) =>
      Effect.gen(function*() {
        const cluster = yield* profile.cluster(profile.port, synchronous)
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
            yield* cluster.standby.promote
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
            openTransactions: cluster.openTransactions(alias),
            measureLoss: !synchronous
          })
          yield* Fiber.join(failover)
          // every connection now is to the new primary
          expect(portOf(yield* Db.primary(Db.execute<{ port: number }>(profile.portSql)))).toBe(cluster.standby.port)
          // the move is counted, with how long finding the new primary took
          const db = yield* Db
          expect((yield* Metric.value(Metric.taggedWithLabels(Metrics.metrics.failovers, db.metricLabels))).count).toBe(1)
          const took = yield* Metric.value(Metric.taggedWithLabels(Metrics.metrics.failoverDuration, db.metricLabels))
          expect(took.count).toBe(1)
          expect(took.max).toBeLessThan(10)
          // the move shows in the nodes: the primary is the old standby's host now
          expect(db.replicationStats()[0]).toMatchObject({ role: "primary", host: `127.0.0.1:${cluster.standby.port}` })
          // no write reached a server while it was a standby: it would have refused it, and been counted
          expect((yield* Metric.value(Metric.taggedWithLabels(Metrics.metrics.refusedWrites, db.metricLabels))).count).toBe(0)
          return report
        }).pipe(Effect.provide(profile.layer(cluster, alias, "100 millis")))
        const resumedMillis = writesResumedAt - promotedAt
        yield* Effect.logInfo(
          `${profile.name} ${synchronous ? "synchronous" : "asynchronous"} failover: writes resumed ${resumedMillis} ms ` +
            `after the promotion; ${report.committed} transfers committed, ${report.lost} of them lost, ` +
            `${report.outcomeUnknown} outcome unknown (reconciled), failed ${JSON.stringify(report.failedByCategory)}, ` +
            `${report.retries} retries, slowest call ${report.slowestMillis} ms`
        )
        expect(resumedMillis).toBeLessThan(5_000)
        expect(report.committed).toBeGreaterThan(0)
        return report
      }).pipe(Effect.scoped)

    it.live("primary killed, synchronous standby promoted under the bank workload: 0 committed transfers lost", () =>
      Effect.map(bankThroughFailover(true), (report) => expect(report.lost).toBe(0)), 60_000)

    it.live("the same with asynchronous replication: what a failover loses is measured, and the money still adds up", () =>
      Effect.map(bankThroughFailover(false), (report) => {
        expect(report.lost).toBeGreaterThanOrEqual(0)
        expect(report.lost).toBeLessThanOrEqual(report.committed)
      }), 60_000)

    if (profile.rejoins) {
    it.live("after a failover, the old primary restarted as a standby of the new one gets reads and no writes", () =>
      Effect.gen(function*() {
        const cluster = yield* profile.cluster(profile.port, true)
        const rejoin = cluster.primary.rejoin!
        yield* Effect.gen(function*() {
          const db = yield* Db
          const table = unique("rejoin")
          yield* Db.execute(`CREATE TABLE [${table}] (at bigint)`)
          yield* cluster.primary.kill
          yield* cluster.standby.promote
          yield* firstWrite(table)
          yield* rejoin(cluster.standby.port)
          // the hosts' roles are discovered: the old primary is a standby now, and a replica for reads
          yield* Bank.eventually(
            Effect.map(Db.execute<{ port: number }>(profile.portSql), (rows) => portOf(rows) === cluster.primary.port),
            // the replica's breaker opened while its server was down, and lets a probe through only after its wait
            45_000
          )
          const nodes = db.replicationStats()
          expect(nodes.find((n) => n.alias.endsWith(`_${cluster.primary.port}`))).toMatchObject({ role: "replica", usable: true })
          // writes go to the new primary only
          yield* Db.execute(`INSERT INTO [${table}] VALUES (?)`, [Date.now()])
          expect(portOf(yield* Db.primary(Db.execute<{ port: number }>(profile.portSql)))).toBe(cluster.standby.port)
        }).pipe(Effect.provide(profile.layer(cluster, unique("rejoin"), "100 millis")))
      }).pipe(Effect.scoped), 90_000)
    }

    it.live("the primary fenced read-only while the standby is promoted: the pools move, no write is reported committed on it", () =>
      Effect.gen(function*() {
        const cluster = yield* profile.cluster(profile.port + 2, true)
        yield* Effect.gen(function*() {
          const db = yield* Db
          const table = unique("fence")
          yield* Db.execute(`CREATE TABLE [${table}] (id int PRIMARY KEY)`)
          // connections to the old primary are open and idle in the pool
          yield* Effect.forEach(Array.from({ length: 8 }, (_, i) => i), (i) => Db.execute(`INSERT INTO [${table}] VALUES (?)`, [i]), {
            concurrency: 8
          })
          // fence the old primary: it stays up, but refuses writes; the standby has everything, and is promoted
          yield* cluster.fence
          yield* cluster.standby.promote
          const fencedAt = Date.now()
          // writes on stale connections are refused by the old primary and run again on the new one
          const retriesBefore = db.resilienceStats().retries
          yield* Effect.forEach(
            Array.from({ length: 40 }, (_, i) => 100 + i),
            (i) => Db.withTransaction(Db.execute(`INSERT INTO [${table}] VALUES (?)`, [i]), { retry: true }),
            { concurrency: 8 }
          )
          expect(Date.now() - fencedAt).toBeLessThan(5_000)
          expect(db.resilienceStats().retries - retriesBefore).toBeGreaterThan(0)
          // the fenced server refused them, and the refusals are counted
          expect((yield* Metric.value(Metric.taggedWithLabels(Metrics.metrics.refusedWrites, db.metricLabels))).count)
            .toBeGreaterThan(0)
          // every write reported committed is on the new primary, none on the fenced one
          expect(yield* cluster.count("standby", table)).toBe(40)
          expect(yield* cluster.count("primary", table)).toBe(0)
          expect(portOf(yield* Db.execute<{ port: number }>(profile.portSql))).toBe(cluster.standby.port)
        }).pipe(Effect.provide(profile.layer(cluster, unique("fenced"), "1 minute"))) // no validation: the stale connections are used
      }).pipe(Effect.scoped), 60_000)
  })
}

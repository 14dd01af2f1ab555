/**
 * The capacity check: N virtual users run a mixed workload (reads, writes,
 * transfers, some slow queries) while the pool is watched; at the end the
 * scaling advisor gives its verdict.
 *
 * @since 0.1.0
 */
import type { DbError, NodeStats, ScalingAdvisor } from "@effect-dal/core"
import { Db, type DbModule, Metrics } from "@effect-dal/core"
import { MysqlDatabase } from "@effect-dal/mysql"
import { PgDatabase } from "@effect-dal/pg"
import { PgliteDatabase } from "@effect-dal/pglite"
import type * as ConfigError from "effect/ConfigError"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import type * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as MetricLabel from "effect/MetricLabel"
import * as Redacted from "effect/Redacted"
import * as Schedule from "effect/Schedule"

/**
 * Options of a run.
 *
 * @since 0.1.0
 */
export interface Options {
  readonly users: number
  readonly durationSeconds: number
  readonly poolMax: number
  /** `postgres://…` or `mysql://…`; the embedded PGlite when absent. */
  readonly url: string | undefined
  /** Read replicas of `url`: reads are routed over them. */
  readonly replicaUrls: ReadonlyArray<string>
  /** Start users one after another over the run, to see the trend as load grows. */
  readonly ramp: boolean
  readonly acquireTimeoutMillis: number
  /** Share of operations that are slow (a 50 ms sleep on the server). */
  readonly slowRatio: number
  readonly sampleMillis: number
  /** Receives the live status line. */
  readonly onStatus: (line: string) => void
}

/**
 * One point of the time series.
 *
 * @since 0.1.0
 */
export interface Sample {
  readonly second: number
  readonly users: number
  readonly utilization: number
  readonly acquireP99Millis: number
  readonly timeoutRate: number
  readonly opsPerSecond: number
  readonly breaker: string
  /** Each node's utilization and lag, when there are replicas. */
  readonly nodes: ReadonlyArray<NodeStats>
}

/**
 * What a run found.
 *
 * @since 0.1.0
 */
export interface Result {
  readonly engine: "pg" | "mysql" | "pglite"
  readonly options: Omit<Options, "onStatus">
  readonly samples: ReadonlyArray<Sample>
  readonly advice: ScalingAdvisor.Report
  readonly operations: number
  readonly failures: Record<string, number>
  readonly metrics: ReadonlyArray<readonly [string, string]>
  /** Each node at the end: role, lag, reads routed, fallbacks. */
  readonly nodes: ReadonlyArray<NodeStats>
}

/**
 * The engine a URL selects.
 *
 * @since 0.1.0
 */
export const engineOf = (url: string | undefined): Result["engine"] =>
  url === undefined || url === "" ? "pglite" : /^(mysql|mariadb):/.test(url) ? "mysql" : "pg"

const layerFor = (
  options: Options,
  alias: string
): Layer.Layer<Db, ConfigError.ConfigError | DbError.DbError> => {
  const pool = { min: 1, max: options.poolMax, acquireTimeout: options.acquireTimeoutMillis }
  // none given: a multi-host --url finds its replicas among its hosts
  const replicas = options.replicaUrls.length === 0 ? undefined : options.replicaUrls.map((url) => ({ url: Redacted.make(url) }))
  switch (engineOf(options.url)) {
    case "pglite":
      return PgliteDatabase.layer({ alias, env: "capacity", acquireTimeout: options.acquireTimeoutMillis })
    case "mysql":
      return MysqlDatabase.layer({ url: Redacted.make(options.url!), alias, env: "capacity", pool, retry: false, replicas })
    case "pg":
      return PgDatabase.layer({ url: Redacted.make(options.url!), alias, env: "capacity", pool, retry: false, replicas })
  }
}

/** The nodes, when there are several (replicas configured, or discovered from several hosts). */
const nodesOf = (db: DbModule.DbService): ReadonlyArray<NodeStats> => {
  const nodes = db.replicationStats()
  return nodes.length > 1 ? nodes : []
}

/** One node in the status line: its role, how busy its pool is, and its lag. */
const nodeStatus = (node: NodeStats): string =>
  `${node.role} ${Math.round(node.utilization * 100)}%${
    node.role === "replica" ? ` lag ${node.lagMillis === undefined ? "?" : Math.round(node.lagMillis)} ms${node.usable ? "" : " (out)"}` : ""
  }`

/** p99 from the growth of a cumulative histogram between two snapshots. */
const p99 = (
  before: ReadonlyArray<readonly [number, number]>,
  after: ReadonlyArray<readonly [number, number]>
): number => {
  const deltas = after.map(([bound, count], i) => [bound, count - (before[i]?.[1] ?? 0)] as const)
  const total = deltas[deltas.length - 1]?.[1] ?? 0
  if (total <= 0) return 0
  const target = total * 0.99
  for (const [bound, count] of deltas) if (count >= target) return bound
  return deltas[deltas.length - 1]![0]
}

const ACCOUNTS = 100

/**
 * Runs the capacity check.
 *
 * @since 0.1.0
 */
export const run = (options: Options): Effect.Effect<Result, DbError.DbError | ConfigError.ConfigError> => {
  const engine = engineOf(options.url)
  const alias = `capacity_${process.pid}`
  const accounts = `capacity_accounts_${process.pid}`
  const events = `capacity_events_${process.pid}`
  const sleepSql = engine === "mysql" ? "SELECT SLEEP(0.05)" : "SELECT pg_sleep(0.05)"
  return Effect.gen(function*() {
    const db = yield* Db
    yield* Db.execute(`CREATE TABLE [${accounts}] (id int PRIMARY KEY, balance int NOT NULL)`)
    yield* Db.execute(`CREATE TABLE [${events}] (account_id int NOT NULL, amount int NOT NULL)`)
    yield* Db.insertMany(accounts, Array.from({ length: ACCOUNTS }, (_, i) => ({ id: i + 1, balance: 1_000 })))
    const account = () => 1 + Math.floor(Math.random() * ACCOUNTS)

    let operations = 0
    let intervalOps = 0
    let intervalTimeouts = 0
    const failures: Record<string, number> = {}
    let activeUsers = 0
    const start = Date.now()
    const deadline = start + options.durationSeconds * 1_000

    const operation = Effect.suspend(() => {
      const r = Math.random()
      if (r < options.slowRatio) return Db.execute(sleepSql)
      if (r < options.slowRatio + 0.7) return Db.execute(`SELECT balance FROM [${accounts}] WHERE id = ?`, [account()])
      if (r < options.slowRatio + 0.9) {
        return Db.execute(`INSERT INTO [${events}] (account_id, amount) VALUES (?, ?)`, [account(), 1])
      }
      const [a, b] = [account(), account()].sort((x, y) => x - y)
      return Db.withTransaction(Effect.zipRight(
        Db.execute(`UPDATE [${accounts}] SET balance = balance - 1 WHERE id = ?`, [a!]),
        Db.execute(`UPDATE [${accounts}] SET balance = balance + 1 WHERE id = ?`, [b!])
      ))
    })

    const user = (index: number) =>
      Effect.gen(function*() {
        // with --ramp, users join one by one over the first 80% of the run
        if (options.ramp) yield* Effect.sleep(Math.floor((index / options.users) * options.durationSeconds * 800))
        activeUsers++
        while (Date.now() < deadline) {
          const exit = yield* Effect.exit(operation)
          operations++
          intervalOps++
          if (exit._tag === "Failure") {
            const error = exit.cause._tag === "Fail" ? exit.cause.error : undefined
            const category = error?.category ?? "defect"
            failures[category] = (failures[category] ?? 0) + 1
            if (category === "poolTimeout" || category === "statementTimeout" || category === "unavailable") {
              intervalTimeouts++
            }
          }
        }
        activeUsers--
      })

    const labels = db.metricLabels
    const acquireHistogram = Metric.taggedWithLabels(Metrics.metrics.waitTime, labels)
    const samples: Array<Sample> = []
    const sampler = Effect.gen(function*() {
      let before = (yield* Metric.value(acquireHistogram)).buckets
      while (true) {
        yield* Effect.sleep(options.sampleMillis)
        const after = (yield* Metric.value(acquireHistogram)).buckets
        const stats = db.poolStats()
        const seconds = options.sampleMillis / 1000
        const sample: Sample = {
          second: (Date.now() - start) / 1000,
          users: activeUsers,
          utilization: stats.active / stats.max,
          acquireP99Millis: p99(before, after) * 1000,
          timeoutRate: intervalOps === 0 ? 0 : intervalTimeouts / intervalOps,
          opsPerSecond: intervalOps / seconds,
          breaker: db.breaker?.state() ?? "off",
          nodes: nodesOf(db)
        }
        before = after
        intervalOps = 0
        intervalTimeouts = 0
        samples.push(sample)
        const progress = Math.min(1, sample.second / options.durationSeconds)
        const bar = "#".repeat(Math.round(progress * 20)).padEnd(20, "-")
        options.onStatus(
          `[${bar}] ${Math.round(progress * 100)}% | users ${sample.users} | pool ${stats.active}/${stats.max} (${
            Math.round(sample.utilization * 100)
          }%) | acquire p99 ${sample.acquireP99Millis.toFixed(1)} ms | timeouts ${
            (sample.timeoutRate * 100).toFixed(2)
          }% | breaker ${sample.breaker} | ${Math.round(sample.opsPerSecond)} ops/s${
            sample.nodes.length === 0 ? "" : ` | ${sample.nodes.map(nodeStatus).join(", ")}`
          }`
        )
      }
    })

    const samplerFiber = yield* Effect.fork(sampler)
    yield* Effect.all(Array.from({ length: options.users }, (_, i) => user(i)), {
      concurrency: "unbounded",
      discard: true
    })
    yield* Fiber.interrupt(samplerFiber)
    yield* db.refreshMetrics
    // an overload may have opened the breaker: the wrap-up waits for it to let calls through
    const patiently = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
      Effect.retry(effect, { schedule: Schedule.spaced("250 millis"), times: 120 })
    const advice = yield* patiently(db.health)
    yield* patiently(Db.execute(`DROP TABLE [${events}]`))
    yield* patiently(Db.execute(`DROP TABLE [${accounts}]`))

    const value = (metric: Metric.Metric<any, any, any>, extra: Record<string, string> = {}) =>
      Metric.value(Metric.taggedWithLabels(metric, [...labels, ...Object.entries(extra).map(([k, v]) => MetricLabel.make(k, v))]))
    const duration = yield* value(Metrics.metrics.operationDuration)
    const metrics: Array<readonly [string, string]> = [
      ["statements that succeeded", String(duration.count)],
      ["their mean time", `${(duration.count === 0 ? 0 : (duration.sum / duration.count) * 1000).toFixed(2)} ms`],
      ["acquisitions (success / timeout)", `${(yield* value(Metrics.metrics.waitTime)).count} / ${
        (yield* value(Metrics.metrics.connectionTimeouts)).count
      }`],
      ["slow queries", String((yield* value(Metrics.metrics.slowQueries)).count)],
      ["connections created", String((yield* value(Metrics.metrics.connectionsCreated)).count)],
      ["statement cache hits / misses", `${db.statementCacheStats().hits} / ${db.statementCacheStats().misses}`]
    ]
    return {
      engine,
      options: {
        users: options.users,
        durationSeconds: options.durationSeconds,
        // what the pool really is: an embedded database has one session, whatever was asked
        poolMax: db.poolStats().max,
        url: options.url,
        replicaUrls: options.replicaUrls,
        ramp: options.ramp,
        acquireTimeoutMillis: options.acquireTimeoutMillis,
        slowRatio: options.slowRatio,
        sampleMillis: options.sampleMillis
      },
      samples,
      advice,
      operations,
      failures,
      metrics,
      nodes: nodesOf(db)
    }
  }).pipe(Effect.provide(layerFor(options, alias)))
}

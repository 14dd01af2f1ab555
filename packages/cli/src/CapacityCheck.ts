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
import { Sharding } from "@effect-dal/routing"
import * as Context from "effect/Context"
import type * as ConfigError from "effect/ConfigError"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Redacted from "effect/Redacted"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"

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
  /** Shard nodes (instead of `url`): the workload is sharded by account id over them. */
  readonly shardUrls: ReadonlyArray<string>
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
  /** Each node at the end: role, lag, calls routed to it (reads over replicas; every operation over shards), fallbacks. */
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

/**
 * Where the workload runs: one database, or shard nodes with the accounts
 * spread over them by id.
 */
interface Target {
  /** The databases, by name. */
  readonly dbs: ReadonlyArray<readonly [string, DbModule.DbService]>
  /** Runs `effect` on the database that holds `account`. */
  readonly route: (account: number) => <A, E>(effect: Effect.Effect<A, E, Db>) => Effect.Effect<A, E | Sharding.RoutingError>
  /** Accounts on the same database as `account`: a transfer stays on one node. */
  readonly neighbours: (account: number) => ReadonlyArray<number>
  /** Operations routed to each database, by name. */
  readonly routed: Map<string, number>
  /** The nodes, when there are several (replicas, shards). */
  readonly nodes: () => ReadonlyArray<NodeStats>
}

const ACCOUNTS = 100
const accountIds = Array.from({ length: ACCOUNTS }, (_, i) => i + 1)

const makeTarget = (options: Options, alias: string): Effect.Effect<Target, DbError.DbError | ConfigError.ConfigError, Scope.Scope> =>
  Effect.gen(function*() {
    const routed = new Map<string, number>()
    const bump = (name: string) => routed.set(name, (routed.get(name) ?? 0) + 1)
    if (options.shardUrls.length === 0) {
      const db = Context.get(yield* Layer.build(layerFor(options, alias)), Db)
      return {
        dbs: [[alias, db]],
        route: () => (effect) => Effect.provideService(Effect.tap(effect, () => bump(alias)), Db, db),
        neighbours: () => accountIds,
        routed,
        nodes: () => {
          // several nodes: replicas configured, or discovered from several hosts
          const nodes = db.replicationStats()
          return nodes.length > 1 ? nodes : []
        }
      }
    }
    const names = options.shardUrls.map((_, i) => `s${i + 1}`)
    const sharded = Context.get(
      yield* Layer.build(Sharding.layer({
        name: alias,
        nodes: Object.fromEntries(
          options.shardUrls.map((url, i) => [names[i]!, layerFor({ ...options, url, replicaUrls: [] }, `${alias}_${names[i]}`)])
        ),
        keyType: "bigint"
      })),
      Sharding.Sharding
    )
    const nodeOf = (account: number) => Either.getOrThrow(sharded.nodeOf(account))
    const byNode = new Map<string, Array<number>>()
    for (const id of accountIds) byNode.set(nodeOf(id), [...(byNode.get(nodeOf(id)) ?? []), id])
    return {
      dbs: names.map((n) => [n, sharded.nodes[n]!] as const),
      route: (account) => (effect) => sharded.forKey(account)(Effect.tap(effect, () => bump(nodeOf(account)))),
      neighbours: (account) => byNode.get(nodeOf(account))!,
      routed,
      nodes: () =>
        names.map((n): NodeStats => ({ ...sharded.nodes[n]!.replicationStats()[0]!, alias: n, reads: routed.get(n) ?? 0 }))
    }
  })

/** One node in the status line: a shard's name, or its role; how busy its pool is, and its lag. */
const nodeStatus = (node: NodeStats): string =>
  `${/^s\d+$/.test(node.alias) ? node.alias : node.role} ${Math.round(node.utilization * 100)}%${
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

/**
 * Runs the capacity check.
 *
 * @since 0.1.0
 */
export const run = (
  options: Options
): Effect.Effect<Result, DbError.DbError | ConfigError.ConfigError | Sharding.RoutingError> => {
  const engine = engineOf(options.shardUrls[0] ?? options.url)
  const alias = `capacity_${process.pid}`
  const accounts = `capacity_accounts_${process.pid}`
  const events = `capacity_events_${process.pid}`
  const sleepSql = engine === "mysql" ? "SELECT SLEEP(0.05)" : "SELECT pg_sleep(0.05)"
  return Effect.scoped(Effect.gen(function*() {
    const target = yield* makeTarget(options, alias)
    const { dbs, route } = target
    const everywhere = (sql: string) => Effect.forEach(dbs, ([, db]) => db.execute(sql), { discard: true })
    // the setup and the wrap-up wait out a short acquire timeout or an open breaker: only the workload is measured
    const patiently = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
      Effect.retry(effect, { schedule: Schedule.spaced("250 millis"), times: 120 })
    yield* patiently(everywhere(`CREATE TABLE IF NOT EXISTS [${accounts}] (id int PRIMARY KEY, balance int NOT NULL)`))
    yield* patiently(everywhere(`CREATE TABLE IF NOT EXISTS [${events}] (account_id int NOT NULL, amount int NOT NULL)`))
    // one INSERT per node, each with the accounts it holds
    const holders = new Map<number, Array<number>>()
    for (const id of accountIds) {
      const first = target.neighbours(id)[0]!
      holders.set(first, [...(holders.get(first) ?? []), id])
    }
    yield* Effect.forEach(holders, ([first, ids]) =>
      patiently(route(first)(Db.insertMany(accounts, ids.map((id) => ({ id, balance: 1_000 })), {
        onConflict: { keys: ["id"], action: "ignore" }
      }))), { discard: true })
    target.routed.clear()
    const pick = (ids: ReadonlyArray<number>) => ids[Math.floor(Math.random() * ids.length)]!

    let operations = 0
    let intervalOps = 0
    let intervalTimeouts = 0
    const failures: Record<string, number> = {}
    let activeUsers = 0
    const start = Date.now()
    const deadline = start + options.durationSeconds * 1_000

    const operation = Effect.suspend(() => {
      const r = Math.random()
      const account = pick(accountIds)
      if (r < options.slowRatio) return route(account)(Db.execute(sleepSql))
      if (r < options.slowRatio + 0.7) return route(account)(Db.execute(`SELECT balance FROM [${accounts}] WHERE id = ?`, [account]))
      if (r < options.slowRatio + 0.9) {
        return route(account)(Db.execute(`INSERT INTO [${events}] (account_id, amount) VALUES (?, ?)`, [account, 1]))
      }
      // a transfer between two accounts of the same node: one node's transaction
      const [a, b] = [account, pick(target.neighbours(account))].sort((x, y) => x - y)
      return route(account)(Db.withTransaction(Effect.zipRight(
        Db.execute(`UPDATE [${accounts}] SET balance = balance - 1 WHERE id = ?`, [a!]),
        Db.execute(`UPDATE [${accounts}] SET balance = balance + 1 WHERE id = ?`, [b!])
      )))
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

    // over shards, the pool figures add up and the slowest node's acquire time counts
    const histograms = dbs.map(([, db]) => Metric.taggedWithLabels(Metrics.metrics.waitTime, db.metricLabels))
    const buckets = Effect.forEach(histograms, (h) => Effect.map(Metric.value(h), (v) => v.buckets))
    const poolStats = () =>
      dbs.reduce((sum, [, db]) => {
        const stats = db.poolStats()
        return { active: sum.active + stats.active, max: sum.max + stats.max }
      }, { active: 0, max: 0 })
    const breakerState = () => {
      const states = dbs.map(([, db]) => db.breaker?.state() ?? "off")
      return states.find((b) => b === "open") ?? states.find((b) => b === "halfOpen") ?? states[0]!
    }
    const samples: Array<Sample> = []
    const sampler = Effect.gen(function*() {
      let before = yield* buckets
      while (true) {
        yield* Effect.sleep(options.sampleMillis)
        const after = yield* buckets
        const stats = poolStats()
        const seconds = options.sampleMillis / 1000
        const sample: Sample = {
          second: (Date.now() - start) / 1000,
          users: activeUsers,
          utilization: stats.active / stats.max,
          acquireP99Millis: Math.max(...after.map((b, i) => p99(before[i]!, b))) * 1000,
          timeoutRate: intervalOps === 0 ? 0 : intervalTimeouts / intervalOps,
          opsPerSecond: intervalOps / seconds,
          breaker: breakerState(),
          nodes: target.nodes()
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
    yield* Effect.forEach(dbs, ([, db]) => db.refreshMetrics, { discard: true })
    // an overload may have opened the breaker: the wrap-up waits for it to let calls through
    // over shards, the node under most pressure gives the verdict
    const reports = yield* Effect.forEach(dbs, ([, db]) => patiently(db.health))
    const advice = reports.reduce((worst, r) => (r.level > worst.level ? r : worst))
    yield* patiently(everywhere(`DROP TABLE [${events}]`))
    yield* patiently(everywhere(`DROP TABLE [${accounts}]`))

    const total = (metric: Metric.Metric<any, any, any>, pick: (state: any) => number) =>
      Effect.map(
        Effect.forEach(dbs, ([, db]) => Metric.value(Metric.taggedWithLabels(metric, db.metricLabels))),
        (states) => states.reduce((n, state) => n + pick(state), 0)
      )
    const count = (state: { count: number }) => state.count
    const succeeded = yield* total(Metrics.metrics.operationDuration, count)
    const seconds = yield* total(Metrics.metrics.operationDuration, (state: { sum: number }) => state.sum)
    const cache = dbs.reduce((sum, [, db]) => {
      const stats = db.statementCacheStats()
      return { hits: sum.hits + stats.hits, misses: sum.misses + stats.misses }
    }, { hits: 0, misses: 0 })
    const metrics: Array<readonly [string, string]> = [
      ["statements that succeeded", String(succeeded)],
      ["their mean time", `${(succeeded === 0 ? 0 : (seconds / succeeded) * 1000).toFixed(2)} ms`],
      ["acquisitions (success / timeout)", `${yield* total(Metrics.metrics.waitTime, count)} / ${
        yield* total(Metrics.metrics.connectionTimeouts, count)
      }`],
      ["slow queries", String(yield* total(Metrics.metrics.slowQueries, count))],
      ["connections created", String(yield* total(Metrics.metrics.connectionsCreated, count))],
      ["statement cache hits / misses", `${cache.hits} / ${cache.misses}`]
    ]
    return {
      engine,
      options: {
        users: options.users,
        durationSeconds: options.durationSeconds,
        // what the pool really is: an embedded database has one session, whatever was asked
        poolMax: dbs[0]![1].poolStats().max,
        url: options.url,
        replicaUrls: options.replicaUrls,
        shardUrls: options.shardUrls,
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
      nodes: target.nodes()
    }
  }))
}

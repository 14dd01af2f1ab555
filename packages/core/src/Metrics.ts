/**
 * effect-dal's Effect `Metric`s. Where the OpenTelemetry semantic conventions
 * for database client metrics define a metric, it has their name, unit and
 * attributes (`db.client.*`); what they do not cover (the breaker, retries,
 * the statement cache, leaks, slow queries, the scaling advice) is ours,
 * under the `dal.` prefix. Every metric carries
 * `db.client.connection.pool.name` (the alias), `db.system.name`,
 * `db.namespace` and `deployment.environment.name`. Read them with
 * `Metric.value` and `DbService.metricLabels`, or export them with
 * `@effect/opentelemetry` (Prometheus shows `db_client_operation_duration_seconds`, …).
 *
 * Updates come from synchronous code on the hot path, so they go through
 * `unsafeUpdate` with one constant label array per database: the metric's
 * hook is then found in its cache, with no allocation per statement.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"
import * as MetricLabel from "effect/MetricLabel"
import * as MetricState from "effect/MetricState"
import type { ErrorCategory } from "./DbError.js"

/** 0.25 ms to about 33 s, doubling: fine enough for point selects, wide enough for timeouts. */
const seconds = MetricBoundaries.exponential({ start: 0.00025, factor: 2, count: 18 })

/**
 * Every metric, by name.
 *
 * @since 0.1.0
 */
export const metrics = {
  // OpenTelemetry semantic conventions: database client metrics

  /** `db.client.operation.duration`, seconds; failed statements carry `error.type` (the error's category). */
  operationDuration: Metric.histogram("db.client.operation.duration", seconds, "duration of database client operations, s"),
  /** `db.client.connection.count` by `db.client.connection.state`: `idle` or `used`. */
  connectionCount: Metric.gauge("db.client.connection.count"),
  /** `db.client.connection.idle.max`: the most idle connections the pool keeps (its max). */
  connectionIdleMax: Metric.gauge("db.client.connection.idle.max"),
  /** `db.client.connection.idle.min`: the idle connections the pool keeps at least (its min). */
  connectionIdleMin: Metric.gauge("db.client.connection.idle.min"),
  /** `db.client.connection.max`: the most open connections allowed. */
  connectionMax: Metric.gauge("db.client.connection.max"),
  /** `db.client.connection.pending_requests`: callers waiting for a connection. */
  pendingRequests: Metric.gauge("db.client.connection.pending_requests"),
  /** `db.client.connection.timeouts`: acquisitions that timed out. */
  connectionTimeouts: Metric.counter("db.client.connection.timeouts", { incremental: true }),
  /** `db.client.connection.create_time`, seconds: opening one connection. */
  createTime: Metric.histogram("db.client.connection.create_time", seconds, "time to create a new connection, s"),
  /** `db.client.connection.wait_time`, seconds: getting a connection from the pool. */
  waitTime: Metric.histogram("db.client.connection.wait_time", seconds, "time to obtain an open connection from the pool, s"),
  /** `db.client.connection.use_time`, seconds: from borrowing a connection to giving it back. */
  useTime: Metric.histogram("db.client.connection.use_time", seconds, "time between borrowing and returning a connection, s"),

  // effect-dal's own

  connectionsCreated: Metric.counter("dal.connections.created", { incremental: true }),
  connectionsDestroyed: Metric.counter("dal.connections.destroyed", { incremental: true }),
  /** Connection attempts that failed. */
  connectionsFailed: Metric.counter("dal.connections.failed", { incremental: true }),
  /** used / max. */
  poolUtilization: Metric.gauge("dal.pool.utilization"),
  poolLeaks: Metric.counter("dal.pool.leaks", { incremental: true }),
  cacheHits: Metric.counter("dal.statement_cache.hits", { incremental: true }),
  cacheMisses: Metric.counter("dal.statement_cache.misses", { incremental: true }),
  cacheEvictions: Metric.counter("dal.statement_cache.evictions", { incremental: true }),
  /** Failed statements and acquisitions by `category`. */
  errors: Metric.counter("dal.errors", { incremental: true }),
  slowQueries: Metric.counter("dal.slow_queries", { incremental: true }),
  /** Statement and transaction timeouts by `kind` (acquisition timeouts are `db.client.connection.timeouts`). */
  timeouts: Metric.counter("dal.timeouts", { incremental: true }),
  retries: Metric.counter("dal.retries", { incremental: true }),
  /** 0 closed, 1 half-open, 2 open. */
  circuitState: Metric.gauge("dal.circuit.state"),
  circuitTransitions: Metric.counter("dal.circuit.transitions", { incremental: true }),
  /** Timeouts over attempts in the advisor's window. */
  timeoutRate: Metric.gauge("dal.scaling.timeout_rate"),
  /** The advisor's verdict: 0 normal, 1 review slow queries, 2 scale vertically, 3 scale horizontally. */
  scalingLevel: Metric.gauge("dal.scaling.level"),
  /** Reads routed to a replica, labelled with the replica's own labels. */
  routedReads: Metric.counter("dal.routing.reads", { incremental: true }),
  /** Reads that went to the primary after all, by `reason`: noReplica, lag, readOnly, replicaFailed. */
  routingFallbacks: Metric.counter("dal.routing.fallbacks", { incremental: true }),
  /** Times new connections found the writable server on another host than before. */
  failovers: Metric.counter("dal.failovers", { incremental: true }),
  /** From the first lost connection to the old primary to the first statement that succeeds on the new one, seconds. */
  failoverDuration: Metric.histogram("dal.failover.duration", seconds, "time to find the new primary, s"),
  /** Writes a server refused as read-only on a connection that wanted a writable one (demoted, fenced, a standby). */
  refusedWrites: Metric.counter("dal.failover.refused_writes", { incremental: true })
} as const

/**
 * Who a database's metrics belong to.
 *
 * @since 0.2.0
 */
export interface Identity {
  /** The alias: `db.client.connection.pool.name`. */
  readonly alias: string
  readonly env: string
  /** `db.system.name`, e.g. `postgresql`. */
  readonly system: string
  /** `db.namespace`: the database name. */
  readonly namespace: string
}

/**
 * The labels every metric of one database carries.
 *
 * @since 0.2.0
 */
export const labelsOf = (identity: Identity): ReadonlyArray<MetricLabel.MetricLabel> => [
  MetricLabel.make("db.client.connection.pool.name", identity.alias),
  MetricLabel.make("db.system.name", identity.system),
  MetricLabel.make("db.namespace", identity.namespace),
  MetricLabel.make("deployment.environment.name", identity.env)
]

/**
 * The metrics of one database, with its labels bound. Durations come in
 * milliseconds and are recorded in seconds.
 *
 * @since 0.1.0
 */
export class DbMetrics {
  readonly labels: ReadonlyArray<MetricLabel.MetricLabel>
  private readonly extra = new Map<string, ReadonlyArray<MetricLabel.MetricLabel>>()
  private readonly idleLabels: ReadonlyArray<MetricLabel.MetricLabel>
  private readonly usedLabels: ReadonlyArray<MetricLabel.MetricLabel>

  constructor(identity: Identity, readonly tagKeys: ReadonlyArray<string> = []) {
    this.labels = labelsOf(identity)
    this.idleLabels = this.with("db.client.connection.state", "idle")
    this.usedLabels = this.with("db.client.connection.state", "used")
  }

  private readonly tagged = new Map<string, ReadonlyArray<MetricLabel.MetricLabel>>()

  /** The labels plus the declared tag keys' values; past 100 combinations, `other`. */
  private tagLabels(tags: Readonly<Record<string, string>> | undefined): ReadonlyArray<MetricLabel.MetricLabel> {
    if (this.tagKeys.length === 0) return this.labels
    const values = this.tagKeys.map((k) => tags?.[k] ?? "none")
    const id = values.join("\u0000")
    let labels = this.tagged.get(id)
    if (labels === undefined) {
      const bounded = this.tagged.size >= 100 ? values.map(() => "other") : values
      labels = [...this.labels, ...this.tagKeys.map((k, i) => MetricLabel.make(k, bounded[i]!))]
      if (this.tagged.size < 100) this.tagged.set(id, labels)
    }
    return labels
  }

  /** The labels plus one more, made once per key and value. */
  private with(key: string, value: string): ReadonlyArray<MetricLabel.MetricLabel> {
    const id = `${key}=${value}`
    let labels = this.extra.get(id)
    if (labels === undefined) {
      labels = [...this.labels, MetricLabel.make(key, value)]
      this.extra.set(id, labels)
    }
    return labels
  }

  acquired(ms: number): void {
    metrics.waitTime.unsafeUpdate(ms / 1000, this.labels)
  }

  released(ms: number): void {
    metrics.useTime.unsafeUpdate(ms / 1000, this.labels)
  }

  acquireFailed(timeout: boolean, category: ErrorCategory): void {
    if (timeout) metrics.connectionTimeouts.unsafeUpdate(1, this.labels)
    metrics.errors.unsafeUpdate(1, this.with("category", category))
  }

  statement(
    ms: number,
    category: ErrorCategory | undefined,
    slow: boolean,
    tags?: Readonly<Record<string, string>> | undefined
  ): void {
    const labels = this.tagLabels(tags)
    if (category === undefined) metrics.operationDuration.unsafeUpdate(ms / 1000, labels)
    else {
      const failed = labels === this.labels
        ? this.with("error.type", category)
        : [...labels, MetricLabel.make("error.type", category)]
      metrics.operationDuration.unsafeUpdate(ms / 1000, failed)
      metrics.errors.unsafeUpdate(1, this.with("category", category))
      if (category === "statementTimeout") metrics.timeouts.unsafeUpdate(1, this.with("kind", "statement"))
    }
    if (slow) metrics.slowQueries.unsafeUpdate(1, this.labels)
  }

  transactionTimedOut(): void {
    metrics.timeouts.unsafeUpdate(1, this.with("kind", "transaction"))
  }

  retried(): void {
    metrics.retries.unsafeUpdate(1, this.labels)
  }

  circuit(state: "closed" | "open" | "halfOpen", transition: boolean): void {
    metrics.circuitState.unsafeUpdate(state === "closed" ? 0 : state === "halfOpen" ? 1 : 2, this.labels)
    if (transition) metrics.circuitTransitions.unsafeUpdate(1, this.labels)
  }

  created(ms: number): void {
    metrics.createTime.unsafeUpdate(ms / 1000, this.labels)
    metrics.connectionsCreated.unsafeUpdate(1, this.labels)
  }

  connection(event: "destroyed" | "failed"): void {
    const metric = event === "destroyed" ? metrics.connectionsDestroyed : metrics.connectionsFailed
    metric.unsafeUpdate(1, this.labels)
  }

  /** Gauges and counters mirrored from the pool's and caches' own counts. */
  sync(
    pool: {
      readonly idle: number
      readonly active: number
      readonly pending: number
      readonly min: number
      readonly max: number
      readonly leaks: number
    },
    cache: { readonly hits: number; readonly misses: number; readonly evictions: number },
    scaling: { readonly timeoutRate: number; readonly level: number }
  ): void {
    metrics.connectionCount.unsafeUpdate(pool.idle, this.idleLabels)
    metrics.connectionCount.unsafeUpdate(pool.active, this.usedLabels)
    metrics.connectionIdleMax.unsafeUpdate(pool.max, this.labels)
    metrics.connectionIdleMin.unsafeUpdate(pool.min, this.labels)
    metrics.connectionMax.unsafeUpdate(pool.max, this.labels)
    metrics.pendingRequests.unsafeUpdate(pool.pending, this.labels)
    metrics.poolUtilization.unsafeUpdate(pool.max === 0 ? 0 : pool.active / pool.max, this.labels)
    this.mirror("leaks", metrics.poolLeaks, pool.leaks)
    this.mirror("hits", metrics.cacheHits, cache.hits)
    this.mirror("misses", metrics.cacheMisses, cache.misses)
    this.mirror("evictions", metrics.cacheEvictions, cache.evictions)
    metrics.timeoutRate.unsafeUpdate(scaling.timeoutRate, this.labels)
    metrics.scalingLevel.unsafeUpdate(scaling.level, this.labels)
  }

  private readonly mirrored = new Map<string, number>()
  private mirror(key: string, counter: Metric.Metric.Counter<number>, total: number): void {
    const before = this.mirrored.get(key) ?? 0
    if (total > before) counter.unsafeUpdate(total - before, this.labels)
    this.mirrored.set(key, total)
  }
}

/**
 * One metric of a database as plain data: a counter's or gauge's value, a
 * histogram's count, sum, min, max and cumulative buckets.
 *
 * @since 0.3.0
 */
export interface Sample {
  readonly name: string
  readonly type: "counter" | "gauge" | "histogram" | "frequency"
  /** Every label but the database's own (`pool.name`, `db.system.name`, …): `error.type`, `state`, tags. */
  readonly labels: Readonly<Record<string, string>>
  readonly value:
    | number
    | {
      readonly count: number
      readonly sum: number
      readonly min: number
      readonly max: number
      readonly buckets: ReadonlyArray<readonly [number, number]>
    }
    | Readonly<Record<string, number>>
}

const own = new Set(["db.client.connection.pool.name", "db.system.name", "db.namespace", "deployment.environment.name"])

/**
 * The current values of every metric of one database (those carrying all of
 * its `labels`, `DbService.metricLabels`), as plain data: what `Metric.value`
 * reads, for code without Effect.
 *
 * @since 0.3.0
 */
export const samples = (of: ReadonlyArray<MetricLabel.MetricLabel>): Effect.Effect<ReadonlyArray<Sample>> =>
  Effect.map(Metric.snapshot, (pairs) => {
    const out: Array<Sample> = []
    for (const pair of pairs) {
      const key = pair.metricKey
      if (!of.every((l) => key.tags.some((t) => t.key === l.key && t.value === l.value))) continue
      const labels: Record<string, string> = {}
      for (const t of key.tags) if (!own.has(t.key)) labels[t.key] = t.value
      const state = pair.metricState as any
      const name = key.name
      if (MetricState.isCounterState(state)) out.push({ name, type: "counter", labels, value: Number(state.count) })
      else if (MetricState.isGaugeState(state)) out.push({ name, type: "gauge", labels, value: Number(state.value) })
      else if (MetricState.isHistogramState(state)) {
        out.push({
          name,
          type: "histogram",
          labels,
          value: { count: state.count, sum: state.sum, min: state.min, max: state.max, buckets: state.buckets }
        })
      } else if (MetricState.isFrequencyState(state)) {
        out.push({ name, type: "frequency", labels, value: Object.fromEntries(state.occurrences) })
      }
    }
    return out.sort((a, b) => a.name.localeCompare(b.name))
  })

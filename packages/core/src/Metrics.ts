/**
 * effect-dal's Effect `Metric`s, every one labelled with `alias` and `env`.
 * Read them with `Metric.value` / `Metric.snapshot`, or export them with
 * `@effect/opentelemetry`.
 *
 * Updates come from synchronous code on the hot path, so they go through
 * `unsafeUpdate` with one constant label array per database: the metric's
 * hook is then found in its cache, with no allocation per statement.
 *
 * @since 0.1.0
 */
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"
import * as MetricLabel from "effect/MetricLabel"
import type { ErrorCategory } from "./DbError.js"

const millis = MetricBoundaries.exponential({ start: 0.25, factor: 2, count: 18 })

/**
 * Every metric, by name. All carry `alias` and `env`; a few carry one more label.
 *
 * @since 0.1.0
 */
export const metrics = {
  /** Time to get a connection from the pool, ms. */
  acquireDuration: Metric.histogram("dal_connection_acquire_duration_ms", millis, "time to acquire a connection"),
  /** Acquisitions by `outcome`: success, timeout, error. */
  acquisitions: Metric.counter("dal_connection_acquisitions_total", { incremental: true }),
  connectionsCreated: Metric.counter("dal_connections_created_total", { incremental: true }),
  connectionsDestroyed: Metric.counter("dal_connections_destroyed_total", { incremental: true }),
  /** Connection attempts that failed. */
  connectionsFailed: Metric.counter("dal_connections_failed_total", { incremental: true }),
  poolSize: Metric.gauge("dal_pool_size"),
  poolIdle: Metric.gauge("dal_pool_idle"),
  poolActive: Metric.gauge("dal_pool_active"),
  poolPending: Metric.gauge("dal_pool_pending"),
  poolMin: Metric.gauge("dal_pool_min"),
  poolMax: Metric.gauge("dal_pool_max"),
  /** active / max. */
  poolUtilization: Metric.gauge("dal_pool_utilization"),
  poolLeaks: Metric.counter("dal_pool_leaks_total", { incremental: true }),
  cacheHits: Metric.counter("dal_statement_cache_hits_total", { incremental: true }),
  cacheMisses: Metric.counter("dal_statement_cache_misses_total", { incremental: true }),
  cacheEvictions: Metric.counter("dal_statement_cache_evictions_total", { incremental: true }),
  /** Failed statements and acquisitions by `category`. */
  errors: Metric.counter("dal_errors_total", { incremental: true }),
  /** Statement duration, ms. */
  queryDuration: Metric.histogram("dal_query_duration_ms", millis, "statement duration"),
  slowQueries: Metric.counter("dal_slow_queries_total", { incremental: true }),
  /** Timeouts by `kind`: acquire, statement, transaction. */
  timeouts: Metric.counter("dal_timeouts_total", { incremental: true }),
  retries: Metric.counter("dal_retries_total", { incremental: true }),
  /** 0 closed, 1 half-open, 2 open. */
  circuitState: Metric.gauge("dal_circuit_state"),
  circuitTransitions: Metric.counter("dal_circuit_transitions_total", { incremental: true }),
  /** Timeouts over attempts in the advisor's window. */
  timeoutRate: Metric.gauge("dal_scaling_timeout_rate"),
  /** The advisor's verdict: 0 normal, 1 review slow queries, 2 scale vertically, 3 scale horizontally. */
  scalingLevel: Metric.gauge("dal_scaling_level")
} as const

/**
 * The metrics of one database, with its labels bound.
 *
 * @since 0.1.0
 */
export class DbMetrics {
  readonly labels: ReadonlyArray<MetricLabel.MetricLabel>
  private readonly extra = new Map<string, ReadonlyArray<MetricLabel.MetricLabel>>()

  constructor(readonly alias: string, readonly env: string, readonly tagKeys: ReadonlyArray<string> = []) {
    this.labels = [MetricLabel.make("alias", alias), MetricLabel.make("env", env)]
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

  private acquiredLabels: ReadonlyArray<MetricLabel.MetricLabel> | undefined

  acquired(ms: number): void {
    metrics.acquireDuration.unsafeUpdate(ms, this.labels)
    // on every statement: the labels are looked up once
    metrics.acquisitions.unsafeUpdate(1, this.acquiredLabels ??= this.with("outcome", "success"))
  }

  acquireFailed(timeout: boolean, category: ErrorCategory): void {
    metrics.acquisitions.unsafeUpdate(1, this.with("outcome", timeout ? "timeout" : "error"))
    if (timeout) metrics.timeouts.unsafeUpdate(1, this.with("kind", "acquire"))
    metrics.errors.unsafeUpdate(1, this.with("category", category))
  }

  statement(
    ms: number,
    category: ErrorCategory | undefined,
    slow: boolean,
    tags?: Readonly<Record<string, string>> | undefined
  ): void {
    const labels = this.tagLabels(tags)
    metrics.queryDuration.unsafeUpdate(ms, labels)
    if (category !== undefined) {
      metrics.errors.unsafeUpdate(
        1,
        labels === this.labels ? this.with("category", category) : [...labels, MetricLabel.make("category", category)]
      )
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

  connection(event: "created" | "destroyed" | "failed"): void {
    const metric = event === "created"
      ? metrics.connectionsCreated
      : event === "destroyed"
      ? metrics.connectionsDestroyed
      : metrics.connectionsFailed
    metric.unsafeUpdate(1, this.labels)
  }

  /** Gauges and counters mirrored from the pool's and caches' own counts. */
  sync(
    pool: {
      readonly size: number
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
    metrics.poolSize.unsafeUpdate(pool.size, this.labels)
    metrics.poolIdle.unsafeUpdate(pool.idle, this.labels)
    metrics.poolActive.unsafeUpdate(pool.active, this.labels)
    metrics.poolPending.unsafeUpdate(pool.pending, this.labels)
    metrics.poolMin.unsafeUpdate(pool.min, this.labels)
    metrics.poolMax.unsafeUpdate(pool.max, this.labels)
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

/**
 * The core of one database: its pool, breaker, metrics and the observation
 * of every statement, and what every lane shares (the transaction open in
 * a fiber, acquisition, statement preparation, tagging). The statement,
 * transaction, batch, `SqlClient` and health modules are built on it, and a
 * router can compose several of them.
 *
 * @internal
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import * as FiberRef from "effect/FiberRef"
import type * as Scope from "effect/Scope"
import * as CircuitBreaker from "../CircuitBreaker.js"
import type { DatabaseConfig } from "../DatabaseConfig.js"
import type { DbError } from "../DbError.js"
import { DdlInTransaction, InvalidQuery, isInfrastructure } from "../DbError.js"
import type { ExecuteOptions, SlowQuery } from "../Db.js"
import type { Dialect } from "../Dialect.js"
import type { Driver, DriverConnection } from "../Driver.js"
import { DbMetrics } from "../Metrics.js"
import type { PoolEvent } from "../Native.js"
import * as Pool from "../Pool.js"
import type { Translated } from "../PortableSql.js"
import { isFailure, isImplicitCommitDdl, makeTranslator, unbindableParameter } from "../PortableSql.js"
import type { QueryTags } from "../QueryTags.js"
import { currentTags, withTags as withTagsOf } from "../QueryTags.js"
import * as ScalingAdvisor from "../ScalingAdvisor.js"
import type { StatementHooks } from "./connection.js"
import { DalConnection } from "./connection.js"
import type { Invalidator } from "./invalidations.js"
import { makeInvalidator } from "./invalidations.js"
import { acquireShared } from "./registry.js"

/** @internal */
export const noParams: ReadonlyArray<unknown> = []

/** @internal */
export const identity = <A>(a: A): A => a

/** Effect's built-in tracer: when it is the current one, no span is worth making. */
const nativeTracer = Effect.runSync(Effect.tracer)

/** What a statement may still take of a call's deadline (at least 1 ms: the driver cuts it then). @internal */
export const timeLeft = (deadline: number | undefined): number | undefined =>
  deadline === undefined ? undefined : Math.max(1, deadline - Date.now())

/** On engines that commit DDL implicitly, stops (or flags) DDL sent inside a transaction. */
const makeDdlGuard = (
  dialect: Dialect,
  config: DatabaseConfig
): StatementHooks["guard"] => {
  if (!dialect.implicitCommitDdl || config.ddlInTransaction === "allow") return undefined
  return (sql: string, conn: DriverConnection) => {
    if (conn.transactionState() !== "transaction" || !isImplicitCommitDdl(sql)) return undefined
    return config.ddlInTransaction === "fail"
      ? Effect.fail(new DdlInTransaction({ sql }))
      : Effect.logWarning("DDL inside a transaction commits it implicitly; earlier statements can no longer roll back")
        .pipe(Effect.annotateLogs({ alias: config.alias, sql }))
  }
}

/** Durations of slow statements by shape, a bounded sample of each. @internal */
export class SlowQueries {
  private readonly shapes = new Map<string, { count: number; max: number; samples: Array<number> }>()

  record(sql: string, millis: number): void {
    let shape = this.shapes.get(sql)
    if (shape === undefined) {
      if (this.shapes.size >= 500) return
      shape = { count: 0, max: 0, samples: [] }
      this.shapes.set(sql, shape)
    }
    shape.count++
    shape.max = Math.max(shape.max, millis)
    // reservoir sampling keeps 200 samples, uniformly, however many there were
    if (shape.samples.length < 200) shape.samples.push(millis)
    else {
      const i = Math.floor(Math.random() * shape.count)
      if (i < 200) shape.samples[i] = millis
    }
  }

  top(n: number): ReadonlyArray<SlowQuery> {
    const q = (sorted: Array<number>, p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!
    return Array.from(this.shapes, ([sql, s]) => {
      const sorted = [...s.samples].sort((a, b) => a - b)
      return { sql, count: s.count, p50Millis: q(sorted, 0.5), p99Millis: q(sorted, 0.99), maxMillis: s.max }
    }).sort((a, b) => b.p99Millis - a.p99Millis).slice(0, n)
  }
}

/**
 * What every lane of one database shares.
 *
 * @internal
 */
export interface DbCore {
  readonly driver: Driver
  readonly config: DatabaseConfig
  readonly dialect: Dialect
  readonly breaker: CircuitBreaker.CircuitBreaker | undefined
  readonly metrics: DbMetrics
  /** The scaling advisor's window of outcomes. */
  readonly window: ScalingAdvisor.Window
  readonly slowStats: SlowQueries
  readonly pool: Pool.Pool<DalConnection>
  /** Who hears of connections opening and closing (driver-compatible pools' events). */
  readonly poolListeners: Set<(event: PoolEvent) => void>
  readonly hooks: StatementHooks
  /** This database's transaction open in `context` (a fiber's), with its depth. */
  readonly currentTx: (context: Context.Context<never>) => readonly [DalConnection, number] | undefined
  /** A connection, through the breaker. */
  readonly acquire: Effect.Effect<Pool.Lease<DalConnection>, DbError>
  /** Translates portable SQL and checks the parameters; nothing is sent. */
  readonly prepare: (sql: string, params: ReadonlyArray<unknown>) => Translated | InvalidQuery
  /** The call's timeout, or the layer's `statementTimeout`. */
  readonly statementTimeout: (options: ExecuteOptions | undefined) => number | undefined
  /** Tags the call and gives it a span when a real tracer is installed; `fiber` is the caller's. */
  readonly tagged: <A, E>(
    fiber: Fiber.RuntimeFiber<unknown, unknown>,
    effect: Effect.Effect<A, E>,
    options: ExecuteOptions | undefined,
    sql: string
  ) => Effect.Effect<A, E>
  /** `tagged` for paths that do not hold the fiber yet. */
  readonly taggedHere: <A, E>(effect: Effect.Effect<A, E>, options: ExecuteOptions | undefined, sql: string) => Effect.Effect<A, E>
  /** Committed invalidations: announced at COMMIT, forgotten at ROLLBACK. */
  readonly invalidator: Invalidator
  /** Counts one retry (statement or whole transaction). */
  readonly retried: () => void
  readonly retries: () => number
}

/**
 * Builds the core of a database. Configs with the same `hash` share one
 * pool, which closes when the last of them is released; one circuit
 * breaker serves each alias.
 *
 * @internal
 */
export const makeCore = (driver: Driver, config: DatabaseConfig): Effect.Effect<DbCore, never, Scope.Scope> =>
  Effect.gen(function*() {
    const dialect = driver.dialect
    const translator = makeTranslator(dialect)
    const rollbackSql = dialect.rollback
    const breaker = config.circuitBreaker === false ? undefined : yield* acquireShared(
      `breaker:${config.alias}`,
      CircuitBreaker.make(config.alias, config.circuitBreaker),
      () => Effect.void
    )
    let retries = 0

    const metrics = new DbMetrics(
      { alias: config.alias, env: config.env, system: driver.system, namespace: config.database },
      config.metricTagKeys
    )
    const window = new ScalingAdvisor.Window(60)
    const slowStats = new SlowQueries()

    /**
     * Every statement's outcome feeds the breaker, the metrics and the
     * advisor; a slow one is logged (the soft timeout) and kept for `slowQueries`.
     */
    const observe = (
      sql: string,
      failure: Cause.Cause<DbError> | undefined,
      millis: number,
      tags: QueryTags | undefined
    ): Effect.Effect<void> | undefined => {
      const slow = millis >= config.slowQueryThreshold
      let error: DbError | undefined
      if (failure !== undefined) {
        const found = Cause.failureOption(failure)
        // an interrupted statement is not an outcome
        if (found._tag === "None") return undefined
        error = found.value
      }
      breaker?.record(error !== undefined && isInfrastructure(error), millis)
      metrics.statement(millis, error?.category, slow, tags)
      window.statement(millis, error?._tag === "StatementTimeout")
      if (!slow) return undefined
      slowStats.record(sql, millis)
      return Effect.flatMap(FiberRef.get(currentTags), (tags) =>
        Effect.logWarning(`slow query: ${Math.round(millis)} ms`).pipe(
          Effect.annotateLogs({ alias: config.alias, sql, durationMillis: Math.round(millis), tags })
        ))
    }
    const hooks: StatementHooks = {
      guard: makeDdlGuard(dialect, config),
      observe,
      wantsTags: config.metricTagKeys.length > 0
    }

    const needsRollback = (conn: DalConnection) => {
      const state = conn.driver.transactionState()
      return state === "transaction" || state === "failed"
    }
    const rollbackOf = (conn: DalConnection) => conn.run(rollbackSql, noParams, "raw", false)

    // listeners of the pool's connection events, shared like the pool itself
    const poolListeners = yield* acquireShared(
      `events:${config.hash}`,
      Effect.sync(() => new Set<(event: PoolEvent) => void>()),
      () => Effect.void
    )
    const emit = (event: PoolEvent) => {
      for (const listener of poolListeners) listener(event)
    }

    const pool = yield* acquireShared(
      `pool:${config.hash}`,
      Pool.make<DalConnection>({
        alias: config.alias,
        config: config.pool,
        observer: {
          acquired: (ms) => metrics.acquired(ms),
          acquireFailed: (error) => {
            const timeout = error._tag === "PoolTimeout" || error._tag === "StatementTimeout"
            metrics.acquireFailed(timeout, error.category)
            window.acquireFailed(timeout)
            // every lane's failed acquisition, counted once, here; failed statements count where they fail.
            // Only a database that cannot be reached counts: an exhausted pool is back-pressure, not an outage
            if (error._tag === "PoolTimeout" && error.reason === "unavailable") breaker?.record(true, 0)
          },
          released: (ms) => metrics.released(ms),
          created: (ms, conn) => {
            metrics.created(ms)
            if (poolListeners.size > 0) emit({ _tag: "created", driver: conn.driver })
          },
          destroyed: (conn) => {
            metrics.connection("destroyed")
            if (poolListeners.size > 0) emit({ _tag: "destroyed", driver: conn.driver })
          },
          createFailed: () => metrics.connection("failed")
        },
        hooks: {
          create: Effect.map(driver.connect, (dc) => new DalConnection(dc, config.hash, hooks)),
          destroy: (conn) => conn.driver.close,
          validate: (conn) => conn.driver.ping,
          // a session whose state was changed (SET, temp tables, ...) is closed rather than passed on
          isBroken: (conn) => conn.sessionDirty || conn.driver.isBroken(),
          recycle: (conn) => {
            // a connection must never come back inside a transaction: roll it back, or destroy it;
            // nor with a BEGIN held back for a statement that will not come
            conn.driver.heldBegin?.drop()
            const settle = conn.driver.settle()
            if (settle === undefined) return needsRollback(conn) ? rollbackOf(conn) : undefined
            return Effect.zipRight(settle, Effect.suspend(() => needsRollback(conn) ? rollbackOf(conn) : Effect.void))
          }
        }
      }),
      (pool) => driver.shutdown === undefined ? pool.close : Effect.zipRight(pool.close, driver.shutdown)
    )

    // layers that share a pool (same hash) share its transactions; any other client's connection is not ours
    const isOwn = (conn: unknown): conn is DalConnection => conn instanceof DalConnection && conn.owner === config.hash

    const currentTx = (context: Context.Context<never>): readonly [DalConnection, number] | undefined => {
      const tx = Context.getOption(context, SqlClient.TransactionConnection)
      if (tx._tag === "None") return undefined
      const [conn, depth] = tx.value
      return isOwn(conn) ? [conn, depth] : undefined
    }

    /** Fails fast while the breaker is open (the pool's observer counts a failed acquisition against it). */
    const acquire: Effect.Effect<Pool.Lease<DalConnection>, DbError> = breaker === undefined
      ? pool.acquire
      : Effect.suspend(() => breaker.guard(pool.acquire))

    const prepare = (sql: string, params: ReadonlyArray<unknown>): Translated | InvalidQuery => {
      const t = translator.translate(sql)
      if (isFailure(t)) return new InvalidQuery({ reason: t.reason, detail: t.detail, sql })
      if (t.parameterCount !== params.length) {
        return new InvalidQuery({
          reason: "parameterCount",
          detail: `the statement has ${t.parameterCount} placeholder(s) but ${params.length} parameter(s) were given`,
          sql
        })
      }
      if (params.length > dialect.maxParameters) {
        return new InvalidQuery({
          reason: "tooManyParameters",
          detail: `${params.length} parameters exceed the engine's limit of ${dialect.maxParameters}`,
          sql
        })
      }
      const unbindable = unbindableParameter(params)
      if (unbindable !== undefined) return new InvalidQuery({ reason: "invalidParameter", detail: unbindable, sql })
      return t
    }

    const statementTimeout = (options: ExecuteOptions | undefined) =>
      options?.timeout === undefined ? config.statementTimeout : Duration.toMillis(options.timeout)

    const spanAttributes: Record<string, unknown> = {
      "db.system.name": driver.system,
      "db.namespace": config.database,
      "server.address": config.host,
      "server.port": config.port,
      "db.client.alias": config.alias
    }

    /**
     * Tags the call, and gives it an OpenTelemetry-style span (with the `db.*`
     * attributes and the tags) when a tracer other than Effect's built-in one
     * is installed: without one, nobody would see the span, so none is made.
     * `fiber` is the caller's, which every call path has at hand already.
     */
    const tagged = <A, E>(
      fiber: Fiber.RuntimeFiber<unknown, unknown>,
      effect: Effect.Effect<A, E>,
      options: ExecuteOptions | undefined,
      sql: string
    ): Effect.Effect<A, E> => {
      const withTags = options?.tags === undefined ? effect : withTagsOf(options.tags)(effect)
      if (fiber.currentTracer === nativeTracer) return withTags
      const attributes: Record<string, unknown> = { ...spanAttributes, "db.query.text": sql }
      for (const [k, v] of Object.entries({ ...fiber.getFiberRef(currentTags), ...options?.tags })) {
        attributes[`db.tag.${k}`] = v
      }
      return Effect.withSpan(withTags, "db.query", { kind: "client", captureStackTrace: false, attributes })
    }

    /** `tagged` for paths that do not hold the fiber yet. */
    const taggedHere = <A, E>(effect: Effect.Effect<A, E>, options: ExecuteOptions | undefined, sql: string) =>
      Effect.withFiberRuntime<A, E>((fiber) => tagged(fiber, effect, options, sql))

    const invalidator = yield* makeInvalidator(currentTx)

    if (breaker !== undefined) {
      metrics.circuit(breaker.state(), false)
      const unsubscribe = breaker.subscribe((_, to) => metrics.circuit(to, true))
      yield* Effect.addFinalizer(() => Effect.sync(unsubscribe))
    }

    const core: DbCore = {
      driver,
      config,
      dialect,
      breaker,
      metrics,
      window,
      slowStats,
      pool,
      poolListeners,
      hooks,
      currentTx,
      acquire,
      prepare,
      statementTimeout,
      tagged,
      taggedHere,
      invalidator,
      retried: () => {
        retries++
        metrics.retried()
      },
      retries: () => retries
    }
    return core
  })

/**
 * The `Db` service: portable SQL, scoped transactions and batches over an
 * Effect-native pool, for any engine that supplies a `Driver`, with the
 * circuit breaker, safe retries and timeouts on every call.
 *
 * @since 0.1.0
 */
import * as Reactivity from "@effect/experimental/Reactivity"
import * as SqlClient from "@effect/sql/SqlClient"
import type { Row } from "@effect/sql/SqlConnection"
import type { SqlError } from "@effect/sql/SqlError"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Fiber from "effect/Fiber"
import * as FiberRef from "effect/FiberRef"
import type * as MetricLabel from "effect/MetricLabel"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as CircuitBreaker from "./CircuitBreaker.js"
import type { DatabaseConfig } from "./DatabaseConfig.js"
import type { DbError } from "./DbError.js"
import {
  DdlInTransaction,
  InvalidQuery,
  isDbError,
  isInfrastructure,
  OutcomeUnknown,
  StatementTimeout
} from "./DbError.js"
import type { Dialect, IsolationLevel } from "./Dialect.js"
import { quoteIdentifier } from "./Dialect.js"
import type { Driver, DriverConnection, QueryMode, QueryResult } from "./Driver.js"
import type { StatementHooks } from "./internal/connection.js"
import { abortable } from "./internal/abortable.js"
import { DalConnection, toSqlError } from "./internal/connection.js"
import { acquireShared } from "./internal/registry.js"
import { DbMetrics } from "./Metrics.js"
import * as Pool from "./Pool.js"
import type { Translated } from "./PortableSql.js"
import { isFailure, isImplicitCommitDdl, makeTranslator, unbindableParameter } from "./PortableSql.js"
import type { QueryTags } from "./QueryTags.js"
import { currentTags, withTags as withTagsImpl } from "./QueryTags.js"
import type { RetryPolicy } from "./Retry.js"
import * as ScalingAdvisor from "./ScalingAdvisor.js"
import { isReadOnlyStatement, isRetryableStatement, isRetryableTransaction, toSchedule } from "./Retry.js"

/**
 * Options of one statement.
 *
 * @since 0.1.0
 */
export interface ExecuteOptions {
  /** A hard timeout for this call, acquisition and retries included. */
  readonly timeout?: Duration.DurationInput | undefined
  /** Labels for this call, merged over `Db.withTags`. */
  readonly tags?: QueryTags | undefined
  /** This call's retry policy, over the layer's; `false` for none. */
  readonly retry?: RetryPolicy | undefined
  /** The statement may run twice (so a write lost with its connection can be retried). */
  readonly idempotent?: boolean | undefined
}

/**
 * Options of `withTransaction`. Isolation, read-only, retry and timeout apply
 * to a top-level transaction; a nested one becomes a savepoint of its parent.
 *
 * @since 0.1.0
 */
export interface WithTransactionOptions {
  readonly isolation?: IsolationLevel | undefined
  readonly readOnly?: boolean | undefined
  /**
   * Re-run the whole body after a serialization failure, a deadlock, or a
   * connection lost before COMMIT was sent: `true` for the layer's policy, or
   * a policy of its own. Off by default: the body must be safe to re-run.
   */
  readonly retry?: boolean | RetryPolicy | undefined
  /** The whole transaction may run twice: a COMMIT lost with its connection is then retried too. */
  readonly idempotent?: boolean | undefined
  /** A hard timeout for the whole transaction, over the layer's `transactionTimeout`. */
  readonly timeout?: Duration.DurationInput | undefined
}

/**
 * What can run statements: the `Db` itself, or a transaction handle.
 *
 * @since 0.1.0
 */
export interface Executor {
  /** Runs one portable statement and returns its rows. */
  readonly execute: <A extends object = Row>(
    sql: string,
    params?: ReadonlyArray<unknown>,
    options?: ExecuteOptions
  ) => Effect.Effect<ReadonlyArray<A>, DbError>
  /** Runs one statement once per parameter row, in one transaction; returns the affected row count. */
  readonly executeMany: (
    sql: string,
    rows: ReadonlyArray<ReadonlyArray<unknown>>,
    options?: ExecuteOptions
  ) => Effect.Effect<number, DbError>
}

/**
 * Options of `insertMany`.
 *
 * @since 0.1.0
 */
export interface InsertManyOptions extends ExecuteOptions {
  /**
   * Rows per INSERT statement, lowered to fit the engine's parameter limit;
   * default 10,000. A statement also ends after about 4 MB of text and bytes
   * values, well under MySQL's default `max_allowed_packet`.
   */
  readonly chunkSize?: number | undefined
  /** A column whose generated values to return (PostgreSQL `RETURNING`); MySQL reports auto-increment keys. */
  readonly returning?: string | undefined
}

/**
 * What `insertMany` did.
 *
 * @since 0.1.0
 */
export interface InsertManyResult {
  readonly inserted: number
  /** Generated keys, in row order, where the engine reports them. */
  readonly keys: ReadonlyArray<unknown>
}

/**
 * Options of `stream`.
 *
 * @since 0.1.0
 */
export interface StreamOptions {
  /** Rows fetched per round trip; default 128. */
  readonly chunkSize?: number | undefined
}

/**
 * The handle of an open transaction. Its statements run on the transaction's
 * connection.
 *
 * @since 0.1.0
 */
export interface Transaction extends Executor {
  /** 0 for a top-level transaction, 1+ for savepoints. */
  readonly depth: number
}

/**
 * Counters of the resilience machinery.
 *
 * @since 0.1.0
 */
export interface ResilienceStats {
  /** Statements and transactions run again after a retryable failure. */
  readonly retries: number
}

/**
 * One statement shape among the slow ones.
 *
 * @since 0.1.0
 */
export interface SlowQuery {
  /** The statement as sent, with placeholders: never parameter values. */
  readonly sql: string
  readonly count: number
  readonly p50Millis: number
  readonly p99Millis: number
  readonly maxMillis: number
}

/** Durations of slow statements by shape, a bounded sample of each. */
class SlowQueries {
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
 * The service behind the `Db` tag.
 *
 * @since 0.1.0
 */
export interface DbService extends Executor {
  readonly alias: string
  readonly env: string
  readonly dialect: Dialect
  readonly config: DatabaseConfig
  /** The current pool counts. */
  readonly poolStats: () => Pool.PoolStats
  /** The labels every metric of this database carries: read one with `Metric.taggedWithLabels`. */
  readonly metricLabels: ReadonlyArray<MetricLabel.MetricLabel>
  /** The circuit breaker of this alias, if enabled. */
  readonly breaker: CircuitBreaker.CircuitBreaker | undefined
  readonly resilienceStats: () => ResilienceStats
  /** The scaling advisor's report: timeout rate, verdict and capacity arithmetic. */
  readonly health: Effect.Effect<ScalingAdvisor.Report, DbError>
  /** The slowest statement shapes (over `slowQueryThreshold`), slowest p99 first. */
  readonly slowQueries: (n?: number) => ReadonlyArray<SlowQuery>
  /** Brings the gauges (pool sizes, cache counts, advice) up to date now; they also follow once a second. */
  readonly refreshMetrics: Effect.Effect<void>
  /**
   * A transaction as a scoped resource: BEGIN on acquisition, COMMIT when the
   * scope closes successfully, ROLLBACK on failure, defect or interruption.
   * Within the scope, `Db.execute` and `sql` templates run on it too. A
   * failed COMMIT closes the scope with that error as a defect.
   */
  readonly transaction: Effect.Effect<Transaction, DbError, Scope.Scope>
  /**
   * Runs `effect` in a transaction (a savepoint when nested). A failed COMMIT
   * is a typed failure.
   */
  readonly withTransaction: <A, E, R>(
    effect: Effect.Effect<A, E, R>,
    options?: WithTransactionOptions
  ) => Effect.Effect<A, E | DbError, R>
  /** The `@effect/sql` client over the same pool. */
  readonly sql: SqlClient.SqlClient
  /**
   * Inserts rows (objects with the same keys) as multi-row INSERTs, chunked
   * under the engine's parameter limit: all or nothing (several statements
   * run in one transaction).
   */
  readonly insertMany: (
    table: string,
    rows: ReadonlyArray<Readonly<Record<string, unknown>>>,
    options?: InsertManyOptions
  ) => Effect.Effect<InsertManyResult, DbError>
  /**
   * Reads a large result with a cursor (PostgreSQL) or a streaming query
   * (MySQL), with back-pressure and bounded memory. The connection is held
   * while the stream runs and released when it ends or is interrupted.
   */
  readonly stream: <A extends object = Row>(
    sql: string,
    params?: ReadonlyArray<unknown>,
    options?: StreamOptions
  ) => Stream.Stream<A, DbError>
  /** Prepared-statement cache counts over every connection of the pool. */
  readonly statementCacheStats: () => { readonly hits: number; readonly misses: number; readonly evictions: number }
}

/**
 * The database service tag, with accessors: `yield* Db`, `Db.execute(...)`,
 * `yield* Db.transaction`, `Db.withTransaction(effect)`.
 *
 * @since 0.1.0
 */
export class Db extends Context.Tag("@effect-dal/core/Db")<Db, DbService>() {
  /** Runs one portable statement on the current `Db`. */
  static execute = <A extends object = Row>(
    sql: string,
    params?: ReadonlyArray<unknown>,
    options?: ExecuteOptions
  ): Effect.Effect<ReadonlyArray<A>, DbError, Db> => Effect.flatMap(Db, (db) => db.execute<A>(sql, params, options))

  /** Runs one statement per parameter row in one transaction. */
  static executeMany = (
    sql: string,
    rows: ReadonlyArray<ReadonlyArray<unknown>>,
    options?: ExecuteOptions
  ): Effect.Effect<number, DbError, Db> => Effect.flatMap(Db, (db) => db.executeMany(sql, rows, options))

  /** A scoped transaction on the current `Db`. */
  static transaction: Effect.Effect<Transaction, DbError, Db | Scope.Scope> = Effect.flatMap(
    Db,
    (db) => db.transaction
  )

  /** Runs `effect` in a transaction of the current `Db`. */
  static withTransaction = <A, E, R>(
    effect: Effect.Effect<A, E, R>,
    options?: WithTransactionOptions
  ): Effect.Effect<A, E | DbError, R | Db> => Effect.flatMap(Db, (db) => db.withTransaction(effect, options))

  /** Inserts rows as chunked multi-row INSERTs in one transaction. */
  static insertMany = (
    table: string,
    rows: ReadonlyArray<Readonly<Record<string, unknown>>>,
    options?: InsertManyOptions
  ): Effect.Effect<InsertManyResult, DbError, Db> => Effect.flatMap(Db, (db) => db.insertMany(table, rows, options))

  /** Streams a large result with back-pressure. */
  static stream = <A extends object = Row>(
    sql: string,
    params?: ReadonlyArray<unknown>,
    options?: StreamOptions
  ): Stream.Stream<A, DbError, Db> => Stream.unwrap(Effect.map(Db, (db) => db.stream<A>(sql, params, options)))

  /** The scaling advisor's report for the current `Db`. */
  static health: Effect.Effect<ScalingAdvisor.Report, DbError, Db> = Effect.flatMap(Db, (db) => db.health)

  /** The slowest statement shapes of the current `Db`. */
  static slowQueries = (n?: number): Effect.Effect<ReadonlyArray<SlowQuery>, never, Db> =>
    Effect.map(Db, (db) => db.slowQueries(n))

  /** Runs `effect` with these tags merged over the current ones. */
  static withTags = withTagsImpl
}

const noParams: ReadonlyArray<unknown> = []

/** Effect's built-in tracer: when it is the current one, no span is worth making. */
const nativeTracer = Effect.runSync(Effect.tracer)

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

const identity = <A>(a: A): A => a

/** What a statement may still take of a call's deadline (at least 1 ms: the driver cuts it then). */
const timeLeft = (deadline: number | undefined): number | undefined =>
  deadline === undefined ? undefined : Math.max(1, deadline - Date.now())

const insertTexts = new Map<string, string>()

/**
 * The text of a multi-row INSERT, kept for the shapes last used (64 of them):
 * building 10,000 tuples of placeholders takes about 2 ms.
 */
const insertText = (dialect: Dialect, head: string, columns: number, count: number, returning: string): string => {
  const key = `${dialect.name}\u0000${count}\u0000${returning}\u0000${head}`
  const hit = insertTexts.get(key)
  if (hit !== undefined) return hit
  const tuples: Array<string> = []
  let n = 0
  for (let r = 0; r < count; r++) {
    const slots: Array<string> = []
    for (let c = 0; c < columns; c++) slots.push(dialect.placeholder(++n))
    tuples.push(`(${slots.join(", ")})`)
  }
  const text = head + tuples.join(", ") + returning
  if (insertTexts.size >= 64) insertTexts.delete(insertTexts.keys().next().value!)
  insertTexts.set(key, text)
  return text
}

/** About how much text and bytes one INSERT statement of `insertMany` may carry. */
const CHUNK_BYTES = 4 * 1024 * 1024

/** Cuts rows into statements of at most `perChunk` rows and about `CHUNK_BYTES` of values. */
const chunkRows = <R extends Readonly<Record<string, unknown>>>(
  rows: ReadonlyArray<R>,
  columns: ReadonlyArray<string>,
  perChunk: number
): Array<ReadonlyArray<R>> => {
  const chunks: Array<ReadonlyArray<R>> = []
  let start = 0
  let bytes = 0
  for (let i = 0; i < rows.length; i++) {
    let size = 0
    for (const column of columns) {
      const v = rows[i]![column]
      if (typeof v === "string") size += v.length
      else if (v instanceof Uint8Array) size += v.byteLength
    }
    if (i > start && (i - start >= perChunk || bytes + size > CHUNK_BYTES)) {
      chunks.push(rows.slice(start, i))
      start = i
      bytes = 0
    }
    bytes += size
  }
  chunks.push(rows.slice(start))
  return chunks
}

/**
 * Builds a `Db` for an engine's driver. Configs with the same `hash` share
 * one pool, which closes when the last of them is released; one circuit
 * breaker serves each alias.
 *
 * @since 0.1.0
 */
export const make = (driver: Driver, config: DatabaseConfig): Effect.Effect<DbService, never, Scope.Scope> =>
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
          created: (ms) => metrics.created(ms),
          destroyed: () => metrics.connection("destroyed"),
          createFailed: () => metrics.connection("failed")
        },
        hooks: {
          create: Effect.map(driver.connect, (dc) => new DalConnection(dc, config.hash, hooks)),
          destroy: (conn) => conn.driver.close,
          validate: (conn) => conn.driver.ping,
          // a session whose state was changed (SET, temp tables, ...) is closed rather than passed on
          isBroken: (conn) => conn.sessionDirty || conn.driver.isBroken(),
          recycle: (conn) => {
            // a connection must never come back inside a transaction: roll it back, or destroy it
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

    /** A hard timeout around a whole batch (executeMany, insertMany); single statements use driver deadlines. */
    const withTimeout = <A, E, R>(
      effect: Effect.Effect<A, E, R>,
      millis: number | undefined,
      sql: string | undefined
    ): Effect.Effect<A, E | StatementTimeout, R> =>
      millis === undefined ? effect : Effect.timeoutFail(effect, {
        duration: millis,
        onTimeout: () => {
          breaker?.record(true, millis)
          return new StatementTimeout({ kind: "statement", timeoutMillis: millis, sql })
        }
      })

    const statementTimeout = (options: ExecuteOptions | undefined) =>
      options?.timeout === undefined ? config.statementTimeout : Duration.toMillis(options.timeout)

    const defaultSchedule = toSchedule(config.retry)

    /**
     * One statement on a connection of its own, all in callbacks when the
     * pool can lend one without effects: the connection goes from the
     * finished statement straight to the next caller's, with no fiber in
     * between. Interrupted, it withdraws from the queue or aborts the statement.
     */
    const leased = (
      fiber: Fiber.RuntimeFiber<unknown, unknown>,
      sql: string,
      params: ReadonlyArray<unknown>,
      mode: QueryMode,
      prepared: boolean,
      deadline: number | undefined,
      timedOut: () => DbError
    ): Effect.Effect<any, DbError> => {
      let state: "waiting" | "running" | "done" = "waiting"
      let lease: Pool.Lease<DalConnection> | undefined
      let abort: (() => void) | undefined
      let withdraw: (() => void) | undefined
      return abortable<any, DbError>((resume) => {
        const tags = hooks.wantsTags ? fiber.getFiberRef(currentTags) : undefined
        withdraw = pool.borrow(fiber, deadline, timedOut, (l) => {
          state = "running"
          lease = l
          try {
            const aborter = l.conn.send(sql, params, mode, prepared, timeLeft(deadline), tags, (outcome) => {
              state = "done"
              pool.releaseNow(l)
              resume(outcome)
            })
            if (state === "running") abort = aborter
          } catch (defect) {
            // a driver that throws instead of reporting: the caller dies, the pool stays whole
            state = "done"
            pool.releaseNow(l)
            resume(Effect.die(defect))
          }
        }, (error) => {
          state = "done"
          resume(Effect.fail(error))
        })
        if (withdraw === undefined) {
          state = "done"
          resume(pool.use(deadline, timedOut, (conn) => conn.run(sql, params, mode, prepared, timeLeft(deadline))))
        }
      }, () => {
        if (state === "waiting") withdraw?.()
        else if (state === "running") {
          state = "done"
          abort?.()
          pool.releaseNow(lease!)
        }
      })
    }

    /**
     * A statement outside any transaction: the breaker, acquisition and the
     * statement, all within the call's deadline. Retries start only after a
     * failure, where safe; a write lost with its connection becomes
     * `OutcomeUnknown`, never retried blindly.
     */
    const autocommit = (
      fiber: Fiber.RuntimeFiber<unknown, unknown>,
      sql: string,
      params: ReadonlyArray<unknown>,
      options: ExecuteOptions | undefined,
      timeout: number | undefined,
      mode: QueryMode = "rows",
      prepared = true
    ): Effect.Effect<any, DbError> => {
      const deadline = timeout === undefined ? undefined : Date.now() + timeout
      const timedOut = () => new StatementTimeout({ kind: "statement", timeoutMillis: timeout!, sql })
      const attemptNow = (): Effect.Effect<any, DbError> => {
        const run = deadline !== undefined && Date.now() >= deadline
          ? Effect.fail(timedOut())
          : leased(fiber, sql, params, mode, prepared, deadline, timedOut)
        return breaker === undefined ? run : breaker.guard(run)
      }
      // the caller runs this lazily already (it holds the fiber): only retries need a suspended attempt
      return Effect.catchAll(attemptNow(), (first) => {
        const attempt = Effect.suspend(attemptNow)
        const read = isReadOnlyStatement(sql)
        const idempotent = options?.idempotent === true
        const final = (error: DbError): DbError =>
          !read && !idempotent && error._tag === "ConnectionError" && error.phase === "query"
            ? new OutcomeUnknown({ phase: "write", sql, cause: error })
            // the driver was given what was left of the call's time; report the call's timeout
            : error._tag === "StatementTimeout" && timeout !== undefined && error.timeoutMillis !== timeout
            ? timedOut()
            : error
        const schedule = options?.retry === undefined ? defaultSchedule : toSchedule(options.retry)
        if (schedule === undefined || !isRetryableStatement(first, read, idempotent)) return Effect.fail(final(first))
        // the schedule sees the first failure as its first input, then paces the attempts after it
        let replayed = false
        const again = Effect.suspend(() => {
          if (replayed) return attempt
          replayed = true
          return Effect.fail(first)
        })
        return Effect.retry(again, {
          schedule,
          while: (error) => {
            const retry = isRetryableStatement(error, read, idempotent) &&
              (deadline === undefined || Date.now() < deadline)
            if (retry) {
              retries++
              metrics.retried()
            }
            return retry
          }
        }).pipe(Effect.mapError(final))
      })
    }


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
      const withTags = options?.tags === undefined ? effect : withTagsImpl(options.tags)(effect)
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

    const executeOn = (conn: DalConnection | undefined) =>
    <A extends object = Row>(
      sql: string,
      params: ReadonlyArray<unknown> = noParams,
      options?: ExecuteOptions
    ): Effect.Effect<ReadonlyArray<A>, DbError> => {
      const t = prepare(sql, params)
      if (t instanceof InvalidQuery) return Effect.fail(t)
      const timeout = statementTimeout(options)
      if (conn !== undefined) return taggedHere(conn.run(t.sql, params, "rows", true, timeout), options, t.sql)
      return Effect.withFiberRuntime<ReadonlyArray<A>, DbError>((fiber) => {
        const tx = currentTx(fiber.currentContext)
        return tagged(
          fiber,
          tx === undefined ? autocommit(fiber, t.sql, params, options, timeout) : tx[0].run(t.sql, params, "rows", true, timeout),
          options,
          t.sql
        )
      })
    }

    const executeManyOn = (conn: DalConnection | undefined) =>
    (
      sql: string,
      rows: ReadonlyArray<ReadonlyArray<unknown>>,
      options?: ExecuteOptions
    ): Effect.Effect<number, DbError> =>
      Effect.suspend(() => {
        if (rows.length === 0) return Effect.succeed(0)
        let translated: Translated | undefined
        for (const row of rows) {
          const t = prepare(sql, row)
          if (t instanceof InvalidQuery) return Effect.fail(t)
          translated = t
        }
        const nativeSql = translated!.sql
        const body = Effect.withFiberRuntime<number, DbError>((fiber) =>
          (conn ?? currentTx(fiber.currentContext)![0]).batch(nativeSql, rows)
        )
        return taggedHere(
          withTimeout(runTransaction(body, {}, identity), statementTimeout(options), sql),
          options,
          nativeSql
        )
      })

    const insertMany = (
      table: string,
      rows: ReadonlyArray<Readonly<Record<string, unknown>>>,
      options?: InsertManyOptions
    ): Effect.Effect<InsertManyResult, DbError> =>
      Effect.suspend(() => {
        if (rows.length === 0) return Effect.succeed({ inserted: 0, keys: [] })
        const columns = Object.keys(rows[0]!)
        if (columns.length === 0) {
          return Effect.fail(new InvalidQuery({ reason: "invalidArgument", detail: "rows have no columns", sql: undefined }))
        }
        for (let r = 0; r < rows.length; r++) {
          const row = rows[r]!
          const keys = Object.keys(row)
          if (keys.length !== columns.length || keys.some((k) => !(k in rows[0]!))) {
            return Effect.fail(
              new InvalidQuery({
                reason: "invalidArgument",
                detail: `every row must have the same columns (${columns.join(", ")})`,
                sql: undefined
              })
            )
          }
          const unbindable = unbindableParameter(columns.map((c) => row[c]))
          if (unbindable !== undefined) {
            return Effect.fail(
              new InvalidQuery({ reason: "invalidParameter", detail: `row ${r + 1}: ${unbindable}`, sql: undefined })
            )
          }
        }
        // as many rows per statement as the engine's parameter limit allows
        const perChunk = Math.max(
          1,
          Math.min(options?.chunkSize ?? 10_000, Math.floor(dialect.maxParameters / columns.length))
        )
        const head = `INSERT INTO ${quoteIdentifier(dialect, table)} (${
          columns.map((c) => quoteIdentifier(dialect, c)).join(", ")
        }) VALUES `
        const returning = options?.returning !== undefined && dialect.name === "pg"
          ? ` RETURNING ${quoteIdentifier(dialect, options.returning)}`
          : ""
        const chunks = chunkRows(rows, columns, perChunk)
        const keys: Array<unknown> = []
        let inserted = 0
        const sqlOf = (chunk: ReadonlyArray<Readonly<Record<string, unknown>>>) =>
          insertText(dialect, head, columns.length, chunk.length, returning)
        const paramsOf = (chunk: ReadonlyArray<Readonly<Record<string, unknown>>>) => {
          const params: Array<unknown> = []
          for (const row of chunk) for (const column of columns) params.push(row[column])
          return params
        }
        const collect = (r: QueryResult): void => {
          inserted += r.affected
          if (returning !== "") for (const row of r.rows) keys.push(row[options!.returning!])
          else if (r.insertId !== undefined && r.insertId > 0) {
            for (let k = 0; k < r.affected; k++) keys.push(r.insertId + k)
          }
        }
        const result = (): InsertManyResult => ({ inserted, keys })
        if (chunks.length === 1) {
          // one statement is atomic by itself: no BEGIN and COMMIT around it
          const sql = sqlOf(chunks[0]!)
          const params = paramsOf(chunks[0]!)
          return Effect.withFiberRuntime<InsertManyResult, DbError>((fiber) => {
            const tx = currentTx(fiber.currentContext)
            const timeout = statementTimeout(options)
            const run = tx === undefined
              ? autocommit(fiber, sql, params, options, timeout, "result", false)
              : tx[0].run(sql, params, "result", false, timeout)
            return tagged(fiber, Effect.map(run as Effect.Effect<QueryResult, DbError>, (r) => {
              collect(r)
              return result()
            }), options, head)
          })
        }
        const body = Effect.withFiberRuntime<InsertManyResult, DbError>((fiber) => {
          const c = currentTx(fiber.currentContext)![0]
          return Effect.map(
            Effect.forEach(chunks, (chunk) =>
              // one-off texts: kept out of the statement cache
              Effect.map(c.run(sqlOf(chunk), paramsOf(chunk), "result", false) as Effect.Effect<QueryResult, DbError>, collect), { discard: true }),
            result
          )
        })
        return taggedHere(
          withTimeout(runTransaction(body, {}, identity), statementTimeout(options), head),
          options,
          head
        )
      })

    const stream = <A extends object = Row>(
      sql: string,
      params: ReadonlyArray<unknown> = noParams,
      options?: StreamOptions
    ): Stream.Stream<A, DbError> => {
      const t = prepare(sql, params)
      if (t instanceof InvalidQuery) return Stream.fail(t)
      const chunkSize = options?.chunkSize ?? 128
      return Stream.unwrapScoped(Effect.withFiberRuntime<Stream.Stream<A, DbError>, DbError, Scope.Scope>((fiber) => {
        const tx = currentTx(fiber.currentContext)
        if (tx !== undefined) return Effect.succeed(tx[0].stream(t.sql, params, chunkSize))
        // the connection is held while the stream is read, and goes back when it ends or is interrupted
        return Effect.map(
          Effect.acquireRelease(acquire, pool.release),
          (lease) => lease.conn.stream(t.sql, params, chunkSize)
        )
      }))
    }

    const txContext = (context: Context.Context<never>, conn: DalConnection, depth: number) =>
      Context.add(context, SqlClient.TransactionConnection, [conn, depth] as const)

    const savepointName = (depth: number) => `dal_sp_${depth}`

    const rollbackQuietly = (conn: DalConnection, sql: string) =>
      Effect.catchAll(conn.run(sql, noParams, "raw", false), () => Effect.void)

    /**
     * Ends a failed top-level transaction. While an interrupted statement is
     * still being cancelled, the caller does not wait: the pool rolls back in
     * the background before the connection is reused.
     */
    const rollbackTop = (conn: DalConnection) =>
      Effect.suspend(() => (conn.driver.settle() === undefined ? rollbackQuietly(conn, rollbackSql) : Effect.void))

    /** A COMMIT whose connection was lost may or may not have been applied. */
    const commit = (conn: DalConnection): Effect.Effect<void, DbError> =>
      Effect.catchTag(
        conn.run(dialect.commit, noParams, "raw", false),
        "ConnectionError",
        (error) => Effect.fail(new OutcomeUnknown({ phase: "commit", sql: dialect.commit, cause: error }))
      )

    const begin = (conn: DalConnection, options: WithTransactionOptions): Effect.Effect<void, DbError> => {
      const statements = dialect.begin(options)
      return statements.length === 1
        ? conn.run(statements[0]!, noParams, "raw", false)
        : Effect.forEach(statements, (s) => conn.run(s, noParams, "raw", false), { discard: true })
    }

    const transactionTimedOut = (millis: number) => () => {
      metrics.transactionTimedOut()
      breaker?.record(true, millis)
      return new StatementTimeout({ kind: "transaction", timeoutMillis: millis, sql: undefined })
    }

    /**
     * One attempt of a top-level transaction, or a savepoint when one is open.
     * A `timeout` is a deadline on the connection: every statement of the
     * transaction is cut at it, and a body that outlives it is rolled back
     * instead of committed. No fiber races the transaction.
     */
    const transactionOnce = <A, E, R, E2>(
      effect: Effect.Effect<A, E, R>,
      options: WithTransactionOptions,
      mapError: (e: DbError) => E2,
      timeout?: number
    ): Effect.Effect<A, E | E2, R> =>
      Effect.uninterruptibleMask((restore) =>
        Effect.withFiberRuntime<A, E | E2, R>((fiber) => {
          const context = fiber.currentContext
          const parent = currentTx(context)
          if (parent !== undefined) {
            const [conn, parentDepth] = parent
            const depth = parentDepth + 1
            const name = savepointName(depth)
            return conn.run(dialect.savepoint(name), noParams, "raw", false).pipe(
              Effect.mapError(mapError),
              Effect.zipRight(
                Effect.exit(Effect.locally(restore(effect), FiberRef.currentContext, txContext(context, conn, depth)))
              ),
              Effect.flatMap((exit): Effect.Effect<A, E | E2> =>
                Exit.isSuccess(exit)
                  ? Effect.as(
                    Effect.mapError(conn.run(dialect.releaseSavepoint(name), noParams, "raw", false), mapError),
                    exit.value
                  )
                  : Effect.zipRight(rollbackQuietly(conn, dialect.rollbackSavepoint(name)), exit)
              )
            )
          }
          // most callers want our errors as they are: no mapping op for them
          const typed = <X>(e: Effect.Effect<X, DbError>): Effect.Effect<X, E2> =>
            mapError === (identity as unknown) ? e as Effect.Effect<X, never> : Effect.mapError(e, mapError)
          return Effect.flatMap(typed(restore(acquire)), (lease) => {
            const conn = lease.conn
            const deadline = timeout === undefined
              ? undefined
              : { at: Date.now() + timeout, error: transactionTimedOut(timeout) }
            return typed(begin(conn, options)).pipe(
              Effect.flatMap(() => {
                conn.txDeadline = deadline
                return Effect.exit(Effect.locally(restore(effect), FiberRef.currentContext, txContext(context, conn, 0)))
              }),
              Effect.flatMap((exit): Effect.Effect<A, E | E2> => {
                // COMMIT and ROLLBACK are never cut short: a cancelled COMMIT would leave the outcome unknown
                conn.txDeadline = undefined
                if (Exit.isFailure(exit)) return Effect.zipRight(rollbackTop(conn), exit)
                if (deadline !== undefined && Date.now() > deadline.at) {
                  return Effect.zipRight(rollbackTop(conn), Effect.fail(mapError(deadline.error())))
                }
                return Effect.as(typed(commit(conn)), exit.value)
              }),
              Effect.ensuring(Effect.suspend(() => {
                conn.txDeadline = undefined
                return pool.release(lease)
              }))
            )
          })
        })
      )

    /**
     * The shared machinery of `withTransaction`, `executeMany` and
     * `sql.withTransaction`: `mapError` types our own failures. Retries and
     * the transaction timeout apply to a top-level transaction only.
     */
    const runTransaction = <A, E, R, E2>(
      effect: Effect.Effect<A, E, R>,
      options: WithTransactionOptions,
      mapError: (e: DbError) => E2
    ): Effect.Effect<A, E | E2, R> =>
      Effect.withFiberRuntime<A, E | E2, R>((fiber) => {
        if (currentTx(fiber.currentContext) !== undefined) return transactionOnce(effect, options, mapError)
        const timeout = options.timeout === undefined ? config.transactionTimeout : Duration.toMillis(options.timeout)
        const policy = options.retry === undefined || options.retry === false
          ? undefined
          : options.retry === true
          ? config.retry ?? {}
          : options.retry
        const schedule = policy === undefined ? undefined : toSchedule(policy)
        let attempt: Effect.Effect<A, E | DbError, R> = transactionOnce(effect, options, identity, timeout)
        if (schedule !== undefined) {
          attempt = Effect.retry(attempt, {
            schedule: schedule as any,
            while: (error: E | DbError) => {
              // the body's own errors are never retried; ours only where re-running the whole body is safe
              const again = isOurs(error) &&
                (isRetryableTransaction(error) || (options.idempotent === true && error._tag === "OutcomeUnknown"))
              if (again) {
                retries++
                metrics.retried()
              }
              return again
            }
          }) as Effect.Effect<A, E | DbError, R>
        }
        if (mapError === (identity as unknown)) return attempt as Effect.Effect<A, E | E2, R>
        return Effect.mapError(attempt, (error): E | E2 => (isOurs(error) ? mapError(error) : error as E))
      })

    const isOurs = (error: unknown): error is DbError => isDbError(error)

    const handle = (conn: DalConnection, depth: number): Transaction => ({
      depth,
      execute: executeOn(conn),
      executeMany: executeManyOn(conn)
    })

    const transaction: Effect.Effect<Transaction, DbError, Scope.Scope> = Effect.uninterruptibleMask((restore) =>
      Effect.withFiberRuntime<Transaction, DbError, Scope.Scope>((fiber) => {
        const parent = currentTx(fiber.currentContext)
        const bind = (conn: DalConnection, depth: number) =>
          Effect.as(
            Effect.locallyScopedWith(FiberRef.currentContext, (ctx) => txContext(ctx, conn, depth)),
            handle(conn, depth)
          )
        if (parent !== undefined) {
          const [conn, parentDepth] = parent
          const depth = parentDepth + 1
          const name = savepointName(depth)
          return conn.run(dialect.savepoint(name), noParams, "raw", false).pipe(
            Effect.zipRight(Effect.addFinalizer((exit) =>
              Exit.isSuccess(exit)
                ? Effect.orDie(conn.run(dialect.releaseSavepoint(name), noParams, "raw", false))
                : rollbackQuietly(conn, dialect.rollbackSavepoint(name))
            )),
            Effect.zipRight(bind(conn, depth))
          )
        }
        return Effect.flatMap(restore(acquire), (lease) =>
          begin(lease.conn, {}).pipe(
            Effect.tapError(() => pool.release(lease)),
            Effect.zipRight(Effect.addFinalizer((exit) =>
              Effect.ensuring(
                Exit.isSuccess(exit) ? Effect.orDie(commit(lease.conn)) : rollbackTop(lease.conn),
                pool.release(lease)
              )
            )),
            Effect.zipRight(bind(lease.conn, 0))
          ))
      })
    )

    const acquireForSql: Effect.Effect<DalConnection, SqlError, Scope.Scope> = Effect.acquireRelease(
      Effect.mapError(acquire, toSqlError),
      pool.release
    ).pipe(Effect.map((lease) => lease.conn))

    const sqlClient = yield* SqlClient.make({
      acquirer: acquireForSql,
      transactionAcquirer: acquireForSql,
      compiler: driver.compiler,
      spanAttributes: [
        ...driver.spanAttributes,
        ["db.system.name", driver.system],
        ["db.namespace", config.database],
        ["server.address", config.host],
        ["server.port", config.port]
      ],
      transformRows: driver.transformRows
    }).pipe(Effect.provide(Reactivity.layer))

    // `sql.withTransaction` shares our transaction machinery, so it and `Db.withTransaction` nest and mix freely
    const sql: SqlClient.SqlClient = Object.assign(sqlClient, {
      withTransaction: <A, E, R>(effect: Effect.Effect<A, E, R>) => runTransaction(effect, {}, toSqlError)
    })

    if (breaker !== undefined) {
      metrics.circuit(breaker.state(), false)
      const unsubscribe = breaker.subscribe((_, to) => metrics.circuit(to, true))
      yield* Effect.addFinalizer(() => Effect.sync(unsubscribe))
    }

    const advice = () => window.report(config.pool.max, serverMaxConnections)
    const refreshMetrics = Effect.sync(() => {
      const report = advice()
      metrics.sync(pool.stats(), driver.statementCache, { timeoutRate: report.timeoutRate, level: report.level })
    })
    // gauges follow the pool once a second; `refreshMetrics` brings them up to date at once
    yield* Effect.forkScoped(Effect.forever(Effect.zipRight(refreshMetrics, Effect.sleep("1 second"))))

    let serverMaxConnections: number | undefined = undefined
    const health: Effect.Effect<ScalingAdvisor.Report, DbError> = Effect.suspend(() => {
      if (serverMaxConnections !== undefined) return Effect.succeed(advice())
      return Effect.map(executeOn(undefined)<{ max_connections: unknown }>(dialect.maxConnectionsSql), (rows) => {
        const value = Number(rows[0]?.max_connections)
        if (Number.isFinite(value) && value > 0) serverMaxConnections = value
        return advice()
      })
    })

    const service: DbService = {
      alias: config.alias,
      env: config.env,
      dialect,
      config,
      poolStats: pool.stats,
      metricLabels: metrics.labels,
      breaker,
      resilienceStats: () => ({ retries }),
      health,
      slowQueries: (n = 10) => slowStats.top(n),
      refreshMetrics,
      execute: executeOn(undefined),
      executeMany: executeManyOn(undefined),
      insertMany,
      stream,
      statementCacheStats: () => ({ ...driver.statementCache }),
      transaction,
      withTransaction: (effect, options) => runTransaction(effect, options ?? {}, identity),
      sql
    }
    return service
  })

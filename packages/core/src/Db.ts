/**
 * The `Db` service: portable SQL, scoped transactions and batches over an
 * Effect-native pool, for any engine that supplies a `Driver`, with the
 * circuit breaker, safe retries and timeouts on every call.
 *
 * @since 0.1.0
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type { Row } from "@effect/sql/SqlConnection"
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import type * as FiberStatus from "effect/FiberStatus"
import * as FiberRef from "effect/FiberRef"
import type * as MetricLabel from "effect/MetricLabel"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import type * as CircuitBreaker from "./CircuitBreaker.js"
import type { DatabaseConfig } from "./DatabaseConfig.js"
import type { DbError } from "./DbError.js"
import type { Dialect, IsolationLevel } from "./Dialect.js"
import type { Driver } from "./Driver.js"
import type { DalConnection } from "./internal/connection.js"
import { identity, makeCore } from "./internal/core.js"
import { makeBatches } from "./internal/batches.js"
import { makeHealth } from "./internal/health.js"
import { makeNative } from "./internal/native.js"
import { makeTwoPhase } from "./internal/twoPhase.js"
import { makeSqlClient } from "./internal/sqlBridge.js"
import { makeStatements } from "./internal/statements.js"
import { makeTransactions } from "./internal/transactions.js"
import type * as Invalidation from "./Invalidation.js"
import type * as Native from "./Native.js"
import type * as TwoPhase from "./TwoPhase.js"
import type * as Pool from "./Pool.js"
import * as Replication from "./Replication.js"
import type { QueryTags } from "./QueryTags.js"
import { withTags as withTagsImpl } from "./QueryTags.js"
import type { RetryPolicy } from "./Retry.js"
import type * as ScalingAdvisor from "./ScalingAdvisor.js"

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
  /**
   * What this write makes stale (`["users"]`, `{ users: [id] }`): announced to
   * caches and `Reactivity` once it is committed (at the transaction's COMMIT
   * inside one), never after a rollback.
   */
  readonly invalidates?: Invalidation.Keys | undefined
}

/**
 * A router's admission of one statement (see `DbService.executeAdmitted`).
 *
 * @since 0.3.0
 */
export interface Admission<A, E> {
  /**
   * Called synchronously as each attempt is about to wait for a connection:
   * `true` admits it, and `leave` then follows exactly once, when the
   * attempt is over, however it ends.
   */
  readonly enter: () => boolean
  /** An admitted attempt is over. */
  readonly leave: () => void
  /** What runs in place of an attempt that was not admitted. */
  readonly instead: () => Effect.Effect<ReadonlyArray<A>, E>
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
  /**
   * Called once the COMMIT succeeded, with the primary's commit position
   * read in the COMMIT's own round trip (PostgreSQL: pipelined behind it).
   * Not called where the engine cannot pipeline the read, or the
   * transaction sent nothing: the replica router's read-your-writes then
   * reads the position when a read first needs it.
   */
  readonly onCommitPosition?: ((position: string | undefined) => void) | undefined
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
  /**
   * Rows whose `keys` (a primary key or unique columns) already exist are
   * skipped (`"ignore"`), or their other columns updated (`"update"`): an
   * idempotent insert, or an upsert. `inserted` then counts what the engine
   * reports as affected.
   */
  readonly onConflict?: { readonly keys: ReadonlyArray<string>; readonly action: "ignore" | "update" } | undefined
  /**
   * Rows from which the engine's bulk load (PostgreSQL's `COPY … FROM STDIN`,
   * MySQL's `LOAD DATA LOCAL INFILE`) is used, where the driver has one and neither `returning` nor
   * `onConflict` is asked; default 3,000. `Infinity` never uses it.
   */
  readonly copyThreshold?: number | undefined
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
  /**
   * Whether a fiber's context (`fiber.currentContext`) holds an open
   * transaction on this database's connections: how a router finds the node
   * a transaction runs on, with no state of its own to keep in step.
   */
  readonly ownsTransaction: (context: Context.Context<never>) => boolean
  /** The `@effect/sql` client over the same pool. */
  readonly sql: SqlClient.SqlClient
  /**
   * `execute` under a router's admission: each attempt is admitted and let
   * go in the same synchronous steps that send it and see it end, so that a
   * router counts what it has in flight (the shard router, for a move's
   * freeze) with no uninterruptible region of its own per call. Absent where
   * the service is itself a router.
   */
  readonly executeAdmitted?: (<A extends object, E>(
    admission: Admission<A, E>,
    sql: string,
    params?: ReadonlyArray<unknown>,
    options?: ExecuteOptions
  ) => Effect.Effect<ReadonlyArray<A>, DbError | E>) | undefined
  /**
   * Inserts rows (objects with the same keys, typed with a `type` or an
   * `interface`) as multi-row INSERTs, chunked under the engine's parameter
   * limit: all or nothing (several statements run in one transaction).
   */
  readonly insertMany: (
    table: string,
    rows: ReadonlyArray<object>,
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
  /** Per node (the primary, and replicas when there are some): role, lag, whether it is usable, reads routed. */
  readonly replicationStats: () => ReadonlyArray<NodeStats>
  /** Commit positions of this database's engine, when it has replication. */
  readonly replication: Replication.Replication | undefined
  /** The commit position of this fiber's last write, as a token (see `Db.commitToken`). */
  readonly commitToken: Effect.Effect<string | undefined>
  /** The driver's own SQL and options on this pool: what the driver-compatible pools are built on. */
  readonly native: Native.NativeLane
  /** Committed invalidations: subscribe to them, and the `Reactivity` that `sql` templates use. */
  readonly invalidations: Invalidation.Invalidations
  /** Announces `keys` once the fiber's transaction commits (at once outside one). */
  readonly invalidate: (keys: Invalidation.Keys) => Effect.Effect<void>
  /** Two-phase commit branches, for transactions that span several databases (`Sharding.withAtomicTransaction`). */
  readonly twoPhase: TwoPhase.TwoPhase
}

/**
 * One node of a database, as `replicationStats` reports it.
 *
 * @since 0.2.0
 */
export interface NodeStats {
  readonly alias: string
  readonly role: "primary" | "replica"
  /** The primary's `host:port` as last seen, for a database named by several hosts. */
  readonly host?: string | undefined
  /** Bytes behind the primary, where the engine measures it. */
  readonly lagBytes: number | undefined
  /** Time behind the primary while it writes, ms. */
  readonly lagMillis: number | undefined
  /** Whether reads may go to it now (reachable, within `maxLag`, breaker not open). */
  readonly usable: boolean
  /** Its pool's connections in use over its max. */
  readonly utilization: number
  /** Reads routed to it. */
  readonly reads: number
  /**
   * Statements in flight on it (replicas): its pool's connections in use and
   * the callers waiting for one, that is its reads and lag checks; a
   * cancelled read counts until its connection is free again.
   */
  readonly readsInFlight?: number | undefined
  /** Reads that could not run on it and went elsewhere. */
  readonly fallbacks: number
}

/**
 * `f` applied to the fiber's `Db`, in one step of the run loop where
 * `Effect.flatMap(Db, f)` takes three: the accessors are on every statement's path.
 */
function withDb<A, E, R>(f: (db: DbService) => Effect.Effect<A, E, R>): Effect.Effect<A, E, R | Db> {
  return Effect.withFiberRuntime((fiber) => f(Context.unsafeGet(fiber.currentContext, Db)))
}

/**
 * On a database's `execute` function, the same statement for a caller that
 * holds the fiber already: the `Db.execute` accessor then spends one step of
 * the run loop, not two. It sits on the function, not on the service, so
 * that a service that replaces `execute` (a router spreading its primary)
 * never inherits it.
 */
const executeOnFiber: unique symbol = Symbol.for("@effect-dal/core/Db/executeOnFiber")

/**
 * `execute` for a caller that holds its fiber, running with `status`:
 * `withFiberRuntime`'s arguments.
 *
 * @since 0.1.0
 */
export type ExecuteOnFiber = (
  fiber: Fiber.RuntimeFiber<unknown, unknown>,
  status: FiberStatus.Running,
  sql: string,
  params?: ReadonlyArray<unknown>,
  options?: ExecuteOptions
) => Effect.Effect<any, DbError>

/**
 * `db.execute(sql, params, options)` from inside `withFiberRuntime` (a
 * router's, an accessor's): through the database's `ExecuteOnFiber` when its
 * `execute` carries one (see `withExecuteOnFiber`), a step of the run loop fewer.
 *
 * @since 0.1.0
 */
export const executeWith = <A extends object = Row>(
  db: DbService,
  fiber: Fiber.RuntimeFiber<unknown, unknown>,
  status: FiberStatus.Running,
  sql: string,
  params?: ReadonlyArray<unknown>,
  options?: ExecuteOptions
): Effect.Effect<ReadonlyArray<A>, DbError> => {
  const direct = (db.execute as DbService["execute"] & { readonly [executeOnFiber]?: ExecuteOnFiber })[executeOnFiber]
  return direct === undefined ? db.execute<A>(sql, params, options) : direct(fiber, status, sql, params, options)
}

/**
 * `execute` carrying `onFiber`, the same statement for a caller that holds
 * the fiber (see `executeWith`). `onFiber` must do exactly what `execute` does.
 *
 * @since 0.1.0
 */
export const withExecuteOnFiber = <F extends DbService["execute"]>(execute: F, onFiber: ExecuteOnFiber): F =>
  Object.assign(execute, { [executeOnFiber]: onFiber })

const admittedOnFiber: unique symbol = Symbol.for("@effect-dal/core/Db/admittedOnFiber")

/**
 * `executeAdmitted` for a caller that holds its fiber, running with
 * `status`: `withFiberRuntime`'s arguments.
 *
 * @since 0.3.0
 */
export type ExecuteAdmittedOnFiber = <A extends object, E>(
  fiber: Fiber.RuntimeFiber<unknown, unknown>,
  status: FiberStatus.Running,
  admission: Admission<A, E>,
  sql: string,
  params?: ReadonlyArray<unknown>,
  options?: ExecuteOptions
) => Effect.Effect<ReadonlyArray<A>, DbError | E>

/**
 * `db.executeAdmitted(admission, sql, params, options)` from inside
 * `withFiberRuntime` (the shard router's): a step of the run loop fewer
 * where the database's `executeAdmitted` carries its on-fiber form (see
 * `withExecuteAdmittedOnFiber`). The database must have `executeAdmitted`.
 *
 * @since 0.3.0
 */
export const executeAdmittedWith = <A extends object, E>(
  db: DbService,
  fiber: Fiber.RuntimeFiber<unknown, unknown>,
  status: FiberStatus.Running,
  admission: Admission<A, E>,
  sql: string,
  params?: ReadonlyArray<unknown>,
  options?: ExecuteOptions
): Effect.Effect<ReadonlyArray<A>, DbError | E> => {
  const admitted = db.executeAdmitted! as NonNullable<DbService["executeAdmitted"]> & {
    readonly [admittedOnFiber]?: ExecuteAdmittedOnFiber
  }
  const direct = admitted[admittedOnFiber]
  return direct === undefined ? admitted(admission, sql, params, options) : direct(fiber, status, admission, sql, params, options)
}

/** `executeAdmitted` carrying `onFiber`, the same statement for a caller that holds the fiber (see `executeAdmittedWith`). */
const withExecuteAdmittedOnFiber = <F extends NonNullable<DbService["executeAdmitted"]>>(
  executeAdmitted: F,
  onFiber: ExecuteAdmittedOnFiber
): F => Object.assign(executeAdmitted, { [admittedOnFiber]: onFiber })

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
  ): Effect.Effect<ReadonlyArray<A>, DbError, Db> =>
    Effect.withFiberRuntime((fiber, status) =>
      executeWith(Context.unsafeGet(fiber.currentContext, Db), fiber, status, sql, params, options)
    )

  /** Runs one statement per parameter row in one transaction. */
  static executeMany = (
    sql: string,
    rows: ReadonlyArray<ReadonlyArray<unknown>>,
    options?: ExecuteOptions
  ): Effect.Effect<number, DbError, Db> => withDb((db) => db.executeMany(sql, rows, options))

  /** A scoped transaction on the current `Db`. */
  static transaction: Effect.Effect<Transaction, DbError, Db | Scope.Scope> = withDb((db) => db.transaction)

  /** Runs `effect` in a transaction of the current `Db`. */
  static withTransaction = <A, E, R>(
    effect: Effect.Effect<A, E, R>,
    options?: WithTransactionOptions
  ): Effect.Effect<A, E | DbError, R | Db> => withDb((db) => db.withTransaction(effect, options))

  /** Inserts rows as chunked multi-row INSERTs in one transaction. */
  static insertMany = (
    table: string,
    rows: ReadonlyArray<object>,
    options?: InsertManyOptions
  ): Effect.Effect<InsertManyResult, DbError, Db> => withDb((db) => db.insertMany(table, rows, options))

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

  /** Announces `keys` stale once the fiber's transaction commits (at once outside one). */
  static invalidate = (keys: Invalidation.Keys): Effect.Effect<void, never, Db> =>
    Effect.flatMap(Db, (db) => db.invalidate(keys))

  /** Runs `effect` with these tags merged over the current ones. */
  static withTags = withTagsImpl

  /** Runs `effect` with every statement on the primary. */
  static primary = Replication.primary

  /** Runs `effect` with its reads allowed on replicas even right after a write ("stale is fine"). */
  static replica = Replication.replica

  /**
   * The commit position of this fiber's last write to the current `Db`, as a
   * string for a header or a cookie; `undefined` before any write.
   */
  static commitToken: Effect.Effect<string | undefined, never, Db> = Effect.flatMap(Db, (db) => db.commitToken)

  /**
   * Runs `effect` as if this fiber had made the write behind `token` (from
   * `Db.commitToken`, maybe in another process): its reads see that write.
   */
  static withCommitToken = (token: string) =>
  <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | Replication.InvalidCommitToken, R | Db> =>
    Effect.flatMap(Db, (db) => {
      const replication = db.replication
      if (replication === undefined) return effect
      return Effect.flatMap(Replication.decodeToken(token, replication.isPosition), (position) =>
        Effect.flatMap(FiberRef.get(Replication.currentWrites), (writes) => {
          const before = writes.get(db.alias)?.position
          const next = new Map(writes)
          next.set(db.alias, {
            ...writes.get(db.alias),
            position: before === undefined ? position : replication.merge(before, position)
          })
          return Effect.locally(effect, Replication.currentWrites, next)
        }))
    })
}

/**
 * A pool's connections in use over its max.
 *
 * @since 0.2.0
 */
export const utilizationOf = (stats: Pool.PoolStats): number => (stats.max === 0 ? 0 : stats.active / stats.max)

/**
 * Builds a `Db` for an engine's driver, from its parts: the core (pool,
 * breaker, metrics), the statement lane, transactions, batches and streams,
 * the `SqlClient` bridge and health. Configs with the same `hash` share one
 * pool, which closes when the last of them is released; one circuit breaker
 * serves each alias.
 *
 * @since 0.1.0
 */
export const make = (driver: Driver, config: DatabaseConfig): Effect.Effect<DbService, never, Scope.Scope> =>
  Effect.gen(function*() {
    const core = yield* makeCore(driver, config)
    const statements = makeStatements(core)
    const transactions = makeTransactions(core)
    const batches = makeBatches(core, statements, transactions)
    const handle = (conn: DalConnection, depth: number): Transaction => ({
      depth,
      execute: statements.executeOn(conn),
      executeMany: batches.executeManyOn(conn)
    })
    const sql = yield* makeSqlClient(core, transactions)
    const health = yield* makeHealth(core, statements)
    const invalidator = core.invalidator

    const service: DbService = {
      alias: config.alias,
      env: config.env,
      dialect: core.dialect,
      config,
      poolStats: core.pool.stats,
      metricLabels: core.metrics.labels,
      breaker: core.breaker,
      resilienceStats: () => ({ retries: core.retries() }),
      health: health.health,
      slowQueries: health.slowQueries,
      refreshMetrics: health.refreshMetrics,
      execute: withExecuteOnFiber(statements.executeOn(undefined), statements.executeOnFiber),
      executeAdmitted: withExecuteAdmittedOnFiber(statements.executeAdmitted, statements.executeAdmittedOnFiber),
      executeMany: batches.executeManyOn(undefined),
      insertMany: batches.insertMany,
      stream: batches.stream,
      statementCacheStats: () => ({ ...driver.statementCache }),
      replicationStats: () => [{
        alias: config.alias,
        role: "primary",
        host: driver.primaryHost?.(),
        lagBytes: 0,
        lagMillis: 0,
        usable: core.breaker?.state() !== "open",
        utilization: utilizationOf(core.pool.stats()),
        reads: 0,
        fallbacks: 0
      }],
      replication: driver.replication,
      commitToken: Effect.map(FiberRef.get(Replication.currentWrites), (writes) => {
        const position = writes.get(config.alias)?.position
        return position === undefined ? undefined : Replication.encodeToken(position)
      }),
      transaction: transactions.scoped(handle),
      withTransaction: (effect, options) => transactions.run(effect, options ?? {}, identity),
      ownsTransaction: (context) => core.currentTx(context) !== undefined,
      sql,
      native: makeNative(core, statements),
      twoPhase: makeTwoPhase(core, statements.executeOn(undefined)),
      invalidations: invalidator,
      invalidate: invalidator.after
    }
    return service
  })

/**
 * The seam between the core and an engine. An engine package implements a
 * `Driver`; the pool, transactions, timeouts and the `SqlClient` adapter are
 * written once in the core against it.
 *
 * @since 0.1.0
 */
import type * as Statement from "@effect/sql/Statement"
import type * as Effect from "effect/Effect"
import type * as Stream from "effect/Stream"
import type { ConnectionError, DbError } from "./DbError.js"
import type { Dialect } from "./Dialect.js"
import type * as StatementCache from "./StatementCache.js"

/**
 * How a statement's result is returned:
 * - `rows`: an array of row objects (an array of such arrays for a multi-statement query);
 * - `values`: an array of row value arrays;
 * - `result`: rows plus the affected row count, normalized;
 * - `raw`: the driver's own result object.
 *
 * @since 0.1.0
 */
export type QueryMode = "rows" | "values" | "result" | "raw"

/**
 * The normalized result of `QueryMode` `result`.
 *
 * @since 0.1.0
 */
export interface QueryResult {
  readonly rows: ReadonlyArray<any>
  readonly affected: number
  /** The first generated key of an insert, where the engine reports one (MySQL). */
  readonly insertId?: number | undefined
}

/**
 * One open connection of an engine.
 *
 * Every effect returned must, when interrupted, return at once and cancel the
 * running statement on the server in the background; until that cancel has
 * settled, `settle` says so, and the core runs nothing else on the connection
 * and does not pass it on. So a cancel can never hit another statement.
 *
 * @since 0.1.0
 */
export interface DriverConnection {
  /**
   * Runs one statement with native placeholders. `prepared` allows the
   * statement cache; `timeout` (milliseconds) is the hard timeout, after which
   * it fails with `StatementTimeout` and is cancelled (see `CancelGate`).
   */
  readonly query: (
    sql: string,
    params: ReadonlyArray<unknown>,
    mode: QueryMode,
    prepared: boolean,
    timeout?: number | undefined
  ) => Effect.Effect<any, DbError>
  /**
   * Runs one statement for many parameter rows in as few round trips as the
   * engine allows (pipelined, or as one multi-statement); returns the
   * affected row count. Absent: the core runs the rows one by one.
   */
  readonly batch?: ((sql: string, rows: ReadonlyArray<ReadonlyArray<unknown>>) => Effect.Effect<number, DbError>) | undefined
  /** Reads a result incrementally, with back-pressure. */
  readonly stream: (sql: string, params: ReadonlyArray<unknown>, chunkSize: number) => Stream.Stream<any, DbError>
  /** A cheap round trip. */
  readonly ping: Effect.Effect<void, DbError>
  /**
   * The transaction state the server last reported: `idle`, `transaction`
   * or `failed` (inside a failed transaction), or `unknown`.
   */
  readonly transactionState: () => "idle" | "transaction" | "failed" | "unknown"
  /** Whether the connection is known to be unusable. */
  readonly isBroken: () => boolean
  /**
   * When an interrupted statement is still being cancelled: waits until the
   * server has let go of it (or the connection was given up as broken).
   * `undefined` when nothing is pending, which is the usual case.
   */
  readonly settle: () => Effect.Effect<void> | undefined
  /** Closes the connection; never fails. */
  readonly close: Effect.Effect<void>
  /** A server-side identifier (backend pid, thread id), for logs and tests. */
  readonly serverId: () => number | undefined
}

/**
 * An engine driver.
 *
 * @since 0.1.0
 */
export interface Driver {
  /** `db.system.name` in OpenTelemetry terms, e.g. `postgresql`. */
  readonly system: string
  readonly dialect: Dialect
  /** Opens one connection. */
  readonly connect: Effect.Effect<DriverConnection, ConnectionError | DbError>
  /** The `@effect/sql` compiler of the engine, for `SqlClient` templates. */
  readonly compiler: Statement.Compiler
  /** Row transform for `SqlClient` results (`transformResultNames`). */
  readonly transformRows?: (<A extends object>(rows: ReadonlyArray<A>) => ReadonlyArray<A>) | undefined
  /** Extra span attributes for `SqlClient` statements. */
  readonly spanAttributes: ReadonlyArray<readonly [string, unknown]>
  /** Hit, miss and eviction counts of the prepared-statement caches of its connections. */
  readonly statementCache: StatementCache.Stats
  /** Releases what the driver holds beyond its connections (an embedded database), after the pool closed. */
  readonly shutdown?: Effect.Effect<void> | undefined
}

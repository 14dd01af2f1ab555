/**
 * The native lane: what a driver-compatible pool (`createPgPool`,
 * `createMysqlPool`) needs of a `Db` so that code written for the driver runs
 * on our pool, breaker, retries, timeouts and metrics. Statements go in the
 * driver's own SQL and options, untranslated (`?` and `[` keep their native
 * meaning), and come back as the driver's own results.
 *
 * @since 0.3.0
 */
import type * as Effect from "effect/Effect"
import type { ExecuteOptions } from "./Db.js"
import type { DbError } from "./DbError.js"
import { isDbError } from "./DbError.js"
import type { DriverConnection } from "./Driver.js"

/**
 * A pooled connection checked out through the native lane, until `release`.
 *
 * @since 0.3.0
 */
export interface NativeConnection {
  /** The engine's connection, for what only its package knows (a cursor, a stream). */
  readonly driver: DriverConnection
  /**
   * One statement on this connection, with the driver's own options; the
   * driver's result. Observed like every statement (breaker, metrics, slow
   * log); never retried: the caller may be inside its own transaction.
   */
  readonly execute: (
    sql: string,
    params: ReadonlyArray<unknown>,
    options: unknown,
    call?: ExecuteOptions
  ) => Effect.Effect<unknown, DbError>
  /**
   * Hands the connection back: cleaned (an open transaction rolled back) and
   * reused, or closed when `discard` is set or its session state changed.
   * A second call does nothing.
   */
  readonly release: (discard?: boolean) => Effect.Effect<void>
  /** `release`, synchronously: for callers outside Effect, with no fiber to run it on. */
  readonly releaseNow: (discard?: boolean) => void
}

/**
 * A connection's life in the pool, for a driver-compatible pool's events.
 *
 * @since 0.3.0
 */
export type PoolEvent =
  | { readonly _tag: "created"; readonly driver: DriverConnection }
  | { readonly _tag: "destroyed"; readonly driver: DriverConnection }

/**
 * The native lane of one database.
 *
 * @since 0.3.0
 */
export interface NativeLane {
  /**
   * One statement outside any transaction, on a connection of the pool, with
   * the driver's own options: breaker, deadline, metrics, and retries where
   * safe, exactly as `Db.execute`.
   */
  readonly execute: (
    sql: string,
    params: ReadonlyArray<unknown>,
    options: unknown,
    call?: ExecuteOptions
  ) => Effect.Effect<unknown, DbError>
  /** Checks a connection out of the pool (through the breaker), for the caller to release. */
  readonly checkout: Effect.Effect<NativeConnection, DbError>
  /** Calls `listener` as connections open and close; returns the unsubscribe. */
  readonly subscribe: (listener: (event: PoolEvent) => void) => () => void
}

/**
 * What a driver-compatible pool rejects with: for an error the driver raised
 * (a server error, a lost socket), the driver's own error object, so that
 * code written for the driver keeps reading its fields (`code`, `detail`,
 * `constraint`, `errno`, `sqlMessage`, …), with our classification added:
 * `_tag`, `category`, `transient`, and `dalError`, the typed error itself.
 * Our own errors (`PoolTimeout`, `CircuitOpen`, `StatementTimeout`, …) as they are.
 *
 * @since 0.3.0
 */
export const driverError = (error: unknown): unknown => {
  if (!isDbError(error)) return error
  const cause = error.cause
  if (!(cause instanceof Error) || isDbError(cause)) return error
  for (
    const [key, value] of [["_tag", error._tag], ["category", error.category], ["transient", error.transient], [
      "dalError",
      error
    ]] as const
  ) {
    Object.defineProperty(cause, key, { value, enumerable: false, configurable: true, writable: true })
  }
  return cause
}

/**
 * Transactions: BEGIN with the options, COMMIT and ROLLBACK, savepoints for
 * nested ones, the transaction deadline, and whole-transaction retries.
 *
 * @internal
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberRef from "effect/FiberRef"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import type { Transaction, WithTransactionOptions } from "../Db.js"
import type { DbError } from "../DbError.js"
import { isDbError, OutcomeUnknown, StatementTimeout } from "../DbError.js"
import { isRetryableTransaction, toSchedule } from "../Retry.js"
import type { DalConnection } from "./connection.js"
import type { DbCore } from "./core.js"
import { identity, noParams } from "./core.js"

/**
 * The transactions of one database.
 *
 * @internal
 */
export interface Transactions {
  /**
   * The machinery of `withTransaction`, `executeMany` and `sql.withTransaction`:
   * `mapError` types our own failures. Retries and the transaction timeout
   * apply to a top-level transaction only; a nested one is a savepoint.
   */
  readonly run: <A, E, R, E2>(
    effect: Effect.Effect<A, E, R>,
    options: WithTransactionOptions,
    mapError: (e: DbError) => E2
  ) => Effect.Effect<A, E | E2, R>
  /** A transaction as a scoped resource, its statements run through `handle`'s executor. */
  readonly scoped: (
    handle: (conn: DalConnection, depth: number) => Transaction
  ) => Effect.Effect<Transaction, DbError, Scope.Scope>
}

/**
 * Builds the transactions of a database.
 *
 * @internal
 */
export const makeTransactions = (core: DbCore): Transactions => {
  const { acquire, breaker, config, currentTx, dialect, invalidator, metrics, pool, retried } = core
  const rollbackSql = dialect.rollback

  const txContext = (context: Context.Context<never>, conn: DalConnection, depth: number) =>
    Context.add(context, SqlClient.TransactionConnection, [conn, depth] as const)

  const savepointName = (depth: number) => `dal_sp_${depth}`

  /**
   * `effect` run with `inner` as its context; its outcome goes to `then`
   * with `outer` set back. Only for a region that is already uninterruptible
   * around `effect`: nothing can stop between the two sets, so this needs
   * none of the acquire/release machinery of `Effect.locally`, and each
   * outcome is handled where it is seen, with no exit value passed along
   * (the Effect runtime's steps are about a quarter of a MariaDB transfer's
   * client user CPU).
   */
  const inContext = <A, E, R, B, E2>(
    effect: Effect.Effect<A, E, R>,
    inner: Context.Context<never>,
    outer: Context.Context<never>,
    then: {
      readonly onFailure: (cause: Cause.Cause<E>) => Effect.Effect<B, E2>
      readonly onSuccess: (a: A) => Effect.Effect<B, E2>
    }
  ): Effect.Effect<B, E2, R> =>
    Effect.zipRight(
      FiberRef.set(FiberRef.currentContext, inner),
      Effect.matchCauseEffect(effect, {
        onFailure: (cause) => Effect.zipRight(FiberRef.set(FiberRef.currentContext, outer), then.onFailure(cause)),
        onSuccess: (a) => Effect.zipRight(FiberRef.set(FiberRef.currentContext, outer), then.onSuccess(a))
      })
    )

  const rollbackQuietly = (conn: DalConnection, sql: string) =>
    Effect.catchAll(conn.run(sql, noParams, "raw", false), () => Effect.void)

  /**
   * Ends a failed top-level transaction. While an interrupted statement is
   * still being cancelled, the caller does not wait: the pool rolls back in
   * the background before the connection is reused.
   */
  const rollbackTop = (conn: DalConnection) =>
    Effect.suspend(() => {
      invalidator.discarded(conn)
      // a BEGIN still held back: nothing reached the server
      if (conn.driver.heldBegin?.drop() === true) return Effect.void
      return conn.driver.settle() === undefined ? rollbackQuietly(conn, rollbackSql) : Effect.void
    })

  /**
   * A COMMIT whose connection was lost may or may not have been applied. The
   * transaction's invalidations are announced once it committed, or may have.
   * `value` is what a successful COMMIT returns: the transaction's result,
   * with no step of its own to attach it.
   */
  const commit = <A = void>(
    conn: DalConnection,
    onPosition?: (position: string | undefined) => void,
    value?: A
  ): Effect.Effect<A, DbError> =>
    // a transaction that sent no statement never began on the server: nothing to commit
    conn.driver.heldBegin?.drop() === true
      ? Effect.sync(() => {
        invalidator.committed(conn)
        return value as A
      })
      // always called within the transaction's uninterruptible region: the outcome is seen, whatever it is
      : Effect.matchCauseEffect(sendCommit(conn, onPosition), {
        onSuccess: () => {
          invalidator.committed(conn)
          return Effect.succeed(value as A)
        },
        onFailure: (cause) => {
          const error = Cause.failureOption(cause)
          if (Option.isSome(error) && error.value._tag === "ConnectionError") {
            invalidator.committed(conn)
            return Effect.fail(new OutcomeUnknown({ phase: "commit", sql: dialect.commit, cause: error.value }))
          }
          invalidator.discarded(conn)
          return Effect.failCause(cause)
        }
      })

  const positionSql = core.driver.replication?.currentPositionSql

  /** COMMIT, with the commit position read in its round trip where asked and the driver can. */
  const sendCommit = (conn: DalConnection, onPosition: ((position: string | undefined) => void) | undefined) =>
    onPosition === undefined || positionSql === undefined || conn.driver.sendThenRead === undefined
      ? conn.run(dialect.commit, noParams, "raw", false)
      : Effect.map(conn.sendThenRead(dialect.commit, positionSql), (rows) => {
        const position: unknown = rows?.[0]?.position
        onPosition(typeof position === "string" && position !== "" ? position : undefined)
      })

  /** BEGIN; `undefined` where the driver holds it to go out with the transaction's first statement. */
  const begin = (conn: DalConnection, options: WithTransactionOptions): Effect.Effect<void, DbError> | undefined => {
    invalidator.discarded(conn)
    const statements = dialect.begin(options)
    // where the driver can, BEGIN goes out with the transaction's first statement: no round trip of its own
    const held = conn.driver.heldBegin
    if (held !== undefined && (statements.length === 1 || held.severalStatements)) {
      held.hold(statements.join(";\n"), statements.length)
      return undefined
    }
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
            Effect.zipRight(inContext(restore(effect), txContext(context, conn, depth), context, {
              onFailure: (cause): Effect.Effect<A, E | E2> =>
                Effect.zipRight(rollbackQuietly(conn, dialect.rollbackSavepoint(name)), Effect.failCause(cause)),
              onSuccess: (a): Effect.Effect<A, E | E2> =>
                Effect.as(Effect.mapError(conn.run(dialect.releaseSavepoint(name), noParams, "raw", false), mapError), a)
            }))
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
          // the body in the transaction's context, then COMMIT or ROLLBACK with the outer context back
          const body = () => {
            conn.txDeadline = deadline
            return inContext(restore(effect), txContext(context, conn, 0), context, {
              onFailure: (cause): Effect.Effect<A, E | E2> => {
                conn.txDeadline = undefined
                return Effect.zipRight(rollbackTop(conn), Effect.failCause(cause))
              },
              onSuccess: (a): Effect.Effect<A, E | E2> => {
                // COMMIT and ROLLBACK are never cut short: a cancelled COMMIT would leave the outcome unknown
                conn.txDeadline = undefined
                return deadline !== undefined && Date.now() > deadline.at
                  ? Effect.zipRight(rollbackTop(conn), Effect.fail(mapError(deadline.error())))
                  : typed(commit(conn, options.onCommitPosition, a))
              }
            })
          }
          const begun = begin(conn, options)
          // uninterruptible here: the connection goes back whatever the outcome, with no finalizer to install
          return Effect.matchCauseEffect(begun === undefined ? body() : Effect.flatMap(typed(begun), body), {
            onFailure: (cause) => {
              conn.txDeadline = undefined
              pool.releaseNow(lease)
              return Effect.failCause(cause)
            },
            onSuccess: (a) => {
              pool.releaseNow(lease)
              return Effect.succeed(a)
            }
          })
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
            if (again) retried()
            return again
          }
        }) as Effect.Effect<A, E | DbError, R>
      }
      if (mapError === (identity as unknown)) return attempt as Effect.Effect<A, E | E2, R>
      return Effect.mapError(attempt, (error): E | E2 => (isOurs(error) ? mapError(error) : error as E))
    })

  const isOurs = (error: unknown): error is DbError => isDbError(error)

  const scoped = (
    handle: (conn: DalConnection, depth: number) => Transaction
  ): Effect.Effect<Transaction, DbError, Scope.Scope> => Effect.uninterruptibleMask((restore) =>
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
        (begin(lease.conn, {}) ?? Effect.void).pipe(
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

  return { run: runTransaction, scoped }
}

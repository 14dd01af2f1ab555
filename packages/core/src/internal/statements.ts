/**
 * The statement lane: one statement outside any transaction (breaker,
 * acquisition, the statement and its retries, all within the call's
 * deadline), and `execute` wherever it runs.
 *
 * @internal
 */
import type { Row } from "@effect/sql/SqlConnection"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Fiber from "effect/Fiber"
import type * as FiberStatus from "effect/FiberStatus"
import * as RuntimeFlags from "effect/RuntimeFlags"
import type { Admission, ExecuteAdmittedOnFiber, ExecuteOnFiber, ExecuteOptions } from "../Db.js"
import type { DbError } from "../DbError.js"
import { InvalidQuery, OutcomeUnknown, StatementTimeout } from "../DbError.js"
import type { QueryMode } from "../Driver.js"
import type * as Pool from "../Pool.js"
import { currentTags } from "../QueryTags.js"
import { isReadOnlyStatement, isRetryableStatement, toSchedule } from "../Retry.js"
import { abortable } from "./abortable.js"
import type { DalConnection } from "./connection.js"
import type { DbCore } from "./core.js"
import { noParams, timeLeft } from "./core.js"

const noop = (): void => {}

/**
 * A statement's outcome, its failure handed to `recover` as `Effect.catchAll`
 * would (a failure, not a defect): from the statement's callback, rather than
 * through a handler that every success would pass as well.
 */
const recovered = (
  outcome: Effect.Effect<any, DbError>,
  recover: ((error: DbError) => Effect.Effect<any, DbError>) | undefined
): Effect.Effect<any, DbError> => {
  if (recover === undefined) return outcome
  if (!Exit.isExit(outcome)) return Effect.catchAll(outcome, recover)
  if (Exit.isSuccess(outcome)) return outcome
  const failure = Cause.failureOption(outcome.cause as Cause.Cause<DbError>)
  return failure._tag === "Some" ? recover(failure.value) : outcome
}

/**
 * The statement lane of one database.
 *
 * @internal
 */
export interface Statements {
  /** A statement outside any transaction, run by `fiber` (the caller's). */
  readonly autocommit: (
    fiber: Fiber.RuntimeFiber<unknown, unknown>,
    sql: string,
    params: ReadonlyArray<unknown>,
    options: ExecuteOptions | undefined,
    timeout: number | undefined,
    mode?: QueryMode,
    prepared?: boolean
  ) => Effect.Effect<any, DbError>
  /** `execute` on `conn` (a transaction's), or wherever the caller is when `undefined`. */
  readonly executeOn: (conn: DalConnection | undefined) => <A extends object = Row>(
    sql: string,
    params?: ReadonlyArray<unknown>,
    options?: ExecuteOptions
  ) => Effect.Effect<ReadonlyArray<A>, DbError>
  /** `execute` wherever `fiber` (the caller's, running with `status`) is: for a caller that holds its fiber already. */
  readonly executeOnFiber: ExecuteOnFiber
  /** `execute` wherever the caller is, each attempt under `admission` (see `DbService.executeAdmitted`). */
  readonly executeAdmitted: <A extends object, E>(
    admission: Admission<A, E>,
    sql: string,
    params?: ReadonlyArray<unknown>,
    options?: ExecuteOptions
  ) => Effect.Effect<ReadonlyArray<A>, DbError | E>
  /** `executeAdmitted` for a caller that holds its fiber already. */
  readonly executeAdmittedOnFiber: ExecuteAdmittedOnFiber
}

/**
 * Builds the statement lane.
 *
 * @internal
 */
export const makeStatements = (core: DbCore): Statements => {
  const { breaker, config, currentTx, hooks, invalidator, pool, prepare, retried, statementTimeout, tagged, taggedHere } = core
  const defaultSchedule = toSchedule(config.retry)

  /**
   * One statement on a connection of its own, all in callbacks when the
   * pool can lend one without effects: the connection goes from the
   * finished statement straight to the next caller's, with no fiber in
   * between. Interrupted, it withdraws from the queue or aborts the statement.
   * Under an admission, the attempt is admitted before it waits for a
   * connection and let go where it ends, in the same region.
   */
  const leased = (
    fiber: Fiber.RuntimeFiber<unknown, unknown>,
    sql: string,
    params: ReadonlyArray<unknown>,
    mode: QueryMode,
    prepared: boolean,
    deadline: number | undefined,
    timedOut: () => DbError,
    admission: Admission<any, any> | undefined,
    recover: ((error: DbError) => Effect.Effect<any, DbError>) | undefined,
    interruptible: boolean | undefined
  ): Effect.Effect<any, DbError> => {
    let state: "waiting" | "running" | "done" = "waiting"
    let lease: Pool.Lease<DalConnection> | undefined
    let abort: (() => void) | undefined
    let withdraw: (() => void) | undefined
    let admitted = false
    // no closure of its own for the statements that no router admits (nearly all of them)
    const over = admission === undefined ? noop : () => {
      if (!admitted) return
      admitted = false
      admission.leave()
    }
    return abortable<any, DbError>((resume) => {
      if (admission !== undefined) {
        if (!admission.enter()) {
          state = "done"
          return resume(recover === undefined ? admission.instead() : Effect.catchAll(admission.instead(), recover))
        }
        admitted = true
      }
      const tags = hooks.wantsTags ? fiber.getFiberRef(currentTags) : undefined
      withdraw = pool.borrow(fiber, deadline, timedOut, (l) => {
        state = "running"
        lease = l
        try {
          const aborter = l.conn.send(sql, params, mode, prepared, timeLeft(deadline), tags, (outcome) => {
            state = "done"
            pool.releaseNow(l)
            over()
            resume(recovered(outcome, recover))
          })
          if (state === "running") abort = aborter
        } catch (defect) {
          // a driver that throws instead of reporting: the caller dies, the pool stays whole
          state = "done"
          pool.releaseNow(l)
          over()
          resume(Effect.die(defect))
        }
      }, (error) => {
        state = "done"
        over()
        resume(recover === undefined ? Effect.fail(error) : recover(error))
      })
      if (withdraw === undefined) {
        state = "done"
        const run = pool.use(deadline, timedOut, (conn) => conn.run(sql, params, mode, prepared, timeLeft(deadline)))
        // still in the region: a failure or an interruption ends in the abort below, which lets go too
        const ran = admitted ? Effect.map(run, (rows) => (over(), rows)) : run
        resume(recover === undefined ? ran : Effect.catchAll(ran, recover))
      }
    }, () => {
      over()
      if (state === "waiting") withdraw?.()
      else if (state === "running") {
        state = "done"
        abort?.()
        pool.releaseNow(lease!)
      }
    }, interruptible)
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
    prepared = true,
    admission?: Admission<any, any>,
    interruptible?: boolean
  ): Effect.Effect<any, DbError> => {
    const deadline = timeout === undefined ? undefined : Date.now() + timeout
    const timedOut = () => new StatementTimeout({ kind: "statement", timeoutMillis: timeout!, sql })
    /** An attempt; `recover` takes its failure (the first attempt's), else it fails as it is. */
    const attemptNow = (recover?: (error: DbError) => Effect.Effect<any, DbError>): Effect.Effect<any, DbError> => {
      if (deadline !== undefined && Date.now() >= deadline) {
        return recover === undefined ? Effect.fail(timedOut()) : recover(timedOut())
      }
      if (breaker === undefined || breaker.state() === "closed") {
        return leased(fiber, sql, params, mode, prepared, deadline, timedOut, admission, recover, interruptible)
      }
      // a probe's permit covers this attempt only: the retries take their own
      const guarded = breaker.guard(leased(fiber, sql, params, mode, prepared, deadline, timedOut, admission, undefined, interruptible))
      return recover === undefined ? guarded : Effect.catchAll(guarded, recover)
    }
    /** The first attempt failed: retry where safe, and name what the failure means for a write. */
    const recover = (first: DbError): Effect.Effect<any, DbError> => {
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
      const attempt = Effect.suspend(() => attemptNow())
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
          if (retry) retried()
          return retry
        }
      }).pipe(Effect.mapError(final))
    }
    // the caller runs this lazily already (it holds the fiber)
    return attemptNow(recover)
  }

  /** `effect` admitted as a whole, in a region of its own: where no attempt has one (a transaction's statement). */
  const admittedWhole = <A, E>(admission: Admission<any, any> | undefined, effect: Effect.Effect<A, E>) =>
    admission === undefined ? effect : Effect.uninterruptibleMask((restore) => {
      if (!admission.enter()) return restore(admission.instead() as Effect.Effect<A, E>)
      return Effect.ensuring(restore(effect), Effect.sync(() => admission.leave()))
    })

  const execute = (
    conn: DalConnection | undefined,
    sql: string,
    params: ReadonlyArray<unknown>,
    options: ExecuteOptions | undefined,
    admission: Admission<any, any> | undefined
  ): Effect.Effect<any, DbError> => {
    const t = prepare(sql, params)
    if (t instanceof InvalidQuery) return Effect.fail(t)
    const timeout = statementTimeout(options)
    // what the write makes stale is announced once it is committed, whichever way it ran
    if (conn !== undefined) {
      return invalidator.around(
        taggedHere(admittedWhole(admission, conn.run(t.sql, params, "rows", true, timeout)), options, t.sql),
        options?.invalidates
      )
    }
    return invalidator.around(
      Effect.withFiberRuntime<any, DbError>((fiber, status) => onFiber(fiber, status, t.sql, params, options, timeout, admission)),
      options?.invalidates
    )
  }

  /** A translated statement on `fiber`: in its transaction if it has one of this database's, else on a connection of its own. */
  const onFiber = (
    fiber: Fiber.RuntimeFiber<unknown, unknown>,
    status: FiberStatus.Running,
    sql: string,
    params: ReadonlyArray<unknown>,
    options: ExecuteOptions | undefined,
    timeout: number | undefined,
    admission: Admission<any, any> | undefined
  ): Effect.Effect<any, DbError> => {
    const tx = currentTx(fiber.currentContext)
    return tagged(
      fiber,
      tx === undefined
        ? autocommit(fiber, sql, params, options, timeout, "rows", true, admission, RuntimeFlags.interruptible(status.runtimeFlags))
        : admittedWhole(admission, tx[0].run(sql, params, "rows", true, timeout)),
      options,
      sql
    )
  }

  const executeAdmittedOnFiber = (
    fiber: Fiber.RuntimeFiber<unknown, unknown>,
    status: FiberStatus.Running,
    admission: Admission<any, any> | undefined,
    sql: string,
    params: ReadonlyArray<unknown> = noParams,
    options?: ExecuteOptions
  ): Effect.Effect<any, any> => {
    const t = prepare(sql, params)
    if (t instanceof InvalidQuery) return Effect.fail(t)
    return invalidator.around(onFiber(fiber, status, t.sql, params, options, statementTimeout(options), admission), options?.invalidates)
  }

  const executeOnFiber = (
    fiber: Fiber.RuntimeFiber<unknown, unknown>,
    status: FiberStatus.Running,
    sql: string,
    params?: ReadonlyArray<unknown>,
    options?: ExecuteOptions
  ): Effect.Effect<any, DbError> => executeAdmittedOnFiber(fiber, status, undefined, sql, params, options)

  const executeOn = (conn: DalConnection | undefined) =>
  <A extends object = Row>(
    sql: string,
    params: ReadonlyArray<unknown> = noParams,
    options?: ExecuteOptions
  ): Effect.Effect<ReadonlyArray<A>, DbError> => execute(conn, sql, params, options, undefined)

  const executeAdmitted = <A extends object, E>(
    admission: Admission<A, E>,
    sql: string,
    params: ReadonlyArray<unknown> = noParams,
    options?: ExecuteOptions
  ): Effect.Effect<ReadonlyArray<A>, DbError | E> => execute(undefined, sql, params, options, admission)

  return { autocommit, executeOn, executeAdmitted, executeOnFiber, executeAdmittedOnFiber }
}

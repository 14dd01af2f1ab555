/**
 * Retries, only where a retry is safe (see DESIGN §5), with exponential
 * backoff and full jitter built from Effect `Schedule`s.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Schedule from "effect/Schedule"
import type { DbError } from "./DbError.js"

/**
 * The shape of the default backoff: `sleep = random(0, min(cap, base * factor^n))`,
 * at most `maxRetries` times.
 *
 * @since 0.1.0
 */
export interface RetryOptions {
  readonly maxRetries?: number | undefined
  readonly base?: Duration.DurationInput | undefined
  readonly factor?: number | undefined
  readonly cap?: Duration.DurationInput | undefined
}

/**
 * A retry policy: backoff options, your own `Schedule`, or `false` for none.
 *
 * @since 0.1.0
 */
export type RetryPolicy = RetryOptions | Schedule.Schedule<unknown, DbError> | false

/**
 * The defaults: 3 retries, 50 ms base, factor 2, 2 s cap.
 *
 * @since 0.1.0
 */
export const defaults = { maxRetries: 3, base: 50, factor: 2, cap: 2_000 } as const

/**
 * Exponential backoff with full jitter.
 *
 * @since 0.1.0
 */
export const backoff = (options: RetryOptions = {}): Schedule.Schedule<unknown, unknown> => {
  const base = options.base === undefined ? defaults.base : Duration.toMillis(options.base)
  const factor = options.factor ?? defaults.factor
  const cap = options.cap === undefined ? defaults.cap : Duration.toMillis(options.cap)
  const maxRetries = options.maxRetries ?? defaults.maxRetries
  return Schedule.exponential(Duration.millis(base), factor).pipe(
    Schedule.modifyDelay((_, delay) => Duration.millis(Math.random() * Math.min(cap, Duration.toMillis(delay)))),
    Schedule.intersect(Schedule.recurs(maxRetries))
  )
}

/**
 * Turns a policy into a schedule, or `undefined` for no retries.
 *
 * @since 0.1.0
 */
export const toSchedule = (policy: RetryPolicy | undefined): Schedule.Schedule<unknown, DbError> | undefined => {
  if (policy === false) return undefined
  if (policy === undefined) return backoff()
  return Schedule.isSchedule(policy) ? policy as Schedule.Schedule<unknown, DbError> : backoff(policy)
}

/**
 * Whether one statement outside a transaction may run again after `error`.
 * `read` says the statement only reads; `idempotent` that the caller allows
 * repeating a write.
 *
 * @since 0.1.0
 */
export const isRetryableStatement = (error: DbError, read: boolean, idempotent: boolean): boolean => {
  switch (error._tag) {
    case "ConnectionError":
      // never sent, or sent but harmless to repeat
      return error.phase === "connect" || read || idempotent
    case "QueryError":
      // the server rolled the statement back as a whole
      return error.category === "serialization" || error.category === "deadlock" ||
        ((error.category === "resource" || error.category === "unavailable") && error.transient)
    default:
      return false
  }
}

/**
 * Whether a whole transaction may run again after `error`: the server rolled
 * it back, and COMMIT was never sent (a lost COMMIT is `OutcomeUnknown`).
 *
 * @since 0.1.0
 */
export const isRetryableTransaction = (error: DbError): boolean => {
  switch (error._tag) {
    case "ConnectionError":
      return true
    case "QueryError":
      return error.category === "serialization" || error.category === "deadlock" ||
        ((error.category === "cancelled" || error.category === "resource" || error.category === "unavailable") &&
          error.transient)
    default:
      return false
  }
}

const READ_PREFIX = /^\s*(?:\(\s*)*(?:SELECT|SHOW|EXPLAIN|VALUES|TABLE|DESCRIBE|DESC)\b/i

/**
 * Whether a statement only reads (and so is safe to repeat after a lost
 * connection). `WITH` counts as a write, since a CTE may modify data.
 *
 * @since 0.1.0
 */
export const isReadOnlyStatement = (sql: string): boolean => READ_PREFIX.test(sql)

/**
 * Helpers of the tests of code without Effect (the Promise API, the
 * driver-compatible pools): what a database's metrics say it served, and
 * waiting for a condition.
 *
 * @since 0.3.0
 */
import type { DbService } from "@effect-dal/core"
import { Metrics } from "@effect-dal/core"
import * as Effect from "effect/Effect"

/**
 * Statements the database behind `runner` has observed so far (every
 * `db.client.operation.duration` sample, failures included).
 *
 * @since 0.3.0
 */
export const statementsSeen = async (owner: { readonly runner: { readonly db: () => Promise<DbService> } }): Promise<number> => {
  const db = await owner.runner.db()
  const samples = await Effect.runPromise(Metrics.samples(db.metricLabels))
  return samples
    .filter((s) => s.name === "db.client.operation.duration")
    .reduce((n, s) => n + (s.value as { readonly count: number }).count, 0)
}

/**
 * Polls `check` every 25 ms until it holds or `millis` pass; whether it held.
 *
 * @since 0.3.0
 */
export const until = async (check: () => boolean | Promise<boolean>, millis = 3_000): Promise<boolean> => {
  const end = Date.now() + millis
  while (Date.now() < end) {
    if (await check()) return true
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
  return check()
}

/**
 * `until` for an effect: polls `check` every 25 ms until it holds or
 * `millis` pass; whether it held.
 *
 * @since 0.3.0
 */
export const holds = <E, R>(check: Effect.Effect<boolean, E, R>, millis = 10_000): Effect.Effect<boolean, E, R> =>
  Effect.gen(function*() {
    const end = Date.now() + millis
    while (Date.now() < end) {
      if (yield* check) return true
      yield* Effect.sleep(25)
    }
    return yield* check
  })

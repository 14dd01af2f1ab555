/**
 * What a database's metrics say it served, for tests that check that
 * traffic through an adapter or an API reached our pool.
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

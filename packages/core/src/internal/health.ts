/**
 * Health: the scaling advisor's report (with the server's
 * `max_connections`, read once), the slowest statement shapes, and the
 * gauges kept up to date once a second.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type { SlowQuery } from "../Db.js"
import type { DbError } from "../DbError.js"
import type * as ScalingAdvisor from "../ScalingAdvisor.js"
import type { DbCore } from "./core.js"
import type { Statements } from "./statements.js"

/**
 * What `Db` reports of its own health.
 *
 * @internal
 */
export interface Health {
  readonly health: Effect.Effect<ScalingAdvisor.Report, DbError>
  readonly slowQueries: (n?: number) => ReadonlyArray<SlowQuery>
  readonly refreshMetrics: Effect.Effect<void>
}

/**
 * Builds the health reports, and keeps the gauges following the pool for
 * the life of the scope.
 *
 * @internal
 */
export const makeHealth = (core: DbCore, statements: Statements): Effect.Effect<Health, never, Scope.Scope> =>
  Effect.gen(function*() {
    const { config, dialect, driver, metrics, pool, slowStats, window } = core
    let serverMaxConnections: number | undefined = undefined
    const advice = () => window.report(config.pool.max, serverMaxConnections)
    const refreshMetrics = Effect.sync(() => {
      const report = advice()
      metrics.sync(pool.stats(), driver.statementCache, { timeoutRate: report.timeoutRate, level: report.level })
    })
    // gauges follow the pool once a second; `refreshMetrics` brings them up to date at once
    yield* Effect.forkScoped(Effect.forever(Effect.zipRight(refreshMetrics, Effect.sleep("1 second"))))

    const execute = statements.executeOn(undefined)
    const health: Effect.Effect<ScalingAdvisor.Report, DbError> = Effect.suspend(() => {
      if (serverMaxConnections !== undefined) return Effect.succeed(advice())
      return Effect.map(execute<{ max_connections: unknown }>(dialect.maxConnectionsSql), (rows) => {
        const value = Number(rows[0]?.max_connections)
        if (Number.isFinite(value) && value > 0) serverMaxConnections = value
        return advice()
      })
    })
    return { health, slowQueries: (n = 10) => slowStats.top(n), refreshMetrics }
  })

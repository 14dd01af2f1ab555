/**
 * Following the primary across a promotion, as drivers see it: a database
 * named by several hosts, whose write connections land on whichever is
 * writable. When they land on another host than before, the primary moved:
 * logged with the old and the new primary, counted in `dal.failovers`, and
 * timed from the first lost connection in `dal.failover.duration`.
 *
 * @since 0.2.0
 */
import * as Effect from "effect/Effect"
import type { DatabaseConfig } from "./DatabaseConfig.js"
import * as Metrics from "./Metrics.js"

/**
 * What a driver tells the watch.
 *
 * @since 0.2.0
 */
export interface Watch {
  /** A connection was lost, or could not be opened. */
  readonly failed: () => void
  /** A write connection was opened on `endpoint`; logs the move when the primary moved. */
  readonly connected: (endpoint: { readonly host: string; readonly port: number }) => Effect.Effect<void>
}

/**
 * A watch for a database, or `undefined` when there is nothing to follow
 * (one host, or connections that do not look for the writable server).
 *
 * @since 0.2.0
 */
export const watch = (config: DatabaseConfig, system: string): Watch | undefined => {
  if (config.hosts.length < 2 || (config.targetRole !== "read-write" && config.targetRole !== "primary")) return undefined
  let current: string | undefined
  let failingSince: number | undefined
  const labels = Metrics.labelsOf({ alias: config.alias, env: config.env, system, namespace: config.database })
  return {
    failed: () => {
      failingSince ??= Date.now()
    },
    connected: (endpoint) => {
      const at = `${endpoint.host}:${endpoint.port}`
      const before = current
      const since = failingSince
      current = at
      failingSince = undefined
      if (before === undefined || before === at) return Effect.void
      const millis = since === undefined ? 0 : Date.now() - since
      Metrics.metrics.failovers.unsafeUpdate(1, labels)
      Metrics.metrics.failoverDuration.unsafeUpdate(millis / 1000, labels)
      return Effect.logWarning(`the primary moved from ${before} to ${at}`).pipe(
        Effect.annotateLogs({ alias: config.alias, from: before, to: at, failoverMillis: millis })
      )
    }
  }
}

/**
 * Opens connections through `watch`: a failure counts as a lost connection,
 * a success tells where the connection landed.
 *
 * @since 0.2.0
 */
export const follow = <C, E>(
  watch: Watch | undefined,
  connected: Effect.Effect<readonly [C, { readonly host: string; readonly port: number }], E>
): Effect.Effect<C, E> =>
  watch === undefined
    ? Effect.map(connected, ([conn]) => conn)
    : Effect.matchEffect(connected, {
      onFailure: (error) => Effect.zipRight(Effect.sync(watch.failed), Effect.fail(error)),
      onSuccess: ([conn, endpoint]) => Effect.as(watch.connected(endpoint), conn)
    })

/**
 * Following the primary across a promotion, as drivers see it: a database
 * named by several hosts, whose write connections land on whichever is
 * writable. When they land on another host than before, the primary moved:
 * logged with the old and the new primary, counted in `dal.failovers`, and
 * timed from the first lost connection to the first statement that succeeds
 * on the new primary in `dal.failover.duration`.
 *
 * @since 0.2.0
 */
import * as Effect from "effect/Effect"
import type { DatabaseConfig, TargetRole } from "./DatabaseConfig.js"
import { wantsWrites as wantsWritesOf } from "./DatabaseConfig.js"
import { ConnectionError, QueryError } from "./DbError.js"
import * as Metrics from "./Metrics.js"

/**
 * A server of a database.
 *
 * @since 0.2.0
 */
export interface Endpoint {
  readonly host: string
  readonly port: number
}

/**
 * Whether connections with this role are for writes.
 *
 * @since 0.2.0
 */
export const wantsWrites: (role: TargetRole) => boolean = wantsWritesOf

/**
 * The connect error when a server (or every server tried) does not have the
 * target role.
 *
 * @since 0.2.0
 */
export const roleMismatch = (role: TargetRole, tried: string | undefined): ConnectionError =>
  new ConnectionError({
    phase: "connect",
    transient: true,
    code: undefined,
    sql: undefined,
    cause: new Error(
      tried === undefined
        ? `the server no longer fits target role "${role}"`
        : `no server fits target role "${role}" (tried ${tried})`
    )
  })

/**
 * A write refused as read-only by a server that should take writes: it was
 * demoted or fenced, and applied nothing. As a transient `unavailable`
 * error, the statement or the whole transaction may run again (where its
 * retry policy allows) on the server that took over.
 *
 * @since 0.2.0
 */
export const refusedWrite = (error: QueryError): QueryError =>
  new QueryError({
    category: "unavailable",
    code: error.code,
    transient: true,
    sql: error.sql,
    cause: error.cause,
    detail: error.detail
  })

/**
 * Opens a connection as libpq does with several hosts: each in order until
 * one answers and has the role (`open` checks it on the open connection, so
 * a write never goes to a server not seen writable); `prefer-standby` looks
 * for a standby first, then any.
 *
 * @since 0.2.0
 */
export const connect = <C, E>(
  hosts: ReadonlyArray<Endpoint>,
  role: TargetRole,
  open: (endpoint: Endpoint, want: TargetRole) => Effect.Effect<C, E>
): Effect.Effect<readonly [C, Endpoint], E> => {
  const passes: ReadonlyArray<TargetRole> = role === "prefer-standby" ? ["standby", "any"] : [role]
  return Effect.firstSuccessOf(
    passes.flatMap((want) => hosts.map((endpoint) => Effect.map(open(endpoint, want), (conn) => [conn, endpoint] as const)))
  )
}

/**
 * What a driver tells the watch.
 *
 * @since 0.2.0
 */
export interface Watch {
  /** A connection was lost, or could not be opened. */
  readonly failed: () => void
  /** A write connection was opened on `endpoint`; logs the move when the primary moved. */
  readonly connected: (endpoint: Endpoint) => Effect.Effect<void>
  /** A statement succeeded on a write connection: the first after a move ends the failover's clock. */
  readonly succeeded: () => void
  /** The server at `at` (`host:port`) refused a write as read-only: it was demoted or fenced. */
  readonly refused: (at: string) => void
  /**
   * Whether a connection to `at` may no longer be lent for writes: the
   * primary moved elsewhere, or that server refused a write. The pool then
   * closes it instead of handing it out.
   */
  readonly stale: (at: string) => boolean
  /** Where write connections last landed (`host:port`). */
  readonly current: () => string | undefined
}

/**
 * A watch for a database, or `undefined` when there is nothing to follow
 * (one host, or connections that do not look for the writable server).
 *
 * @since 0.2.0
 */
export const watch = (config: DatabaseConfig, system: string): Watch | undefined => {
  if (config.hosts.length < 2 || !wantsWrites(config.targetRole)) return undefined
  let current: string | undefined
  // the server that last refused a write, until a connection finds it writable again
  let fenced: string | undefined
  let failingSince: number | undefined
  // set from a move until the first statement that succeeds after it
  let movedSince: number | undefined
  const labels = Metrics.labelsOf({ alias: config.alias, env: config.env, system, namespace: config.database })
  return {
    failed: () => {
      failingSince ??= Date.now()
    },
    connected: (endpoint) => {
      const at = `${endpoint.host}:${endpoint.port}`
      const before = current
      const since = failingSince ?? Date.now()
      current = at
      if (fenced === at) fenced = undefined
      failingSince = undefined
      if (before === undefined || before === at) return Effect.void
      movedSince = since
      Metrics.metrics.failovers.unsafeUpdate(1, labels)
      return Effect.logWarning(`the primary moved from ${before} to ${at}`).pipe(
        Effect.annotateLogs({ alias: config.alias, from: before, to: at, failingForMillis: Date.now() - since })
      )
    },
    succeeded: () => {
      if (movedSince === undefined) return
      Metrics.metrics.failoverDuration.unsafeUpdate((Date.now() - movedSince) / 1000, labels)
      movedSince = undefined
    },
    refused: (at) => {
      fenced = at
      Metrics.metrics.refusedWrites.unsafeUpdate(1, labels)
    },
    stale: (at) => at === fenced || (current !== undefined && current !== at),
    current: () => current
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
  connected: Effect.Effect<readonly [C, Endpoint], E>
): Effect.Effect<C, E> =>
  watch === undefined
    ? Effect.map(connected, ([conn]) => conn)
    : Effect.matchEffect(connected, {
      onFailure: (error) => Effect.zipRight(Effect.sync(watch.failed), Effect.fail(error)),
      onSuccess: ([conn, endpoint]) => Effect.as(watch.connected(endpoint), conn)
    })

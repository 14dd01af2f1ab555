/**
 * A replicated database: one primary and its replicas, each an ordinary
 * engine `Db` with its own pool, breaker and metrics, behind the same `Db`
 * and `SqlClient` tags. Reads go to a healthy replica that has the fiber's
 * writes (commit positions from the engine's own replication), writes and
 * transactions to the primary.
 *
 * @since 0.2.0
 */
import type { DbService, Driver, ExecuteOptions, NodeStats } from "@effect-dal/core"
import { DbError as DbErrors, DbModule, Metrics, Replication } from "@effect-dal/core"
import * as Reactivity from "@effect/experimental/Reactivity"
import * as SqlClient from "@effect/sql/SqlClient"
import type * as SqlConnection from "@effect/sql/SqlConnection"
import { SqlError } from "@effect/sql/SqlError"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import type * as Fiber from "effect/Fiber"
import * as FiberRef from "effect/FiberRef"
import * as MetricLabel from "effect/MetricLabel"
import * as Runtime from "effect/Runtime"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"

/**
 * One replica: its `Db`, and its share of the reads.
 *
 * @since 0.2.0
 */
export interface Replica {
  readonly db: DbService
  /** Default 1. */
  readonly weight: number
}

/** Why a read went to the primary after all. */
type FallbackReason = "noReplica" | "lag" | "readOnly" | "replicaFailed"

class ReplicaState {
  reads = 0
  fallbacks = 0
  position: string | undefined = undefined
  lagBytes: number | undefined = undefined
  lagMillis: number | undefined = undefined
  /** The last lag poll reached it, and no read since lost its connection. */
  reachable = false
  /** Over `maxLag`, until it is below half of it. */
  lagging = false
  constructor(readonly db: DbService, readonly weight: number) {}
  usable(): boolean {
    return this.reachable && !this.lagging && this.db.breaker?.state() !== "open"
  }
}

/**
 * Statements in flight on a node: its pool's connections in use and the
 * callers waiting for one. On a replica these are its reads (and the lag
 * checks), a cancelled read counted until its connection is free again.
 */
const inFlightOf = (stats: { readonly active: number; readonly pending: number }): number => stats.active + stats.pending

/** Errors after which a read may run again elsewhere: the replica, or the way to it, failed. */
const movable = (error: DbErrors.DbError): boolean =>
  error._tag !== "StatementTimeout" && (error.transient || error._tag === "PoolClosed")

/** Errors that say the replica is gone, not merely busy. */
const unreachable = (error: DbErrors.DbError): boolean =>
  error._tag === "ConnectionError" || (error._tag === "PoolTimeout" && error.reason === "unavailable")

const ourError = (e: unknown): DbErrors.DbError | undefined =>
  DbErrors.isDbError(e) ? e : e instanceof SqlError && DbErrors.isDbError(e.cause) ? e.cause : undefined

/**
 * Builds the replicated database over a primary and its replicas. The lag
 * poll runs for the life of the scope.
 *
 * @since 0.2.0
 */
export const make = (options: {
  readonly primary: DbService
  readonly replicas: ReadonlyArray<Replica>
  /** The engine's driver: its replication capability and `SqlClient` compiler. */
  readonly driver: Driver.Driver
  readonly replication?: Replication.ReplicationOptions | undefined
}): Effect.Effect<DbService, never, Scope.Scope> =>
  Effect.gen(function*() {
    const { driver, primary } = options
    const replication = driver.replication
    if (replication === undefined) return primary
    const o = options.replication ?? {}
    const alias = primary.alias
    const rywMode = o.readYourWrites ?? "position"
    const maxBytes = o.maxLag?.bytes ?? 16 * 1024 * 1024
    const maxMillis = Duration.toMillis(o.maxLag?.time ?? "10 seconds")
    const stickyMillis = Duration.toMillis(o.stickyDelay ?? "2 seconds")
    const waitMillis = Duration.toMillis(o.waitForReplica ?? "50 millis")
    const interval = o.lagCheckInterval ?? "1 second"
    const replicas = options.replicas.map((r) => new ReplicaState(r.db, Math.max(0, r.weight)))
    // logs from synchronous code go through the layer's runtime, so its logger sees them
    const runFork = Runtime.runFork(yield* Effect.runtime<never>())
    // like the pool, the router keeps real time even when it was built under a TestClock
    const liveClock = Clock.make()

    // metrics: routed reads per node, fallbacks to the primary by reason
    const fallbackLabels = new Map<FallbackReason, ReadonlyArray<MetricLabel.MetricLabel>>()
    let primaryReads = 0
    const routed = (db: DbService) => Metrics.metrics.routedReads.unsafeUpdate(1, db.metricLabels)
    const fellBack = (reason: FallbackReason) => {
      let labels = fallbackLabels.get(reason)
      if (labels === undefined) {
        fallbackLabels.set(reason, labels = [...primary.metricLabels, MetricLabel.make("reason", reason)])
      }
      Metrics.metrics.routingFallbacks.unsafeUpdate(1, labels)
    }

    /** A replica's load: the statements in flight on it, per weight. */
    const load = (r: ReplicaState): number => inFlightOf(r.db.poolStats()) / (r.weight || 1)

    // a replica chosen by weight among two drawn, the less loaded of the two
    const draw = (candidates: ReadonlyArray<ReplicaState>): ReplicaState | undefined => {
      if (candidates.length <= 1) return candidates[0]
      const total = candidates.reduce((sum, r) => sum + r.weight, 0)
      const one = () => {
        if (total <= 0) return candidates[Math.floor(Math.random() * candidates.length)]!
        let x = Math.random() * total
        for (const r of candidates) if ((x -= r.weight) < 0) return r
        return candidates[candidates.length - 1]!
      }
      const a = one()
      const b = one()
      return a === b || load(a) <= load(b) ? a : b
    }

    let noReplicaLogged = false
    const usable = (exclude: ReadonlyArray<ReplicaState>): ReadonlyArray<ReplicaState> => {
      // most reads find every replica usable: no array is made for them
      let found: ReadonlyArray<ReplicaState> = replicas
      for (const r of replicas) {
        if (!r.usable() || exclude.includes(r)) {
          found = replicas.filter((r) => r.usable() && !exclude.includes(r))
          break
        }
      }
      if (exclude.length === 0 && (found.length === 0) !== noReplicaLogged) {
        // logged once per change, not per read
        noReplicaLogged = found.length === 0
        runFork(
          (noReplicaLogged
            ? Effect.logWarning("no replica is usable: reads go to the primary")
            : Effect.logInfo("replicas usable again: reads go to replicas")).pipe(Effect.annotateLogs({ alias }))
        )
      }
      return found
    }

    const readOnlyShapes = new Set<string>()
    const logReadOnly = (sql: string): Effect.Effect<void> => {
      if (readOnlyShapes.has(sql) || readOnlyShapes.size >= 1_000) return Effect.void
      readOnlyShapes.add(sql)
      return Effect.logWarning("a replica refused a statement as a write; it runs on the primary").pipe(
        Effect.annotateLogs({ alias, sql })
      )
    }

    const mark = (patch: Replication.WriteMark) =>
      FiberRef.update(Replication.currentWrites, (writes) => new Map(writes).set(alias, { ...writes.get(alias), ...patch }))

    /**
     * Remembers that `fiber` wrote: the mark to set, if any, to run in the
     * continuation of the write (on that fiber). In `position` mode the write
     * only leaves a mark: the position is read from the primary when a read
     * (or `commitToken`) first needs it, so writes pay no round trip, and a
     * position read after the commit is at or past it.
     */
    const markWrite = (fiber: Fiber.RuntimeFiber<unknown, unknown>): Effect.Effect<void> | undefined => {
      if (rywMode === "delay") return mark({ stickyUntil: Date.now() + stickyMillis })
      // a fiber that keeps writing with no read in between is marked already: setting the same
      // mark again (a copied map, a fiber ref set) was a tenth of a routed transfer's own cost
      return fiber.getFiberRef(Replication.currentWrites).get(alias)?.pending === true ? undefined : mark({ pending: true })
    }

    /** `markWrite` for work whose fiber is not in hand (a scoped transaction's finalizer). */
    const recordWrite: Effect.Effect<void> = rywMode === false
      ? Effect.void
      : Effect.withFiberRuntime((fiber) => markWrite(fiber) ?? Effect.void)

    /** A transaction committed at `position` (read with its COMMIT): nothing is pending any more. */
    const committedAt = (position: string) =>
      FiberRef.update(Replication.currentWrites, (writes) => {
        const before = writes.get(alias)
        const merged = before?.position === undefined ? position : replication.merge(before.position, position)
        return new Map(writes).set(alias, { ...before, pending: false, position: merged })
      })

    /**
     * The fiber's commit position. A write left pending is at or before the
     * latest position the primary reported with its replies, where the
     * driver keeps one (each write's reply is in before the write returns);
     * else the primary's position is read, which is at or past it too.
     */
    const commitPosition = (written: Replication.WriteMark | undefined): Effect.Effect<string | undefined> => {
      if (written?.pending !== true) return Effect.succeed(written?.position)
      const reported = driver.committedPosition?.()
      if (reported !== undefined) {
        const merged = written.position === undefined ? reported : replication.merge(written.position, reported)
        return Effect.as(mark({ pending: false, position: merged }), merged)
      }
      return Effect.flatMap(
        Effect.either(primary.execute<{ position: string }>(replication.currentPositionSql)),
        (result) => {
          const position = Either.isRight(result) ? result.right[0]?.position || undefined : undefined
          // without the position, the safe answer is the primary for a while
          if (position === undefined) return Effect.as(mark({ pending: false, stickyUntil: Date.now() + stickyMillis }), undefined)
          const merged = written.position === undefined ? position : replication.merge(written.position, position)
          return Effect.as(mark({ pending: false, position: merged }), merged)
        }
      )
    }

    /**
     * Whether reads follow writes here. Reading the commit position with the
     * COMMIT saves a read after a write its round trip, but costs every
     * transaction a statement: a quarter of a short transaction's throughput
     * on a loaded server. So it is done while at least half of the writes are
     * followed by a read that needs their position (over the last thousand
     * or so); otherwise the position is read when a read needs it.
     */
    let writesSeen = 0
    let readsAfterWrites = 0
    const wrote = () => {
      if (++writesSeen > 1024) {
        writesSeen /= 2
        readsAfterWrites /= 2
      }
    }
    const readsFollowWrites = () => readsAfterWrites * 2 > writesSeen

    /** A write outside a transaction, on the primary, by `fiber`; its position is remembered once it succeeded. */
    const write = <A, E, R>(fiber: Fiber.RuntimeFiber<unknown, unknown>, effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
      rywMode === false ? effect : Effect.tap(effect, () => {
        wrote()
        return markWrite(fiber)
      })

    const onPrimary = <A, E, R>(run: (db: DbService) => Effect.Effect<A, E, R>, reason: FallbackReason | undefined) => {
      primaryReads++
      if (reason !== undefined) fellBack(reason)
      return run(primary)
    }

    /**
     * Runs a read on a replica that has the fiber's writes, or the primary.
     * A read refused as a write runs on the primary; a read whose replica
     * failed runs on another replica or the primary.
     */
    const read = <A, E, R>(
      fiber: Fiber.RuntimeFiber<unknown, unknown>,
      sql: string,
      run: (db: DbService) => Effect.Effect<A, E, R>
    ): Effect.Effect<A, E, R> => {
      const node = inTransaction(fiber)
      return node !== undefined ? run(node) : readOutside(fiber, sql, run)
    }

    /** `read` for a fiber known to be outside any transaction of this router's nodes. */
    const readOutside = <A, E, R>(
      fiber: Fiber.RuntimeFiber<unknown, unknown>,
      sql: string,
      run: (db: DbService) => Effect.Effect<A, E, R>
    ): Effect.Effect<A, E, R> => {
      const mode = fiber.getFiberRef(Replication.currentMode)
      if (mode === "primary") return onPrimary(run, undefined)
      const written = mode === "replica" ? undefined : fiber.getFiberRef(Replication.currentWrites).get(alias)
      if (written === undefined) return attempt(fiber, sql, undefined, run, [])
      // once the position is read, this runs again and counts the read
      if (written.pending === true) {
        return Effect.flatMap(commitPosition(written), () => readOutside(fiber, sql, run))
      }
      // a fiber reading on after one write counts once per write, at most
      if (readsAfterWrites < writesSeen) readsAfterWrites++
      if (written.stickyUntil !== undefined && Date.now() < written.stickyUntil) return onPrimary(run, undefined)
      return attempt(fiber, sql, rywMode === "position" ? written.position : undefined, run, [])
    }

    const attempt = <A, E, R>(
      fiber: Fiber.RuntimeFiber<unknown, unknown>,
      sql: string,
      token: string | undefined,
      run: (db: DbService) => Effect.Effect<A, E, R>,
      tried: ReadonlyArray<ReplicaState>
    ): Effect.Effect<A, E, R> => {
      const candidates = usable(tried)
      if (candidates.length === 0) return onPrimary(run, "noReplica")
      const caughtUp = token === undefined
        ? candidates
        : candidates.filter((r) => r.position !== undefined && replication.reached(r.position, token))
      if (caughtUp.length > 0) return on(fiber, draw(caughtUp)!, sql, token, run, tried)
      // none is known to have the write yet: one is asked to wait a little for it
      const replica = draw(candidates)!
      return Effect.flatMap(
        Effect.either(Effect.withClock(replication.waitFor(replica.db.execute, token!, waitMillis), liveClock)),
        (reached) => {
          if (Either.isRight(reached) && reached.right) {
            replica.position = replica.position === undefined ? token : replication.merge(replica.position, token!)
            return on(fiber, replica, sql, token, run, tried)
          }
          return onPrimary(run, "lag")
        }
      )
    }

    const on = <A, E, R>(
      fiber: Fiber.RuntimeFiber<unknown, unknown>,
      replica: ReplicaState,
      sql: string,
      token: string | undefined,
      run: (db: DbService) => Effect.Effect<A, E, R>,
      tried: ReadonlyArray<ReplicaState>
    ): Effect.Effect<A, E, R> => {
      replica.reads++
      routed(replica.db)
      // a failure handler only: counting the read out on every exit took an uninterruptible
      // region around it, which cost a routed point select as much as the rest of routing
      return Effect.catchAllCause(run(replica.db), (cause) => {
        const failure = Cause.failureOption(cause)
        if (failure._tag === "None") return Effect.failCause(cause)
        const e = failure.value
        const error = ourError(e)
        if (error === undefined) return Effect.fail(e)
        if (replication.isReadOnlyRejection(error)) {
          // nothing was applied: the statement writes after all, and runs where writes run
          replica.fallbacks++
          return Effect.zipRight(logReadOnly(sql), write(fiber, onPrimary(run, "readOnly")))
        }
        if (!movable(error)) return Effect.fail(e)
        replica.fallbacks++
        if (unreachable(error)) replica.reachable = false
        fellBack("replicaFailed")
        return attempt(fiber, sql, token, run, [...tried, replica])
      })
    }

    /**
     * The node whose transaction the fiber is in, if one of this router's:
     * asked of the nodes, so that another router's transaction (over another
     * database) never takes this router's statements.
     */
    const inTransaction = (fiber: Fiber.RuntimeFiber<unknown, unknown>): DbService | undefined => {
      const context = fiber.currentContext
      // outside any transaction, as most statements are, no node need be asked
      if (!context.unsafeMap.has(SqlClient.TransactionConnection.key)) return undefined
      if (primary.ownsTransaction(context)) return primary
      for (const replica of replicas) if (replica.db.ownsTransaction(context)) return replica.db
      return undefined
    }

    /** Work that writes: on the open transaction's node, else on the primary, its position remembered. */
    const writing = <A, E>(run: (db: DbService) => Effect.Effect<A, E>): Effect.Effect<A, E> =>
      Effect.withFiberRuntime((fiber) => {
        const node = inTransaction(fiber)
        return node !== undefined ? run(node) : write(fiber, run(primary))
      })

    const executeOnFiber: DbModule.ExecuteOnFiber = (fiber, status, sql, params, executeOptions) => {
      // the node's statement runs on this same fiber, in the same region: its status holds there too
      const run = (db: DbService) => DbModule.executeWith(db, fiber, status, sql, params, executeOptions)
      // inside a transaction, every statement stays on its node, unclassified
      const node = inTransaction(fiber)
      if (node !== undefined) return run(node)
      return Replication.isReplicaRead(sql) ? readOutside(fiber, sql, run) : write(fiber, run(primary))
    }

    const execute = DbModule.withExecuteOnFiber(
      <A extends object>(
        sql: string,
        params?: ReadonlyArray<unknown>,
        executeOptions?: ExecuteOptions
      ): Effect.Effect<ReadonlyArray<A>, DbErrors.DbError> =>
        Effect.withFiberRuntime((fiber, status) => executeOnFiber(fiber, status, sql, params, executeOptions)),
      executeOnFiber
    )

    const withTransaction: DbService["withTransaction"] = (effect, txOptions) =>
      Effect.withFiberRuntime((fiber) => {
        const node = inTransaction(fiber)
        // nested: a savepoint on the transaction's own node
        if (node !== undefined) return node.withTransaction(effect, txOptions)
        const readOnly = txOptions?.readOnly === true
        const replica = readOnly && fiber.getFiberRef(Replication.currentMode) === "replica"
          ? draw(usable([]))
          : undefined
        const target = replica?.db ?? primary
        if (target !== primary || readOnly) return target.withTransaction(effect, txOptions)
        if (rywMode !== "position" || !readsFollowWrites()) return write(fiber, primary.withTransaction(effect, txOptions))
        // the commit position comes back with the COMMIT (where the driver pipelines it): the read after it pays nothing
        let position: string | undefined
        const run = primary.withTransaction(effect, {
          ...txOptions,
          onCommitPosition: (p) => {
            position = p
            txOptions?.onCommitPosition?.(p)
          }
        })
        return Effect.tap(run, () => {
          wrote()
          if (position === undefined) return markWrite(fiber)
          return committedAt(position)
        })
      })

    const transaction: DbService["transaction"] = Effect.withFiberRuntime((fiber) => {
      const node = inTransaction(fiber)
      if (node !== undefined) return node.transaction
      return Effect.gen(function*() {
        // added first, so it runs after the COMMIT that the transaction's own finalizer sends
        yield* Effect.addFinalizer((exit) => (exit._tag === "Success" ? recordWrite : Effect.void))
        return yield* primary.transaction
      })
    })

    const stream: DbService["stream"] = (sql, params, streamOptions) =>
      Stream.unwrap(Effect.withFiberRuntime((fiber) => {
        const node = inTransaction(fiber)
        if (node !== undefined) return Effect.succeed(node.stream(sql, params, streamOptions))
        if (!Replication.isReplicaRead(sql)) return Effect.succeed(primary.stream(sql, params, streamOptions))
        // a stream does not move once it started: its node is chosen as a read's would be
        return readOutside(fiber, sql, (db) => Effect.succeed(db.stream(sql, params, streamOptions)))
      }))

    // `sql` templates: the same rules, statement by statement, through each node's own connections
    const sqlOn = <A>(
      sql: string,
      f: (conn: SqlConnection.Connection) => Effect.Effect<A, SqlError>
    ): Effect.Effect<A, SqlError> =>
      Effect.withFiberRuntime((fiber) => {
        const reserved = (db: DbService) => Effect.scoped(Effect.flatMap(db.sql.reserve, f))
        if (Replication.isReplicaRead(sql)) return read(fiber, sql, reserved)
        return write(fiber, reserved(primary))
      })
    const connection: SqlConnection.Connection = {
      execute: (sql, params, transformRows) => sqlOn(sql, (c) => c.execute(sql, params, transformRows)),
      executeRaw: (sql, params) => sqlOn(sql, (c) => c.executeRaw(sql, params)),
      executeValues: (sql, params) => sqlOn(sql, (c) => c.executeValues(sql, params)),
      executeUnprepared: (sql, params, transformRows) => sqlOn(sql, (c) => c.executeUnprepared(sql, params, transformRows)),
      executeStream: (sql, params, transformRows) =>
        Stream.unwrapScoped(Effect.withFiberRuntime((fiber) => {
          const reserved = (db: DbService) => Effect.map(db.sql.reserve, (c) => c.executeStream(sql, params, transformRows))
          return Replication.isReplicaRead(sql) ? read(fiber, sql, reserved) : reserved(primary)
        }))
    }
    const sqlClient = yield* SqlClient.make({
      acquirer: Effect.succeed(connection),
      transactionAcquirer: primary.sql.reserve,
      compiler: driver.compiler,
      spanAttributes: [...driver.spanAttributes, ["db.system.name", driver.system], ["db.namespace", primary.config.database]],
      transformRows: driver.transformRows
    }).pipe(Effect.provideService(Reactivity.Reactivity, primary.invalidations.reactivity))
    const sql: SqlClient.SqlClient = Object.assign(sqlClient, {
      withTransaction: <A, E, R>(effect: Effect.Effect<A, E, R>) =>
        Effect.withFiberRuntime<A, E | SqlError, R>((fiber) => {
          const node = inTransaction(fiber)
          if (node !== undefined) return node.sql.withTransaction(effect)
          return write(fiber, primary.sql.withTransaction(effect))
        })
    })

    // the primary's positions of the last polls, with when they were seen: a replica's lag in time is
    // how long ago the primary was where the replica is now, where the engine does not tell it
    const history: Array<{ readonly position: string; readonly at: number }> = []
    const behindFor = (position: string, now: number): number => {
      const missing = history.find((sample) => !replication.reached(position, sample.position))
      return missing === undefined ? 0 : now - missing.at
    }

    // the lag poll: each replica's replay position against the primary's, every `lagCheckInterval`
    const poll = Effect.gen(function*() {
      const current = yield* Effect.either(primary.execute<{ position: string }>(replication.currentPositionSql))
      const primaryPosition = Either.isRight(current) ? current.right[0]?.position || undefined : undefined
      const now = Date.now()
      if (primaryPosition !== undefined) {
        history.push({ position: primaryPosition, at: now })
        // enough samples to see past maxLag
        while (history.length > 1 && now - history[0]!.at > 2 * maxMillis) history.shift()
        if (history.length > 1_000) history.shift()
      }
      yield* Effect.forEach(replicas, (replica) =>
        // a replica that does not answer within the interval is not reachable now
        Effect.map(Effect.either(Effect.timeoutFail(replication.replicaStatus(replica.db.execute), {
          duration: interval,
          onTimeout: () => "timeout" as const
        })), (status) => {
          if (Either.isLeft(status)) {
            replica.reachable = false
            return
          }
          replica.reachable = true
          const position = status.right.position
          if (position !== undefined) {
            replica.position = replica.position === undefined ? position : replication.merge(replica.position, position)
          }
          if (primaryPosition === undefined || position === undefined) return
          const caughtUp = replication.reached(position, primaryPosition)
          replica.lagBytes = replication.distance(primaryPosition, position)
          // an idle primary makes the last replay time look old: time counts only while the replica is behind
          replica.lagMillis = caughtUp ? 0 : status.right.lagMillis ?? behindFor(position, now)
          const bytes = replica.lagBytes ?? 0
          const millis = replica.lagMillis ?? 0
          if (!replica.lagging && (bytes > maxBytes || millis > maxMillis)) {
            replica.lagging = true
            runFork(Effect.logWarning("replica over maxLag: no reads until it catches up").pipe(
              Effect.annotateLogs({ alias: replica.db.alias, lagBytes: bytes, lagMillis: millis })
            ))
          } else if (replica.lagging && bytes <= maxBytes / 2 && millis <= maxMillis / 2) {
            replica.lagging = false
            runFork(Effect.logInfo("replica caught up: it gets reads again").pipe(
              Effect.annotateLogs({ alias: replica.db.alias, lagBytes: bytes, lagMillis: millis })
            ))
          }
        }), { concurrency: "unbounded", discard: true })
    })
    // the first poll before the first read: a replica gets reads once the poll has seen it
    yield* Effect.withClock(poll, liveClock)
    yield* Effect.forkScoped(Effect.withClock(Effect.forever(Effect.zipRight(Effect.sleep(interval), poll)), liveClock))

    const replicationStats = (): ReadonlyArray<NodeStats> => [
      {
        alias,
        role: "primary",
        host: driver.primaryHost?.(),
        lagBytes: 0,
        lagMillis: 0,
        usable: primary.breaker?.state() !== "open",
        utilization: DbModule.utilizationOf(primary.poolStats()),
        reads: primaryReads,
        fallbacks: 0
      },
      ...replicas.map((r): NodeStats => {
        const pool = r.db.poolStats()
        return {
          alias: r.db.alias,
          role: "replica",
          lagBytes: r.lagBytes,
          lagMillis: r.lagMillis,
          usable: r.usable(),
          utilization: DbModule.utilizationOf(pool),
          reads: r.reads,
          readsInFlight: inFlightOf(pool),
          fallbacks: r.fallbacks
        }
      })
    ]

    const service: DbService = {
      ...primary,
      execute,
      // the primary's would skip the routing of reads: a router over this one counts with a region of its own
      executeAdmitted: undefined,
      executeMany: (statement, rows, executeOptions) => writing((db) => db.executeMany(statement, rows, executeOptions)),
      insertMany: (table, rows, insertOptions) => writing((db) => db.insertMany(table, rows, insertOptions)),
      stream,
      transaction,
      withTransaction,
      ownsTransaction: (context) =>
        primary.ownsTransaction(context) || replicas.some((r) => r.db.ownsTransaction(context)),
      sql,
      refreshMetrics: Effect.zipRight(
        primary.refreshMetrics,
        Effect.forEach(replicas, (r) => r.db.refreshMetrics, { discard: true })
      ),
      replicationStats,
      replication,
      // a driver-compatible pool's statements follow the same rules; its checked-out clients stay on the primary
      native: {
        ...primary.native,
        execute: (statement, params, options, call) => {
          const run = (db: DbService) => db.native.execute(statement, params, options, call)
          return Replication.isReplicaRead(statement)
            ? Effect.withFiberRuntime((fiber) => read(fiber, statement, run))
            : writing(run)
        }
      },
      commitToken: Effect.flatMap(FiberRef.get(Replication.currentWrites), (writes) =>
        Effect.map(
          commitPosition(writes.get(alias)),
          (position) => (position === undefined ? undefined : Replication.encodeToken(position))
        ))
    }
    return service
  })

/**
 * The two-phase commit coordinator of a sharded database: branches on the
 * nodes a transaction touches, PREPARE on each, the decision written to a
 * log before any COMMIT PREPARED, and recovery from that log.
 *
 * Presumed abort: a branch with no decision in the log is rolled back. The
 * log's primary key settles a race between a coordinator writing "commit"
 * and a recovery writing "abort" for the same transaction: whichever INSERT
 * lands first is the decision, and the other side follows it.
 *
 * @internal
 */
import type { DbService, TwoPhase } from "@effect-dal/core"
import { DbError } from "@effect-dal/core"
import * as Clock from "effect/Clock"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as FiberRef from "effect/FiberRef"
import * as Metric from "effect/Metric"
import type * as MetricLabel from "effect/MetricLabel"
import * as MetricLabelModule from "effect/MetricLabel"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import { createHash, randomBytes } from "node:crypto"

/**
 * An atomic transaction was rolled back after all its branches were
 * prepared: a recovery judged its coordinator gone and decided "abort"
 * first. Nothing was committed anywhere; the transaction may be run again.
 *
 * @since 0.3.0
 */
export class AtomicCommitAborted extends Data.TaggedError("AtomicCommitAborted")<{
  readonly txid: string
}> {
  /** @since 0.3.0 */
  readonly category = "unavailable" as const
  /** @since 0.3.0 */
  readonly transient = true
  override get message(): string {
    return `atomic transaction ${this.txid} was rolled back: a recovery decided "abort" before its commit decision was written`
  }
}

/**
 * What a recovery did.
 *
 * @since 0.3.0
 */
export interface RecoveryReport {
  /** Prepared branches committed (their transaction's decision was "commit"). */
  readonly committed: number
  /** Prepared branches rolled back (decision "abort", or none). */
  readonly rolledBack: number
  /** Prepared branches left alone: no decision yet, and younger than `olderThan`. */
  readonly undecided: number
  /** Prepared branches whose decided COMMIT or ROLLBACK still failed after a second of retries; the next recovery tries again. */
  readonly failed: number
  /** Nodes that could not be asked; their branches wait for the next recovery. */
  readonly unreachable: ReadonlyArray<string>
}

/**
 * The 2PC metrics, labelled `sharding.name`.
 *
 * @since 0.3.0
 */
export const twoPhaseMetrics = {
  /** Atomic transactions by `outcome`: `committed`, `aborted`, `unknown` (the log could not be reached). */
  outcomes: Metric.counter("dal.sharding.two_phase", { incremental: true }),
  /** Recovery runs. */
  recoveries: Metric.counter("dal.sharding.recoveries", { incremental: true }),
  /** Prepared branches a recovery decided, by `action`: `commit`, `rollback`. */
  recovered: Metric.counter("dal.sharding.recovered_branches", { incremental: true })
} as const

interface Atomic {
  readonly txid: string
  readonly scope: Scope.CloseableScope
  readonly branches: Map<string, TwoPhase.Branch>
  readonly opening: Effect.Semaphore
}

/** The fiber's atomic transaction, if it runs inside one. @internal */
export const currentAtomic = FiberRef.unsafeMake<Atomic | undefined>(undefined)

const hash8 = (s: string) => createHash("sha1").update(s).digest("hex").slice(0, 8)

/** Abort decisions are kept this long, so that a coordinator still racing to write "commit" keeps losing. */
const ABORT_RETENTION_MILLIS = 3_600_000

/**
 * The coordinator of one sharded database.
 *
 * @internal
 */
export interface Coordinator {
  /** The branch of `atomic` on node `name`, started at its first use. */
  readonly branch: (atomic: Atomic, name: string) => Effect.Effect<TwoPhase.Branch, DbError.DbError>
  readonly withAtomicTransaction: <A, E, R>(
    effect: Effect.Effect<A, E, R>
  ) => Effect.Effect<A, E | DbError.DbError | AtomicCommitAborted, R>
  readonly recover: (olderThanMillis: number) => Effect.Effect<RecoveryReport, DbError.DbError>
}

/**
 * Makes the coordinator: `log` is the node and table of the decision log.
 *
 * @internal
 */
export const makeCoordinator = (options: {
  readonly name: string
  readonly nodes: Readonly<Record<string, DbService>>
  readonly log: { readonly node: string; readonly table: string }
  readonly labels: ReadonlyArray<MetricLabel.MetricLabel>
}): Coordinator => {
  const { labels, nodes } = options
  const names = Object.keys(nodes)
  const logDb = nodes[options.log.node]
  if (logDb === undefined) throw new Error(`the decision log's node "${options.log.node}" is not configured`)
  const table = `[${options.log.table.replace(/]/g, "]]")}]`
  const count = (metric: Metric.Metric.Counter<number>, label: string, value: string) =>
    metric.unsafeUpdate(1, [...labels, MetricLabelModule.make(label, value)])

  // gid = dal_<sharded database>_<txid>_<node>: XA RECOVER lists a whole server's branches, so each is marked as ours
  const prefix = `dal_${hash8(options.name)}_`
  const tagOf = Object.fromEntries(names.map((n) => [n, hash8(n)]))
  const nodeOfTag = new Map(names.map((n) => [tagOf[n]!, n]))
  const gidOf = (txid: string, node: string) => `${prefix}${txid}_${tagOf[node]}`
  const parse = (gid: string): { readonly txid: string; readonly node: string } | undefined => {
    if (!gid.startsWith(prefix)) return undefined
    const rest = gid.slice(prefix.length)
    const cut = rest.lastIndexOf("_")
    const node = nodeOfTag.get(rest.slice(cut + 1))
    return cut <= 0 || node === undefined ? undefined : { txid: rest.slice(0, cut), node }
  }
  // the txid starts with its start time, so that a recovery can leave young undecided ones alone
  const newTxid = () => Date.now().toString(36).padStart(9, "0") + randomBytes(4).toString("hex")
  const ageOf = (txid: string) => Date.now() - parseInt(txid.slice(0, 9), 36)
  const inFlight = new Set<string>()

  let logReady = false
  const creating = Effect.unsafeMakeSemaphore(1)
  // one CREATE at a time here; a second try covers another process creating it at the same moment
  // (PostgreSQL's IF NOT EXISTS can then fail on its catalog's unique index)
  const ensureLog = Effect.suspend(() =>
    logReady ? Effect.void : creating.withPermits(1)(Effect.suspend(() =>
      logReady ? Effect.void : logDb.execute(
        `CREATE TABLE IF NOT EXISTS ${table} ([txid] varchar(64) PRIMARY KEY, [decision] varchar(8) NOT NULL, ` +
          `[participants] text NOT NULL, [decided_at] bigint NOT NULL)`
      ).pipe(Effect.retry({ times: 1 }), Effect.tap(() => Effect.sync(() => (logReady = true))))
    ))
  )
  const writeDecision = (txid: string, decision: "commit" | "abort", gids: ReadonlyArray<string>) =>
    Effect.zipRight(
      ensureLog,
      logDb.execute(
        `INSERT INTO ${table} ([txid], [decision], [participants], [decided_at]) VALUES (?, ?, ?, ?)`,
        [txid, decision, gids.join(","), Date.now()]
      )
    )
  const readDecisions = Effect.map(
    logDb.execute<{ txid: string; decision: string }>(`SELECT [txid], [decision] FROM ${table}`),
    (rows) => new Map(rows.map((r) => [r.txid, r.decision as "commit" | "abort"]))
  )
  const forget = (txid: string) => Effect.ignore(logDb.execute(`DELETE FROM ${table} WHERE [txid] = ?`, [txid]))

  /** The decision of `txid`: an abort claimed now, or, if a decision was written first, that one. */
  const settle = (txid: string, gids: ReadonlyArray<string>): Effect.Effect<"commit" | "abort", DbError.DbError> =>
    writeDecision(txid, "abort", gids).pipe(
      Effect.as("abort" as const),
      Effect.catchIf(
        (e) => e._tag === "ConstraintViolation",
        () =>
          Effect.map(
            logDb.execute<{ decision: string }>(`SELECT [decision] FROM ${table} WHERE [txid] = ?`, [txid]),
            (rows) => (rows[0]?.decision === "commit" ? "commit" : "abort")
          )
      )
    )

  const branch = (atomic: Atomic, name: string) =>
    atomic.opening.withPermits(1)(Effect.suspend(() => {
      const existing = atomic.branches.get(name)
      if (existing !== undefined) return Effect.succeed(existing)
      return Effect.tap(
        Scope.extend(nodes[name]!.twoPhase.begin(gidOf(atomic.txid, name)), atomic.scope),
        (started) => Effect.sync(() => atomic.branches.set(name, started))
      )
    }))

  const rollbackAll = (branches: ReadonlyArray<TwoPhase.Branch>) =>
    Effect.forEach(branches, (b) => Effect.ignore(b.rollback), { concurrency: "unbounded", discard: true })

  /** Commits every branch; one that cannot be reached now is committed by recovery (the decision is durable). */
  const commitAll = (txid: string, branches: ReadonlyArray<TwoPhase.Branch>) =>
    Effect.flatMap(
      Effect.forEach(branches, (b) => Effect.either(b.commit), { concurrency: "unbounded" }),
      (results) => {
        const failed = results.filter(Either.isLeft)
        if (failed.length === 0) return forget(txid)
        return Effect.logWarning(
          `atomic transaction ${txid} is committed; ${failed.length} branch(es) could not be committed now and wait for recovery`
        ).pipe(Effect.annotateLogs({ cause: failed[0]!.left.message }))
      }
    )

  /**
   * Ends the transaction: up to its decision, an interruption rolls it back;
   * once "commit" is decided, the COMMITs run to the end.
   */
  const finish = <A, E>(
    atomic: Atomic,
    exit: Exit.Exit<A, E>,
    restore: <X, Y, Z>(effect: Effect.Effect<X, Y, Z>) => Effect.Effect<X, Y, Z>
  ): Effect.Effect<A, E | DbError.DbError | AtomicCommitAborted> =>
    Effect.gen(function*() {
      const branches = [...atomic.branches.values()]
      const outcome = (value: string) => count(twoPhaseMetrics.outcomes, "outcome", value)
      if (Exit.isFailure(exit)) {
        yield* rollbackAll(branches)
        return yield* exit
      }
      if (branches.length === 0) return exit.value
      if (branches.length === 1) {
        // one node: its own COMMIT is atomic, no prepare and no log
        yield* Effect.mapError(branches[0]!.commit, (error) =>
          error._tag === "ConnectionError"
            ? new DbError.OutcomeUnknown({ phase: "commit", sql: undefined, cause: error })
            : error)
        outcome("committed")
        return exit.value
      }
      const prepared = yield* Effect.exit(restore(
        Effect.forEach(branches, (b) => b.prepare, { concurrency: "unbounded", discard: true })
      ))
      if (Exit.isFailure(prepared)) {
        yield* rollbackAll(branches)
        outcome("aborted")
        return yield* Effect.failCause(prepared.cause)
      }
      const gids = branches.map((b) => b.gid)
      const written = yield* Effect.exit(restore(writeDecision(atomic.txid, "commit", gids)))
      if (Exit.isFailure(written)) {
        // lost to a recovery's abort, interrupted, or not known to be written: the log decides
        const decision = yield* Effect.either(settle(atomic.txid, gids))
        if (Either.isLeft(decision)) {
          outcome("unknown")
          return yield* Effect.fail(new DbError.OutcomeUnknown({ phase: "commit", sql: undefined, cause: decision.left }))
        }
        if (decision.right === "abort") {
          yield* rollbackAll(branches)
          outcome("aborted")
          if (Exit.isInterrupted(written)) return yield* Effect.failCause(written.cause)
          return yield* Effect.fail(new AtomicCommitAborted({ txid: atomic.txid }))
        }
      }
      yield* commitAll(atomic.txid, branches)
      outcome("committed")
      return exit.value
    })

  const withAtomicTransaction = <A, E, R>(
    effect: Effect.Effect<A, E, R>
  ): Effect.Effect<A, E | DbError.DbError | AtomicCommitAborted, R> =>
    Effect.withFiberRuntime((fiber) => {
      // nested: part of the enclosing atomic transaction
      if (fiber.getFiberRef(currentAtomic) !== undefined) return effect
      return Effect.uninterruptibleMask((restore) =>
        Effect.gen(function*() {
          const atomic: Atomic = {
            txid: newTxid(),
            scope: yield* Scope.make(),
            branches: new Map(),
            opening: yield* Effect.makeSemaphore(1)
          }
          inFlight.add(atomic.txid)
          const exit = yield* Effect.exit(restore(Effect.locally(effect, currentAtomic, atomic)))
          const outcome = yield* Effect.exit(finish(atomic, exit, restore))
          yield* Scope.close(atomic.scope, Exit.void)
          inFlight.delete(atomic.txid)
          return yield* outcome
        })
      )
    })

  const liveClock = Clock.make()
  const recover = (olderThanMillis: number): Effect.Effect<RecoveryReport, DbError.DbError> =>
    Effect.gen(function*() {
      twoPhaseMetrics.recoveries.unsafeUpdate(1, labels)
      // the log is read before the branches are listed: a "commit" read here had all its branches prepared by then,
      // so each is either still listed or already committed, never not yet prepared. A log not created yet holds nothing.
      const read = yield* Effect.either(readDecisions)
      const decisions = Either.getOrElse(read, () => new Map<string, "commit" | "abort">())
      const listed = yield* Effect.forEach(names, (n) => Effect.either(nodes[n]!.twoPhase.prepared), {
        concurrency: "unbounded"
      })
      const unreachable: Array<string> = []
      const pending = new Map<string, Array<{ readonly node: string; readonly gid: string }>>()
      listed.forEach((result, i) => {
        const node = names[i]!
        if (Either.isLeft(result)) return void unreachable.push(node)
        for (const gid of result.right) {
          const parsed = parse(gid)
          if (parsed === undefined || parsed.node !== node || inFlight.has(parsed.txid)) continue
          const list = pending.get(parsed.txid) ?? []
          list.push({ node, gid })
          pending.set(parsed.txid, list)
        }
      })
      let committed = 0
      let rolledBack = 0
      let undecided = 0
      let failed = 0
      for (const [txid, branches] of pending) {
        let decision = decisions.get(txid)
        if (decision === undefined) {
          if (ageOf(txid) < olderThanMillis) {
            undecided += branches.length
            continue
          }
          decision = yield* settle(txid, branches.map((b) => b.gid))
        }
        for (const { gid, node } of branches) {
          const twoPhase = nodes[node]!.twoPhase
          // a branch whose session was just lost may still be held by it on the server until the server
          // sees the connection close (MariaDB refuses XA COMMIT from another session meanwhile): asked
          // again for up to a second, in real time, before it is left for the next recovery
          const done = yield* Effect.either(Effect.withClock(
            Effect.retry(decision === "commit" ? twoPhase.commitPrepared(gid) : twoPhase.rollbackPrepared(gid), {
              schedule: Schedule.spaced("100 millis"),
              times: 10
            }),
            liveClock
          ))
          if (Either.isLeft(done)) {
            failed++
            yield* Effect.logWarning(`recovery could not ${decision} prepared branch ${gid} on ${node}; the next recovery tries again`).pipe(
              Effect.annotateLogs({ cause: done.left.message })
            )
            continue
          }
          if (decision === "commit") committed++
          else rolledBack++
          count(twoPhaseMetrics.recovered, "action", decision === "commit" ? "commit" : "rollback")
        }
      }
      if (Either.isLeft(read)) return { committed, rolledBack, undecided, failed, unreachable }
      if (unreachable.length === 0) {
        for (const [txid, decision] of decisions) {
          if (decision === "commit" && !pending.has(txid) && !inFlight.has(txid)) yield* forget(txid)
        }
      }
      yield* Effect.ignore(
        logDb.execute(`DELETE FROM ${table} WHERE [decision] = 'abort' AND [decided_at] < ?`, [
          Date.now() - ABORT_RETENTION_MILLIS
        ])
      )
      return { committed, rolledBack, undecided, failed, unreachable }
    })

  return { branch, withAtomicTransaction, recover }
}

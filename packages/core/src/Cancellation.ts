/**
 * Cancelling a running statement without making anyone wait for the server,
 * and without ever cancelling the wrong statement. For driver authors.
 *
 * An interrupted statement returns to its caller at once. The cancel request
 * (a PostgreSQL CancelRequest, MySQL's `KILL QUERY`) runs in the background,
 * and until the statement has let go of the connection, `settle` holds back
 * everything else on it: the next statement, a rollback, the return to the
 * pool. A cancel that arrives late can therefore only ever hit the statement
 * it was meant for.
 *
 * @since 0.1.0
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import * as Option from "effect/Option"
import type { DbError } from "./DbError.js"
import { StatementTimeout } from "./DbError.js"
import { fromSend } from "./internal/abortable.js"

/** How long a cancelled statement may take to let go before its connection is given up. */
const DEFAULT_GRACE_MS = 5_000

interface InFlight {
  settled: boolean
  onSettle: (() => void) | undefined
}

/**
 * The cancellation state of one connection.
 *
 * @since 0.1.0
 */
export class CancelGate {
  private pending: Deferred.Deferred<void> | undefined = undefined

  constructor(
    /** Sends the server-side cancel for whatever runs on this connection. */
    private readonly cancel: () => Effect.Effect<void>,
    /** Called when a cancelled statement did not let go in time: the connection must not be reused. */
    private readonly giveUp: () => void,
    private readonly graceMillis: number = DEFAULT_GRACE_MS
  ) {}

  /** Waits until a cancelled statement has let go; `undefined` when none is pending. */
  settle(): Effect.Effect<void> | undefined {
    return this.pending === undefined ? undefined : Deferred.await(this.pending)
  }

  /**
   * Sends a callback-style statement. `start` sends it and calls its `done`
   * once; the outcome goes on to `onOutcome`, unless the `timeout` (a hard
   * timeout in milliseconds) passed first, which cancels the statement in the
   * background and reports `StatementTimeout`. The function returned aborts:
   * it cancels a statement still running, in the background, and `onOutcome`
   * is then never called.
   */
  send<A>(
    sql: string,
    timeout: number | undefined,
    start: (done: (outcome: Exit.Exit<A, DbError>) => void) => void,
    onOutcome: (outcome: Exit.Exit<A, DbError>) => void
  ): () => void {
    const inFlight: InFlight = { settled: false, onSettle: undefined }
    // one timer, no fiber: the hard timeout sits on every statement
    const timer = timeout === undefined ? undefined : setTimeout(() => {
      if (inFlight.settled || inFlight.onSettle !== undefined) return
      this.cancelInBackground(inFlight)
      onOutcome(Exit.fail(new StatementTimeout({ kind: "statement", timeoutMillis: timeout, sql })))
    }, Math.max(0, timeout))
    start((outcome) => {
      inFlight.settled = true
      if (timer !== undefined) clearTimeout(timer)
      if (inFlight.onSettle !== undefined) return inFlight.onSettle()
      onOutcome(outcome)
    })
    return () => {
      if (timer !== undefined) clearTimeout(timer)
      if (!inFlight.settled && inFlight.onSettle === undefined) this.cancelInBackground(inFlight)
    }
  }

  /** `send` as an effect; interrupting it aborts the statement. */
  run<A>(
    sql: string,
    timeout: number | undefined,
    start: (done: (outcome: Exit.Exit<A, DbError>) => void) => void
  ): Effect.Effect<A, DbError> {
    return Effect.suspend(() => fromSend<A, DbError>((done) => this.send(sql, timeout, start, done)))
  }

  private cancelInBackground(inFlight: InFlight): void {
    const done = Deferred.unsafeMake<void>(FiberId.none)
    this.pending = done
    let onSettled: (() => void) | undefined
    // claimed now, so the caller is never resumed with the cancelled statement's outcome
    inFlight.onSettle = () => onSettled?.()
    const settled = Effect.async<void>((resume) => {
      if (inFlight.settled) return resume(Effect.void)
      onSettled = () => resume(Effect.void)
    })
    Effect.runFork(
      Effect.zipRight(Effect.ignore(this.cancel()), settled).pipe(
        Effect.timeoutOption(this.graceMillis),
        Effect.flatMap((outcome) => Effect.sync(() => Option.isNone(outcome) && this.giveUp())),
        Effect.ensuring(Effect.sync(() => {
          if (this.pending === done) this.pending = undefined
          Deferred.unsafeDone(done, Exit.void)
        }))
      )
    )
  }
}

import type * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"

/**
 * `Effect.async` whose interruption calls `abort`. A canceller returned from
 * `Effect.async` costs an `onInterrupt` wrapper per call (measured at about
 * 2 µs, as much as the rest of a statement's bookkeeping); this catches the
 * interruption in an uninterruptible region instead. `abort` also runs
 * after an ordinary failure, so it must do nothing once the work is done.
 *
 * `interruptible`: whether the caller is, where it is known (a statement
 * run from `withFiberRuntime` reads it from the fiber's status). An
 * uninterruptible caller needs no region at all, and an interruptible one
 * gets it from two flag changes, a step of the run loop fewer than
 * `uninterruptibleMask` takes.
 *
 * @internal
 */
export const abortable = <A, E>(
  register: (resume: (outcome: Effect.Effect<A, E>) => void) => void,
  abort: () => void,
  interruptible?: boolean
): Effect.Effect<A, E> => {
  if (interruptible === false) return Effect.async<A, E>(register)
  const aborted = (cause: Cause.Cause<E>) => {
    abort()
    return Effect.failCause(cause)
  }
  return interruptible === true
    ? Effect.uninterruptible(Effect.catchAllCause(Effect.interruptible(Effect.async<A, E>(register)), aborted))
    : Effect.uninterruptibleMask((restore) => Effect.catchAllCause(restore(Effect.async<A, E>(register)), aborted))
}

/**
 * A callback-style send (it calls `done` once, and returns a function that
 * aborts) as an effect. Build one per run: the abort handle lives in it.
 *
 * @internal
 */
export const fromSend = <A, E>(
  send: (done: (outcome: Effect.Effect<A, E>) => void) => () => void
): Effect.Effect<A, E> => {
  let abort: (() => void) | undefined
  return abortable<A, E>((resume) => {
    abort = send(resume)
  }, () => abort?.())
}

import * as Effect from "effect/Effect"

/**
 * `Effect.async` whose interruption calls `abort`. A canceller returned from
 * `Effect.async` costs an `onInterrupt` wrapper per call (measured at about
 * 2 µs, as much as the rest of a statement's bookkeeping); this catches the
 * interruption in an uninterruptible region instead. `abort` also runs
 * after an ordinary failure, so it must do nothing once the work is done.
 *
 * @internal
 */
export const abortable = <A, E>(
  register: (resume: (outcome: Effect.Effect<A, E>) => void) => void,
  abort: () => void
): Effect.Effect<A, E> =>
  Effect.uninterruptibleMask((restore) =>
    Effect.catchAllCause(restore(Effect.async<A, E>(register)), (cause) => {
      abort()
      return Effect.failCause(cause)
    })
  )

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

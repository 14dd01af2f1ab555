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

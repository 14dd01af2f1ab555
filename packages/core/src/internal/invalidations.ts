/**
 * Committed invalidations: keys declared by writes, announced once the
 * write is committed (at once outside a transaction, at COMMIT inside one,
 * never after a ROLLBACK), to listeners and to the database's `Reactivity`.
 *
 * @internal
 */
import * as Reactivity from "@effect/experimental/Reactivity"
import * as Cause from "effect/Cause"
import type * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import type { DbError } from "../DbError.js"
import type { Invalidations, Keys } from "../Invalidation.js"
import type { DalConnection } from "./connection.js"
import type { DbCore } from "./core.js"

/** @internal */
export interface Invalidator extends Invalidations {
  /** Announces `keys` once the fiber's transaction commits, or now outside one. */
  readonly after: (keys: Keys) => Effect.Effect<void>
  /** `effect`, announcing `keys` when it succeeds (or when its outcome is unknown: a stale entry is worse than a miss). */
  readonly around: <A>(effect: Effect.Effect<A, DbError>, keys: Keys | undefined) => Effect.Effect<A, DbError>
  /** The transaction on `conn` committed (or may have): announce what it collected. */
  readonly committed: (conn: DalConnection) => void
  /** The transaction on `conn` ended without committing: forget what it collected. */
  readonly discarded: (conn: DalConnection) => void
}

const outcomeUnknown = (cause: Cause.Cause<DbError>): boolean => {
  const failure = Cause.failureOption(cause)
  return failure._tag === "Some" && failure.value._tag === "OutcomeUnknown"
}

/** @internal */
export const makeInvalidator = (currentTx: DbCore["currentTx"]): Effect.Effect<Invalidator> =>
  Effect.map(Reactivity.make, (base) => {
    const listeners = new Set<(keys: Keys) => void>()
    const announce = (keys: Keys) => {
      base.unsafeInvalidate(keys as Parameters<typeof base.unsafeInvalidate>[0])
      for (const listener of listeners) listener(keys)
    }
    const after = (keys: Keys): Effect.Effect<void> =>
      Effect.withFiberRuntime((fiber) => {
        const tx = currentTx(fiber.currentContext as Context.Context<never>)
        if (tx === undefined) announce(keys)
        else (tx[0].pendingInvalidations ??= []).push(keys)
        return Effect.void
      })
    const reactivity: Reactivity.Reactivity["Type"] = {
      ...base,
      unsafeInvalidate: announce,
      invalidate: (keys) => after(keys as Keys),
      mutation: (keys, effect) => Effect.zipLeft(effect, after(keys as Keys))
    }
    return {
      subscribe: (listener) => {
        listeners.add(listener)
        return () => listeners.delete(listener)
      },
      reactivity,
      after,
      around: (effect, keys) =>
        keys === undefined ? effect : Effect.onExit(effect, (exit) =>
          exit._tag === "Success" || outcomeUnknown(exit.cause) ? after(keys) : Effect.void),
      committed: (conn) => {
        const pending = conn.pendingInvalidations
        conn.pendingInvalidations = undefined
        if (pending !== undefined) for (const keys of pending) announce(keys)
      },
      discarded: (conn) => {
        conn.pendingInvalidations = undefined
      }
    }
  })

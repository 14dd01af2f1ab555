import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"

interface Shared {
  readonly value: unknown
  readonly release: Effect.Effect<void>
  refs: number
}

/**
 * Process-wide shared resources by key: pools by config hash, breakers by
 * alias. A resource lives until the last layer that uses it releases it,
 * whatever the order in which layers close.
 */
const resources = new Map<string, Shared>()

/**
 * Gets the resource of `key`, making it on first use; `release` (of the
 * first maker) runs when the last user is done.
 *
 * @internal
 */
export const acquireShared = <A>(
  key: string,
  make: Effect.Effect<A>,
  release: (a: A) => Effect.Effect<void>
): Effect.Effect<A, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.suspend(() => {
      const shared = resources.get(key)
      if (shared !== undefined) {
        shared.refs++
        return Effect.succeed(shared.value as A)
      }
      return Effect.map(make, (value) => {
        resources.set(key, { value, release: release(value), refs: 1 })
        return value
      })
    }),
    (value) =>
      Effect.suspend(() => {
        const shared = resources.get(key)
        if (shared === undefined || shared.value !== value) return Effect.void
        shared.refs--
        if (shared.refs > 0) return Effect.void
        resources.delete(key)
        return shared.release
      })
  )

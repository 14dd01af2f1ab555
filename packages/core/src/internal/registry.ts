import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type { Pool } from "../Pool.js"

interface Shared {
  readonly pool: Pool<any>
  readonly shutdown: Effect.Effect<void>
  refs: number
}

/**
 * Pools by config hash, process-wide. A pool lives until the last layer that
 * uses it releases it, whatever the order in which layers close.
 */
const pools = new Map<string, Shared>()

/** @internal */
export const acquireShared = <C>(
  hash: string,
  make: Effect.Effect<Pool<C>>,
  /** Runs after the pool closes; the first layer's is the one kept. */
  shutdown: Effect.Effect<void> = Effect.void
): Effect.Effect<Pool<C>, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.suspend(() => {
      const shared = pools.get(hash)
      if (shared !== undefined) {
        shared.refs++
        return Effect.succeed(shared.pool as Pool<C>)
      }
      return Effect.map(make, (pool) => {
        pools.set(hash, { pool, shutdown, refs: 1 })
        return pool
      })
    }),
    (pool) =>
      Effect.suspend(() => {
        const shared = pools.get(hash)
        if (shared === undefined || shared.pool !== pool) return Effect.void
        shared.refs--
        if (shared.refs > 0) return Effect.void
        pools.delete(hash)
        return Effect.zipRight(pool.close, shared.shutdown)
      })
  )

/** How many layers share the pool of a hash (0 when none is open). @internal */
export const sharedCount = (hash: string): number => pools.get(hash)?.refs ?? 0

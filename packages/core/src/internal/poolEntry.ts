/**
 * One pooled connection's bookkeeping: its state, age and retirement time,
 * and who holds it, for leak detection and reports.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import * as FiberId from "effect/FiberId"
import type { Lease } from "../Pool.js"
import { currentTags } from "../QueryTags.js"

/** @internal */
export class Entry<C> implements Lease<C> {
  state: "idle" | "active" | "closing" = "idle"
  lastUsed: number
  readonly expiresAt: number
  // the current borrower, for leak detection
  leasedAt = 0
  leakReported = false
  holder: Fiber.RuntimeFiber<unknown, unknown> | undefined = undefined
  stack: string | undefined = undefined
  constructor(readonly conn: C, now: number, lifetime: number) {
    this.lastUsed = now
    // spread retirements so that connections opened together do not all close together
    this.expiresAt = now + lifetime * (1 - Math.random() * 0.05)
  }
}

/**
 * Reports a connection held past the leak threshold; with `reclaim`, takes
 * it back (`destroy`) and interrupts its holder.
 *
 * @internal
 */
export const leakReport = <C>(
  alias: string,
  leakAction: "warn" | "reclaim",
  entry: Entry<C>,
  heldMillis: number,
  destroy: (entry: Entry<C>) => void
): Effect.Effect<void> => {
  const holder = entry.holder
  const reclaim = leakAction === "reclaim"
  const log = Effect.logWarning(
    reclaim
      ? `connection leak: held for ${heldMillis} ms; reclaiming it (the holder is interrupted)`
      : `connection leak suspected: held for ${heldMillis} ms`
  ).pipe(
    Effect.annotateLogs({
      alias,
      heldMillis,
      // the holder's tags when the leak is seen: read then, not on every lease
      tags: holder === undefined ? {} : holder.getFiberRef(currentTags),
      ...(entry.stack === undefined ? {} : { acquiredAt: entry.stack })
    })
  )
  if (!reclaim) return log
  return Effect.zipRight(
    log,
    Effect.sync(() => {
      destroy(entry)
      if (holder !== undefined) holder.unsafeInterruptAsFork(FiberId.none)
    })
  )
}

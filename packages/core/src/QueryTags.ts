/**
 * Query tags: a small record of labels (`operation`, `route`, ...) carried
 * with every statement a region of code runs.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"

/**
 * Tags are string labels.
 *
 * @since 0.1.0
 */
export type QueryTags = Readonly<Record<string, string>>

const empty: QueryTags = Object.freeze({})

/**
 * The tags of the current fiber.
 *
 * @since 0.1.0
 */
export const currentTags: FiberRef.FiberRef<QueryTags> = FiberRef.unsafeMake(empty, {
  fork: (parent) => parent,
  join: (parent) => parent
})

/**
 * Runs `effect` with `tags` merged over the current tags.
 *
 * @since 0.1.0
 */
export const withTags = (tags: QueryTags) => <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.locallyWith(effect, currentTags, (current) => (current === empty ? tags : { ...current, ...tags }))

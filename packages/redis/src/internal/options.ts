/**
 * Reading the cache's and the queue's options.
 *
 * @internal
 */
import * as Duration from "effect/Duration"

/** A duration option in milliseconds, or `fallback` when it is not given. @internal */
export const millis = (d: Duration.DurationInput | undefined, fallback: number): number =>
  d === undefined ? fallback : Duration.toMillis(Duration.decode(d))

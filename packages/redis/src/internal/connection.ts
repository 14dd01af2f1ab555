/**
 * Redis connections of the cache and the queue: one `redis` option (a URL or
 * ioredis options, else `REDIS_URL`, else the local server), reconnecting
 * with a capped backoff, errors left to the callers' own handling.
 *
 * @internal
 */
import { Redis } from "ioredis"
import type { RedisOptions } from "ioredis"

/** @internal */
export const openRedis = (
  redis: string | RedisOptions | undefined,
  defaults: RedisOptions,
  required: RedisOptions = {}
): Redis => {
  const options: RedisOptions = {
    retryStrategy: (times) => Math.min(50 * 2 ** times, 1_000),
    ...defaults,
    ...(typeof redis === "object" ? redis : {}),
    ...required
  }
  const client = typeof redis === "object"
    ? new Redis(options)
    : new Redis(redis ?? process.env["REDIS_URL"] ?? "redis://127.0.0.1:6379", options)
  // a lost connection shows as failed commands, which each caller handles; the event itself is not a crash
  client.on("error", () => {})
  return client
}

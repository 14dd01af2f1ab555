/**
 * @effect-dal/redis: caching and async writes for effect-dal on Redis.
 *
 * @since 0.3.0
 */

/** @since 0.3.0 */
export { DbCache } from "./DbCache.js"
/** @since 0.3.0 */
export type { CachedOptions, CacheStats, DbCacheOptions, DbCacheService } from "./DbCache.js"
/** @since 0.3.0 */
export * as WriteQueue from "./WriteQueue.js"

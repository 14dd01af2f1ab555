/**
 * @effect-dal/routing: beyond one database. Read/write splitting over
 * replicas, with read-your-writes from the engines' commit positions.
 *
 * @since 0.2.0
 */

/** @since 0.2.0 */
export * as Replicated from "./Replicated.js"
/** @since 0.3.0 */
export * as Sharding from "./Sharding.js"

/**
 * @effect-dal/pg: the PostgreSQL engine of effect-dal.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as PgDatabase from "./PgDatabase.js"
/** @since 0.1.0 */
export * as PgErrors from "./PgErrors.js"
/** @since 0.3.0 */
export * as PgPool from "./PgPool.js"
/** @since 0.3.0 */
export { createPgPool } from "./PgPool.js"

/**
 * @effect-dal/pglite: the embedded PostgreSQL (PGlite) engine of effect-dal.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as PgliteDatabase from "./PgliteDatabase.js"

/**
 * @effect-dal/promise: effect-dal for code without Effect.
 *
 * @since 0.3.0
 */

/** @since 0.3.0 */
export { connect, Database, InvalidOptions } from "./Database.js"
/** @since 0.3.0 */
export type { CallOptions, ConnectOptions, Transaction, TransactionOptions } from "./Database.js"
/**
 * The typed errors, as `Error` subclasses: `err instanceof PoolTimeout`, or `switch (err._tag)`.
 *
 * @since 0.3.0
 */
export {
  CircuitOpen,
  ConnectionError,
  ConstraintViolation,
  DdlInTransaction,
  InvalidQuery,
  OutcomeUnknown,
  PoolClosed,
  PoolTimeout,
  QueryError,
  StatementTimeout
} from "@effect-dal/core/DbError"

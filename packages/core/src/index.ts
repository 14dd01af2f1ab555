/**
 * @effect-dal/core: the engine-agnostic core of effect-dal.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export { CancelGate } from "./Cancellation.js"
/** @since 0.1.0 */
export * as CircuitBreaker from "./CircuitBreaker.js"
/** @since 0.1.0 */
export * as DatabaseConfig from "./DatabaseConfig.js"
/** @since 0.1.0 */
export { Db } from "./Db.js"
/** @since 0.1.0 */
export type {
  Admission,
  DbService,
  ExecuteOptions,
  Executor,
  InsertManyOptions,
  InsertManyResult,
  NodeStats,
  ResilienceStats,
  SlowQuery,
  StreamOptions,
  Transaction,
  WithTransactionOptions
} from "./Db.js"
/** @since 0.1.0 */
export * as DbModule from "./Db.js"
/** @since 0.1.0 */
export * as DbError from "./DbError.js"
/** @since 0.1.0 */
export * as Dialect from "./Dialect.js"
/** @since 0.1.0 */
export * as Driver from "./Driver.js"
/** @since 0.2.0 */
export * as Failover from "./Failover.js"
/** @since 0.3.0 */
export * as Invalidation from "./Invalidation.js"
/** @since 0.1.0 */
export * as Metrics from "./Metrics.js"
/** @since 0.3.0 */
export * as Native from "./Native.js"
/** @since 0.1.0 */
export * as Pool from "./Pool.js"
/** @since 0.1.0 */
export * as PortableSql from "./PortableSql.js"
/** @since 0.1.0 */
export * as QueryTags from "./QueryTags.js"
/** @since 0.2.0 */
export * as Replication from "./Replication.js"
/** @since 0.1.0 */
export * as Retry from "./Retry.js"
/** @since 0.3.0 */
export * as Runner from "./Runner.js"
/** @since 0.1.0 */
export * as ScalingAdvisor from "./ScalingAdvisor.js"
/** @since 0.3.0 */
export * as TwoPhase from "./TwoPhase.js"
/** @since 0.1.0 */
export * as StatementCache from "./StatementCache.js"

/**
 * @effect-dal/testkit (private): the conformance suite shared by every engine,
 * and the tools of the fault tests.
 *
 * @since 0.1.0
 */

/** @since 0.3.0 */
export * as AtomicCoordinator from "./AtomicCoordinator.js"
/** @since 0.3.0 */
export * as AtomicSuite from "./AtomicSuite.js"
/** @since 0.1.0 */
export * as Bank from "./Bank.js"
/** @since 0.1.0 */
export * as Conformance from "./Conformance.js"
/** @since 0.2.0 */
export * as FailoverSuite from "./FailoverSuite.js"
/** @since 0.1.0 */
export * as FaultProxy from "./FaultProxy.js"
/** @since 0.2.0 */
export * as MariaCluster from "./MariaCluster.js"
/** @since 0.1.0 */
export * as PgCluster from "./PgCluster.js"
/** @since 0.2.0 */
export * as ReplicaChecks from "./ReplicaChecks.js"
/** @since 0.3.0 */
export * as Traffic from "./Traffic.js"
/** @since 0.3.0 */
export * as ShardingSuite from "./ShardingSuite.js"

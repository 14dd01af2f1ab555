/**
 * @effect-dal/testkit (private): the conformance suite shared by every engine.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as Conformance from "./Conformance.js"

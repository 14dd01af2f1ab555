/**
 * @effect-dal/cli: the capacity check behind `npm start`.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as CapacityCheck from "./CapacityCheck.js"
/** @since 0.1.0 */
export * as Report from "./Report.js"

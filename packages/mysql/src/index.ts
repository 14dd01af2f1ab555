/**
 * @effect-dal/mysql: the MySQL/MariaDB engine of effect-dal.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as MysqlDatabase from "./MysqlDatabase.js"
/** @since 0.1.0 */
export * as MysqlErrors from "./MysqlErrors.js"
/** @since 0.3.0 */
export * as MysqlPool from "./MysqlPool.js"
/** @since 0.3.0 */
export { createMysqlPool } from "./MysqlPool.js"

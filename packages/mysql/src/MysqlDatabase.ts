/**
 * The MySQL/MariaDB `DatabaseLive`: `Db` and `@effect/sql`'s `SqlClient`
 * over effect-dal's pool, one `mysql2` connection per pooled connection.
 *
 * @since 0.1.0
 */
import { DatabaseConfig, Db, DbModule } from "@effect-dal/core"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import type { MysqlDriverOptions } from "./internal/driver.js"
import { makeDriver } from "./internal/driver.js"

/**
 * Options of `MysqlDatabase.layer`: the common `DatabaseOptions` plus what is
 * specific to MySQL.
 *
 * @since 0.1.0
 */
export interface MysqlDatabaseOptions extends DatabaseConfig.DatabaseOptions, MysqlDriverOptions {}

/**
 * What MySQL contributes to config resolution.
 *
 * @since 0.1.0
 */
export const engine: DatabaseConfig.EngineDefaults = {
  engine: "mysql",
  port: 3306,
  schemes: ["mysql", "mariadb"]
}

/**
 * Builds the MySQL `Db` in a scope.
 *
 * @since 0.1.0
 */
export const make = (
  options: MysqlDatabaseOptions
): Effect.Effect<DbModule.DbService, ConfigError.ConfigError, Scope.Scope> =>
  Effect.flatMap(
    DatabaseConfig.resolve(options, engine, { charset: options.charset, ssl: options.ssl ?? null }),
    (config) => DbModule.make(makeDriver(config, options), config)
  )

/**
 * The MySQL/MariaDB layer: provides `Db` and `SqlClient.SqlClient`.
 *
 * @since 0.1.0
 */
export const layer = (
  options: MysqlDatabaseOptions
): Layer.Layer<Db | SqlClient.SqlClient, ConfigError.ConfigError> =>
  Layer.scopedContext(
    Effect.map(make(options), (db) => Context.make(Db, db).pipe(Context.add(SqlClient.SqlClient, db.sql)))
  )

/**
 * The MySQL/MariaDB layer from `Config`, by default from the environment
 * (`DATABASE_URL` and friends, see `DatabaseConfig.fromEnv`).
 *
 * @since 0.1.0
 */
export const layerConfig = (
  config: Config.Config.Wrap<MysqlDatabaseOptions> = DatabaseConfig.fromEnv
): Layer.Layer<Db | SqlClient.SqlClient, ConfigError.ConfigError> =>
  Layer.unwrapEffect(Effect.map(Config.unwrap(config), layer))

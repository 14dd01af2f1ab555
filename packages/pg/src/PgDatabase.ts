/**
 * The PostgreSQL `DatabaseLive`: `Db` and `@effect/sql`'s `SqlClient` over
 * effect-dal's pool, one `pg.Client` per pooled connection.
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
import type { PgDriverOptions } from "./internal/driver.js"
import { makeDriver } from "./internal/driver.js"

/**
 * Options of `PgDatabase.layer`: the common `DatabaseOptions` plus what is
 * specific to PostgreSQL.
 *
 * @since 0.1.0
 */
export interface PgDatabaseOptions extends DatabaseConfig.DatabaseOptions, PgDriverOptions {}

/**
 * What PostgreSQL contributes to config resolution.
 *
 * @since 0.1.0
 */
export const engine: DatabaseConfig.EngineDefaults = {
  engine: "pg",
  port: 5432,
  schemes: ["postgres", "postgresql"]
}

/**
 * Builds the PostgreSQL `Db` in a scope.
 *
 * @since 0.1.0
 */
export const make = (
  options: PgDatabaseOptions
): Effect.Effect<DbModule.DbService, ConfigError.ConfigError, Scope.Scope> =>
  Effect.flatMap(
    DatabaseConfig.resolve(options, engine, { ssl: options.ssl ?? null, applicationName: options.applicationName }),
    (config) => DbModule.make(makeDriver(config, options), config)
  )

/**
 * The PostgreSQL layer: provides `Db` and `SqlClient.SqlClient`. Invalid
 * options fail the layer with a `ConfigError` naming the field.
 *
 * @since 0.1.0
 */
export const layer = (options: PgDatabaseOptions): Layer.Layer<Db | SqlClient.SqlClient, ConfigError.ConfigError> =>
  Layer.scopedContext(
    Effect.map(make(options), (db) => Context.make(Db, db).pipe(Context.add(SqlClient.SqlClient, db.sql)))
  )

/**
 * The PostgreSQL layer from `Config`, by default from the environment
 * (`DATABASE_URL` and friends, see `DatabaseConfig.fromEnv`).
 *
 * @since 0.1.0
 */
export const layerConfig = (
  config: Config.Config.Wrap<PgDatabaseOptions> = DatabaseConfig.fromEnv
): Layer.Layer<Db | SqlClient.SqlClient, ConfigError.ConfigError> =>
  Layer.unwrapEffect(Effect.map(Config.unwrap(config), layer))

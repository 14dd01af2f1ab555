/**
 * The PostgreSQL `DatabaseLive`: `Db` and `@effect/sql`'s `SqlClient` over
 * effect-dal's pool, one `pg.Client` per pooled connection.
 *
 * @since 0.1.0
 */
import { DatabaseConfig, Db, DbModule } from "@effect-dal/core"
import { Replicated } from "@effect-dal/routing"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as Reactivity from "@effect/experimental/Reactivity"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import type { PgDriverOptions } from "./internal/driver.js"
import { makeDriver } from "./internal/driver.js"
import { makePgClient } from "./internal/pgClient.js"

/**
 * Options of `PgDatabase.layer`: the common `DatabaseOptions` plus what is
 * specific to PostgreSQL.
 *
 * @since 0.1.0
 */
export interface PgDatabaseOptions extends DatabaseConfig.DatabaseOptions, PgDriverOptions {
  /** `@effect/sql-pg`'s name for `user`; `user` wins when both are set. */
  readonly username?: string | undefined
  /** `@effect/sql-pg`'s name for `pool.max`; `pool.max` wins. */
  readonly maxConnections?: number | undefined
  /** `@effect/sql-pg`'s name for `pool.min`; `pool.min` wins. */
  readonly minConnections?: number | undefined
  /** `@effect/sql-pg`'s name for `pool.idleTimeout`; `pool.idleTimeout` wins. */
  readonly idleTimeout?: Duration.DurationInput | undefined
  /** `@effect/sql-pg`'s name for `pool.maxLifetime`; `pool.maxLifetime` wins. */
  readonly connectionTTL?: Duration.DurationInput | undefined
  /** `@effect/sql-pg`'s Unix socket directory; `host` wins. */
  readonly path?: string | undefined
}

/** The stock option names, folded into ours: ours win where both are given. */
const normalize = (options: PgDatabaseOptions): PgDatabaseOptions => ({
  ...options,
  user: options.user ?? options.username,
  host: options.host ?? options.path,
  pool: {
    ...options.pool,
    max: options.pool?.max ?? options.maxConnections,
    min: options.pool?.min ?? options.minConnections,
    idleTimeout: options.pool?.idleTimeout ?? options.idleTimeout,
    maxLifetime: options.pool?.maxLifetime ?? options.connectionTTL
  }
})

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
): Effect.Effect<{ readonly db: DbModule.DbService; readonly pg: PgClient.PgClient }, ConfigError.ConfigError, Scope.Scope> =>
  Effect.gen(function*() {
    const { config, db: primary, driver } = yield* node(options)
    const replicas = DatabaseConfig.replicasOf(options, config)
    if (replicas.length === 0) return { db: primary, pg: makePgClient(primary, config, normalize(options)) }
    // each replica is a database of its own (pool, breaker, metrics), routed to by the primary's router
    const nodes = yield* Effect.forEach(replicas, (replica, i) =>
      Effect.map(
        node(DatabaseConfig.replicaOptions(options, config.alias, replica, i)),
        ({ db }) => ({ db, weight: replica.weight ?? 1 })
      ))
    const db = yield* Replicated.make({ primary, replicas: nodes, driver, replication: options.replication })
    return { db, pg: makePgClient(db, config, normalize(options)) }
  })

/** One node: its config, driver and `Db`. */
const node = (options: PgDatabaseOptions) =>
  Effect.suspend(() => {
    const o = normalize(options)
    return Effect.flatMap(
      DatabaseConfig.resolve(o, engine, { ssl: o.ssl ?? null, applicationName: o.applicationName }),
      (config) => {
        const driver = makeDriver(config, o)
        return Effect.map(DbModule.make(driver, config), (db) => ({ config, driver, db }))
      }
    )
  })

/**
 * The PostgreSQL layer: provides `Db`, `SqlClient.SqlClient` and
 * `@effect/sql-pg`'s `PgClient.PgClient`, so it replaces `PgClient.layer`
 * in place. Invalid options fail the layer with a `ConfigError` naming the field.
 *
 * @since 0.1.0
 */
export const layer = (
  options: PgDatabaseOptions
): Layer.Layer<Db | SqlClient.SqlClient | PgClient.PgClient | Reactivity.Reactivity, ConfigError.ConfigError> =>
  Layer.scopedContext(
    Effect.map(make(options), ({ db, pg }) =>
      Context.make(Db, db).pipe(
        Context.add(SqlClient.SqlClient, db.sql),
        Context.add(Reactivity.Reactivity, db.invalidations.reactivity),
        Context.add(PgClient.PgClient, pg)))
  )

/**
 * The PostgreSQL layer from `Config`, by default from the environment
 * (`DATABASE_URL` and friends, see `DatabaseConfig.fromEnv`).
 *
 * @since 0.1.0
 */
export const layerConfig = (
  config: Config.Config.Wrap<PgDatabaseOptions> = DatabaseConfig.fromEnv
): Layer.Layer<Db | SqlClient.SqlClient | PgClient.PgClient | Reactivity.Reactivity, ConfigError.ConfigError> =>
  Layer.unwrapEffect(Effect.map(Config.unwrap(config), layer))

/**
 * The MySQL/MariaDB `DatabaseLive`: `Db` and `@effect/sql`'s `SqlClient`
 * over effect-dal's pool, one `mysql2` connection per pooled connection.
 *
 * @since 0.1.0
 */
import { DatabaseConfig, Db, DbModule } from "@effect-dal/core"
import { Replicated } from "@effect-dal/routing"
import * as MysqlClient from "@effect/sql-mysql2/MysqlClient"
import * as Reactivity from "@effect/experimental/Reactivity"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import type * as Scope from "effect/Scope"
import type * as Mysql from "mysql2"
import type { MysqlDriverOptions } from "./internal/driver.js"
import { makeDriver } from "./internal/driver.js"

/**
 * Options of `MysqlDatabase.layer`: the common `DatabaseOptions` plus what is
 * specific to MySQL.
 *
 * @since 0.1.0
 */
export interface MysqlDatabaseOptions extends DatabaseConfig.DatabaseOptions, MysqlDriverOptions {
  /** `@effect/sql-mysql2`'s name for `user`; `user` wins when both are set. */
  readonly username?: string | undefined
  /** `@effect/sql-mysql2`'s name for `pool.max`; `pool.max` wins. */
  readonly maxConnections?: number | undefined
  /** `@effect/sql-mysql2`'s name for `pool.maxLifetime`; `pool.maxLifetime` wins. */
  readonly connectionTTL?: Duration.DurationInput | undefined
  /** `@effect/sql-mysql2`'s mysql2 pool options: their connection settings apply to each connection. */
  readonly poolConfig?: Mysql.PoolOptions | undefined
}

/** The stock option names, folded into ours: ours win where both are given. */
const normalize = (options: MysqlDatabaseOptions): MysqlDatabaseOptions => ({
  ...options,
  user: options.user ?? options.username,
  pool: {
    ...options.pool,
    max: options.pool?.max ?? options.maxConnections ?? options.poolConfig?.connectionLimit,
    maxLifetime: options.pool?.maxLifetime ?? options.connectionTTL
  },
  connectionOptions: { ...connectionPart(options.poolConfig), ...options.connectionOptions }
})

/** The per-connection part of mysql2 pool options; the pool itself is ours. */
const connectionPart = (pool: Mysql.PoolOptions | undefined): Mysql.ConnectionOptions => {
  if (pool === undefined) return {}
  const { connectionLimit: _l, waitForConnections: _w, queueLimit: _q, maxIdle: _m, idleTimeout: _i, ...connection } =
    pool as Mysql.PoolOptions & { maxIdle?: number; idleTimeout?: number }
  return connection
}

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
): Effect.Effect<{ readonly db: DbModule.DbService; readonly mysql: MysqlClient.MysqlClient }, ConfigError.ConfigError, Scope.Scope> =>
  Effect.gen(function*() {
    const { config, db: primary, driver } = yield* node(options, true)
    const replicas = DatabaseConfig.replicasOf(options, config)
    // each replica is a database of its own (pool, breaker, metrics), routed to by the primary's router
    const db = replicas.length === 0 ? primary : yield* Replicated.make({
      primary,
      replicas: yield* Effect.forEach(replicas, (replica, i) =>
        Effect.map(
          node(DatabaseConfig.replicaOptions(options, config.alias, replica, i)),
          ({ db }) => ({ db, weight: replica.weight ?? 1 })
        )),
      driver,
      replication: options.replication
    })
    return { db, mysql: stockClient(db, config, normalize(options)) }
  })

/**
 * One node: its config, driver and `Db`. A primary whose replicas take reads
 * by commit position has its commits' GTIDs reported with their replies.
 */
const node = (options: MysqlDatabaseOptions, primary = false) =>
  Effect.suspend(() => {
    const o = normalize(options)
    return Effect.flatMap(
      DatabaseConfig.resolve(o, engine, { charset: o.charset, ssl: o.ssl ?? null }),
      (config) => {
        const trackCommitPositions = primary && (options.replication?.readYourWrites ?? "position") === "position" &&
          DatabaseConfig.replicasOf(options, config).length > 0
        const driver = makeDriver(config, o, trackCommitPositions)
        return Effect.map(DbModule.make(driver, config), (db) => ({ config, driver, db }))
      }
    )
  })

/** The stock client's tag, over our pool: the same SqlClient plus its config. */
const stockClient = (
  db: DbModule.DbService,
  config: DatabaseConfig.DatabaseConfig,
  o: MysqlDatabaseOptions
): MysqlClient.MysqlClient =>
  Object.assign(db.sql, {
    [MysqlClient.TypeId]: MysqlClient.TypeId,
    config: {
      ...(o.url === undefined ? {} : { url: Redacted.isRedacted(o.url) ? o.url : Redacted.make(o.url) }),
      host: config.host,
      port: config.port,
      database: config.database,
      ...(config.user === undefined ? {} : { username: config.user }),
      ...(config.password === undefined ? {} : { password: config.password }),
      maxConnections: config.pool.max,
      connectionTTL: Duration.millis(config.pool.maxLifetime),
      ...(o.spanAttributes === undefined ? {} : { spanAttributes: o.spanAttributes }),
      ...(o.transformResultNames === undefined ? {} : { transformResultNames: o.transformResultNames }),
      ...(o.transformQueryNames === undefined ? {} : { transformQueryNames: o.transformQueryNames })
    }
  }) as MysqlClient.MysqlClient

/**
 * The MySQL/MariaDB layer: provides `Db`, `SqlClient.SqlClient` and
 * `@effect/sql-mysql2`'s `MysqlClient.MysqlClient`, so it replaces
 * `MysqlClient.layer` in place.
 *
 * @since 0.1.0
 */
export const layer = (
  options: MysqlDatabaseOptions
): Layer.Layer<Db | SqlClient.SqlClient | MysqlClient.MysqlClient | Reactivity.Reactivity, ConfigError.ConfigError> =>
  Layer.scopedContext(
    Effect.map(make(options), ({ db, mysql }) =>
      Context.make(Db, db).pipe(
        Context.add(SqlClient.SqlClient, db.sql),
        Context.add(Reactivity.Reactivity, db.invalidations.reactivity),
        Context.add(MysqlClient.MysqlClient, mysql)))
  )

/**
 * The MySQL/MariaDB layer from `Config`, by default from the environment
 * (`DATABASE_URL` and friends, see `DatabaseConfig.fromEnv`).
 *
 * @since 0.1.0
 */
export const layerConfig = (
  config: Config.Config.Wrap<MysqlDatabaseOptions> = DatabaseConfig.fromEnv
): Layer.Layer<Db | SqlClient.SqlClient | MysqlClient.MysqlClient | Reactivity.Reactivity, ConfigError.ConfigError> =>
  Layer.unwrapEffect(Effect.map(Config.unwrap(config), layer))

/**
 * The embedded `DatabaseLive`: PostgreSQL compiled to WebAssembly (PGlite),
 * in-process, in memory by default. No server, no setup.
 *
 * PGlite is a single session. The pool therefore holds exactly one
 * connection: statements and transactions from concurrent fibers queue for
 * it first-come first-served and never interleave, so a transaction sees
 * only its own statements. Everything else (portable SQL, savepoints,
 * isolation levels, typed errors, `SqlClient`) behaves as on PostgreSQL.
 * A running statement cannot be cancelled: a timed-out or interrupted caller
 * returns at once, and the next statement waits until the running one ends.
 *
 * @since 0.1.0
 */
import { DatabaseConfig, Db, DbModule } from "@effect-dal/core"
import type { DbError } from "@effect-dal/core"
import * as Reactivity from "@effect/experimental/Reactivity"
import * as SqlClient from "@effect/sql/SqlClient"
import type * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import type { PgliteDriverOptions } from "./internal/driver.js"
import { makeDriver } from "./internal/driver.js"

/**
 * Options of `PgliteDatabase.layer`.
 *
 * @since 0.1.0
 */
export interface PgliteDatabaseOptions extends PgliteDriverOptions {
  /** The name in logs and metrics; default `pglite`. */
  readonly alias?: string | undefined
  /** Deployment label; default `prod`. */
  readonly env?: string | undefined
  /** Default hard timeout of every statement. */
  readonly statementTimeout?: Duration.DurationInput | undefined
  /** How long a caller waits for the single session; default 10 seconds. */
  readonly acquireTimeout?: Duration.DurationInput | undefined
}

/**
 * What PGlite contributes to config resolution.
 *
 * @since 0.1.0
 */
export const engine: DatabaseConfig.EngineDefaults = { engine: "pglite", port: 5432, schemes: ["pglite"] }

let memoryDatabases = 0

/**
 * Builds the embedded `Db` in a scope: the database is open when this
 * succeeds, and closes with the last layer that uses it.
 *
 * @since 0.1.0
 */
export const make = (
  options: PgliteDatabaseOptions = {}
): Effect.Effect<DbModule.DbService, ConfigError.ConfigError | DbError.DbError, Scope.Scope> =>
  Effect.flatMap(
    DatabaseConfig.resolve(
      {
        database: "postgres",
        host: "embedded",
        alias: options.alias ?? "pglite",
        env: options.env,
        statementTimeout: options.statementTimeout,
        pool: {
          // one session: one connection, kept for the life of the database
          min: 1,
          max: 1,
          acquireTimeout: options.acquireTimeout,
          maxLifetime: Duration.infinity,
          validationWindow: "1 days",
          keepaliveInterval: "1 days"
        }
      },
      engine,
      // each in-memory database is its own; layers on one data directory share one
      { dataDir: options.dataDir ?? `memory:${process.pid}:${++memoryDatabases}` }
    ),
    (config) => {
      const driver = makeDriver(options)
      // open the database while the layer builds: it takes seconds, longer than a caller should wait
      return Effect.zipRight(driver.connect, DbModule.make(driver, config))
    }
  )

/**
 * The embedded layer: provides `Db` and `SqlClient.SqlClient`.
 *
 * @since 0.1.0
 */
export const layer = (
  options: PgliteDatabaseOptions = {}
): Layer.Layer<Db | SqlClient.SqlClient | Reactivity.Reactivity, ConfigError.ConfigError | DbError.DbError> =>
  Layer.scopedContext(
    Effect.map(make(options), (db) =>
      Context.make(Db, db).pipe(
        Context.add(SqlClient.SqlClient, db.sql),
        Context.add(Reactivity.Reactivity, db.invalidations.reactivity)
      ))
  )

/**
 * The `DatabaseLive` the examples run on, chosen by `DATABASE_URL`:
 * `postgres://…` selects PostgreSQL, `mysql://…` (or `mariadb://…`) selects
 * MySQL/MariaDB, and no URL at all selects the embedded PGlite, which needs
 * no server.
 */
import type { Db, DbError, Pool } from "@effect-dal/core"
import { MysqlDatabase } from "@effect-dal/mysql"
import { PgDatabase } from "@effect-dal/pg"
import { PgliteDatabase } from "@effect-dal/pglite"
import type * as SqlClient from "@effect/sql/SqlClient"
import type * as ConfigError from "effect/ConfigError"
import type * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"

/** Which engine a URL selects. */
export const engineOf = (url: string | undefined): "pg" | "mysql" | "pglite" =>
  url === undefined || url === "" ? "pglite" : /^(mysql|mariadb):/.test(url) ? "mysql" : "pg"

/** The layer for `url` (default: `DATABASE_URL`). */
export const DatabaseLive = (options: {
  readonly url?: string | undefined
  readonly alias: string
  readonly pool?: Pool.PoolOptions
}): Layer.Layer<Db | SqlClient.SqlClient, ConfigError.ConfigError | DbError.DbError> => {
  const url = options.url ?? process.env["DATABASE_URL"]
  switch (engineOf(url)) {
    case "pglite":
      return PgliteDatabase.layer({ alias: options.alias })
    case "mysql":
      return MysqlDatabase.layer({ url: Redacted.make(url!), alias: options.alias, env: "dev", pool: options.pool })
    case "pg":
      return PgDatabase.layer({ url: Redacted.make(url!), alias: options.alias, env: "dev", pool: options.pool })
  }
}

import type { DatabaseConfig, DbModule } from "@effect-dal/core"
import * as PgClient from "@effect/sql-pg/PgClient"
import { SqlError } from "@effect/sql/SqlError"
import * as Statement from "@effect/sql/Statement"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Redacted from "effect/Redacted"
import * as Stream from "effect/Stream"
import * as Pg from "pg"
import { classify } from "../PgErrors.js"
import type { PgDriverOptions } from "./driver.js"
import { clientConfigOf } from "./driver.js"

/** `@effect/sql-pg`'s JSON parameter: the same custom kind its compiler knows. */
const PgJson = Statement.custom<Statement.Custom<"PgJson", unknown>>("PgJson")

const sqlError = (cause: unknown, message: string) => new SqlError({ cause, message })

/**
 * A full `PgClient` over our pool: the same `SqlClient`, plus `config`,
 * `json`, `listen` (each on a dedicated connection outside the pool) and `notify`.
 *
 * @internal
 */
export const makePgClient = (
  db: DbModule.DbService,
  config: DatabaseConfig.DatabaseConfig,
  options: PgDriverOptions & { readonly url?: Redacted.Redacted | string | undefined }
): PgClient.PgClient => {
  const clientConfig = clientConfigOf(config, options)
  const pgConfig: PgClient.PgClientConfig = {
    ...(options.url === undefined
      ? {}
      : { url: Redacted.isRedacted(options.url) ? options.url : Redacted.make(options.url) }),
    host: config.host,
    port: config.port,
    database: config.database,
    ...(config.user === undefined ? {} : { username: config.user }),
    ...(config.password === undefined ? {} : { password: config.password }),
    ...(options.ssl === undefined ? {} : { ssl: options.ssl }),
    applicationName: options.applicationName ?? config.alias,
    maxConnections: config.pool.max,
    minConnections: config.pool.min,
    idleTimeout: Duration.millis(config.pool.idleTimeout),
    connectTimeout: Duration.millis(config.connectTimeout),
    connectionTTL: Duration.millis(config.pool.maxLifetime),
    ...(options.spanAttributes === undefined ? {} : { spanAttributes: options.spanAttributes }),
    ...(options.transformResultNames === undefined ? {} : { transformResultNames: options.transformResultNames }),
    ...(options.transformQueryNames === undefined ? {} : { transformQueryNames: options.transformQueryNames }),
    ...(options.transformJson === undefined ? {} : { transformJson: options.transformJson }),
    ...(options.types === undefined ? {} : { types: options.types })
  }

  const listen = (channel: string): Stream.Stream<string, SqlError> =>
    Stream.asyncScoped<string, SqlError>((emit) =>
      Effect.gen(function*() {
        const client = yield* Effect.acquireRelease(
          Effect.tryPromise({
            try: async () => {
              const c = new Pg.Client(clientConfig)
              c.on("error", () => {})
              await c.connect()
              return c
            },
            catch: (cause) => sqlError(classify(cause, undefined, "connect"), "Failed to connect for LISTEN")
          }),
          (c) => Effect.promise(() => c.end().catch(() => {})).pipe(Effect.timeoutOption(1_000))
        )
        // a listener whose connection dies fails with a typed error instead of going silent
        const died = (cause: unknown) =>
          void emit.fail(sqlError(classify(cause ?? new Error("Connection terminated"), undefined, "query"), "LISTEN connection lost"))
        client.on("error", died)
        client.on("end", () => died(undefined))
        client.on("notification", (msg) => {
          if (msg.channel === channel && msg.payload !== undefined) void emit.single(msg.payload)
        })
        yield* Effect.tryPromise({
          try: () => client.query(`LISTEN ${Pg.escapeIdentifier(channel)}`),
          catch: (cause) => sqlError(classify(cause, undefined, "query"), "Failed to listen")
        })
      })
    )

  const notify = (channel: string, payload: string) =>
    Effect.asVoid(Effect.mapError(
      db.execute("SELECT pg_notify(?, ?)", [channel, payload]),
      (error) => sqlError(error, "Failed to notify")
    ))

  return Object.assign(db.sql, {
    [PgClient.TypeId]: PgClient.TypeId,
    config: pgConfig,
    json: (value: unknown) => PgJson(value),
    listen,
    notify
  }) as PgClient.PgClient
}

/**
 * Where a database is and how to pool connections to it. Options are
 * validated when the layer is built; a bad value fails with a `ConfigError`
 * that names the field.
 *
 * @since 0.1.0
 */
import * as Config from "effect/Config"
import * as ConfigError from "effect/ConfigError"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Redacted from "effect/Redacted"
import { createHash } from "node:crypto"
import type { CircuitBreakerOptions } from "./CircuitBreaker.js"
import type { PoolConfig, PoolOptions } from "./Pool.js"
import type { ReplicationOptions } from "./Replication.js"
import type { RetryPolicy } from "./Retry.js"
import { resolveOptions } from "./Pool.js"

/**
 * The options every engine's `layer` accepts.
 *
 * @since 0.1.0
 */
export interface DatabaseOptions {
  /**
   * A connection URL (`postgres://user:pass@host:port/db`); explicit fields
   * win over it. Several hosts are libpq's multi-host form,
   * `postgres://u@h1:5432,h2:5433/db?target_session_attrs=read-write`.
   */
  readonly url?: Redacted.Redacted | string | undefined
  /**
   * Several servers of one database, tried in order for each new connection
   * until one has the `targetRole`; wins over `host` and `port`.
   */
  readonly hosts?: ReadonlyArray<{ readonly host: string; readonly port?: number | undefined }> | undefined
  /**
   * Which server a connection may be opened to, with libpq's
   * `target_session_attrs` meanings: `any` (default), `read-write`,
   * `primary`, `standby` or `prefer-standby`. Also from the URL parameter.
   */
  readonly targetRole?: TargetRole | undefined
  readonly database?: string | undefined
  /** Default `localhost`. */
  readonly host?: string | undefined
  /** Default: the engine's port. */
  readonly port?: number | undefined
  readonly user?: string | undefined
  readonly password?: Redacted.Redacted | undefined
  /** The name of this database in logs, metrics and `application_name`; defaults to `database`. */
  readonly alias?: string | undefined
  /** The deployment environment label; default `prod`. */
  readonly env?: string | undefined
  /** How long opening one connection may take; default 10 seconds. */
  readonly connectTimeout?: Duration.DurationInput | undefined
  /** The default hard timeout of a statement; none by default. */
  readonly statementTimeout?: Duration.DurationInput | undefined
  readonly pool?: PoolOptions | undefined
  /**
   * Prepared statements kept per connection (LRU); default 256. `0` turns
   * the cache off, e.g. behind PgBouncer in transaction mode.
   */
  readonly statementCacheSize?: number | undefined
  /** A transaction longer than this is rolled back with `StatementTimeout` (kind `transaction`); none by default. */
  readonly transactionTimeout?: Duration.DurationInput | undefined
  /** The soft timeout: a statement slower than this is logged as slow and runs on; default 1 second. */
  readonly slowQueryThreshold?: Duration.DurationInput | undefined
  /** Retries of what is safe to retry; default 3 retries, exponential backoff with full jitter. */
  readonly retry?: RetryPolicy | undefined
  /** The circuit breaker of this alias, or `false` for none. */
  readonly circuitBreaker?: CircuitBreakerOptions | false | undefined
  /**
   * Tag keys that become labels of the statement duration metric
   * (`db.client.operation.duration`), e.g. `["operation"]`. Only these keys, and at most 100
   * distinct value combinations (the rest count as `other`), so cardinality stays bounded.
   */
  readonly metricTagKeys?: ReadonlyArray<string> | undefined
  /**
   * What to do with DDL inside a transaction on an engine that commits DDL
   * implicitly (MySQL): `fail` (default) with `DdlInTransaction` before
   * anything is sent, `warn` and run it, or `allow` it silently.
   */
  readonly ddlInTransaction?: "fail" | "warn" | "allow" | undefined
  /**
   * Read replicas of this database (the primary): each is its own pool, with
   * its options over the primary's (a `url` replaces the primary's address).
   * Reads may go to them; see `replication`.
   */
  readonly replicas?: ReadonlyArray<ReplicaOptions> | undefined
  /** How reads are routed over `replicas`. */
  readonly replication?: ReplicationOptions | undefined
}

/**
 * One read replica: where it is, and what it changes of the primary's options.
 *
 * @since 0.2.0
 */
export interface ReplicaOptions extends Omit<DatabaseOptions, "replicas" | "replication"> {
  /** Its share of the reads; default 1. */
  readonly weight?: number | undefined
}

/**
 * The replicas of a database: those configured, or, for a database named by
 * several hosts whose connections look for the writable one, every host as
 * a replica that takes reads while it is a standby. Roles are discovered,
 * never configured: the primary of the moment is no standby, so its replica
 * gets no connection (and no read) until a promotion makes it one.
 *
 * @since 0.2.0
 */
export const replicasOf = (options: DatabaseOptions, config: DatabaseConfig): ReadonlyArray<ReplicaOptions> => {
  if (options.replicas !== undefined) return options.replicas
  if (config.hosts.length < 2 || !wantsWrites(config.targetRole)) return []
  return config.hosts.map((h) => ({
    hosts: [h],
    targetRole: "standby" as const,
    alias: `${config.alias}_${h.host}_${h.port}`,
    pool: { ...options.pool, min: 0 }
  }))
}

/**
 * The options of replica `index` (0-based): the primary's, less its
 * replicas, with the replica's over them. A replica `url` replaces the
 * primary's address fields; the alias defaults to `<primary alias>_replica_<n>`.
 *
 * @since 0.2.0
 */
export const replicaOptions = <O extends DatabaseOptions>(
  primary: O,
  primaryAlias: string,
  replica: ReplicaOptions,
  index: number
): O => {
  const { replicas: _replicas, replication: _replication, ...base } = primary
  const address = replica.url === undefined
    ? base
    : {
      ...base,
      url: undefined,
      host: undefined,
      port: undefined,
      hosts: undefined,
      database: undefined,
      user: undefined,
      password: undefined
    }
  const { weight: _weight, ...own } = replica
  return { ...address, ...own, alias: replica.alias ?? `${primaryAlias}_replica_${index + 1}` } as unknown as O
}

/**
 * libpq's `target_session_attrs`: which server a connection may be opened to.
 *
 * @since 0.2.0
 */
export type TargetRole = "any" | "read-write" | "primary" | "standby" | "prefer-standby"

const targetRoles: ReadonlyArray<TargetRole> = ["any", "read-write", "primary", "standby", "prefer-standby"]

/**
 * Whether connections with this role are for writes.
 *
 * @since 0.2.0
 */
export const wantsWrites = (role: TargetRole): boolean => role === "read-write" || role === "primary"

/**
 * Validated options with every default applied.
 *
 * @since 0.1.0
 */
export interface DatabaseConfig {
  readonly database: string
  /** The first of `hosts`. */
  readonly host: string
  readonly port: number
  /** Every server of the database, in the order connections try them; at least one. */
  readonly hosts: ReadonlyArray<{ readonly host: string; readonly port: number }>
  readonly targetRole: TargetRole
  readonly user: string | undefined
  readonly password: Redacted.Redacted | undefined
  readonly alias: string
  readonly env: string
  readonly connectTimeout: number
  readonly statementTimeout: number | undefined
  readonly transactionTimeout: number | undefined
  readonly slowQueryThreshold: number
  readonly statementCacheSize: number
  /** Not part of the hash: policies hold functions. */
  readonly retry: RetryPolicy | undefined
  readonly circuitBreaker: CircuitBreakerOptions | false
  readonly metricTagKeys: ReadonlyArray<string>
  readonly pool: PoolConfig
  readonly ddlInTransaction: "fail" | "warn" | "allow"
  /** Query parameters of the URL (`sslmode`, ...), for the driver. */
  readonly params: Readonly<Record<string, string>>
  /** Stable across runs, independent of the password: configs with one hash share one pool. */
  readonly hash: string
}

/**
 * What an engine tells the resolver.
 *
 * @since 0.1.0
 */
export interface EngineDefaults {
  readonly engine: string
  readonly port: number
  readonly schemes: ReadonlyArray<string>
}

const invalid = (field: string, message: string) => ConfigError.InvalidData([field], message)

const parseUrl = (
  url_: string,
  engine: EngineDefaults
): Either.Either<
  {
    host?: string
    port?: number
    hosts?: Array<{ host: string; port?: number }>
    database?: string
    user?: string
    password?: string
    params: Record<string, string>
  },
  ConfigError.ConfigError
> => {
  let raw = url_
  // libpq's multi-host authority (h1:5432,h2:5433) is no URL: the first host stands in for the rest
  const authority = /^([a-z][a-z0-9+.-]*:\/\/)([^/?#@]*@)?([^/?#]*)(.*)$/i.exec(raw)
  const hostList = authority?.[3] ?? ""
  const extraHosts: Array<{ host: string; port?: number }> = []
  if (authority !== null && hostList.includes(",")) {
    for (const entry of hostList.split(",")) {
      const m = /^(\[[^\]]+\]|[^:]*)(?::(\d+))?$/.exec(entry.trim())
      if (m === null || m[1] === "") return Either.left(invalid("url", `has an invalid host "${entry}"`))
      extraHosts.push({ host: m[1]!.replace(/^\[(.*)\]$/, "$1"), ...(m[2] === undefined ? {} : { port: Number(m[2]) }) })
    }
    raw = `${authority[1]}${authority[2] ?? ""}${hostList.split(",")[0]!.trim()}${authority[4]}`
  }
  let url: URL
  try {
    url = new URL(raw)
  } catch {
    return Either.left(invalid("url", "is not a valid URL"))
  }
  const scheme = url.protocol.replace(/:$/, "")
  if (!engine.schemes.includes(scheme)) {
    return Either.left(
      invalid("url", `has scheme "${scheme}", expected one of ${engine.schemes.map((s) => `"${s}"`).join(", ")}`)
    )
  }
  const params: Record<string, string> = {}
  url.searchParams.forEach((value, key) => {
    params[key] = value
  })
  const out: {
    host?: string
    port?: number
    hosts?: Array<{ host: string; port?: number }>
    database?: string
    user?: string
    password?: string
    params: Record<string, string>
  } = { params, ...(extraHosts.length > 0 ? { hosts: extraHosts } : {}) }
  const host = params["host"] ?? (url.hostname === "" ? undefined : decodeURIComponent(url.hostname))
  if (host !== undefined) out.host = host.replace(/^\[(.*)\]$/, "$1")
  if (url.port !== "") out.port = Number(url.port)
  const database = decodeURIComponent(url.pathname.replace(/^\//, ""))
  if (database !== "") out.database = database
  if (url.username !== "") out.user = decodeURIComponent(url.username)
  if (url.password !== "") out.password = decodeURIComponent(url.password)
  return Either.right(out)
}

const checkDuration = (
  field: string,
  d: Duration.DurationInput | undefined
): Either.Either<void, ConfigError.ConfigError> => {
  if (d === undefined) return Either.void
  const decoded = Duration.decodeUnknown(d)
  if (decoded._tag === "None" || !Duration.isFinite(decoded.value) && field !== "pool.maxLifetime") {
    return Either.left(invalid(field, "is not a valid finite duration"))
  }
  return Either.void
}

const poolDurations = [
  "acquireTimeout",
  "closeTimeout",
  "idleTimeout",
  "maxLifetime",
  "validationWindow",
  "keepaliveInterval",
  "connectBackoffBase",
  "connectBackoffCap",
  "validationTimeout",
  "leakDetectionThreshold"
] as const

/**
 * Validates options and applies the defaults.
 *
 * @since 0.1.0
 */
export const resolve = (
  options: DatabaseOptions,
  engine: EngineDefaults,
  /** Engine-specific settings that must also keep pools apart (JSON-serializable parts count). */
  hashExtras?: unknown
): Effect.Effect<DatabaseConfig, ConfigError.ConfigError> =>
  Effect.suspend(() => {
    let fromUrl: ReturnType<typeof parseUrl> = Either.right({ params: {} })
    if (options.url !== undefined) {
      const raw = Redacted.isRedacted(options.url) ? Redacted.value(options.url) : options.url
      fromUrl = parseUrl(raw, engine)
    }
    if (Either.isLeft(fromUrl)) return Effect.fail(fromUrl.left)
    const u = fromUrl.right
    const database = options.database ?? u.database
    if (database === undefined || database.trim() === "") {
      return Effect.fail(invalid("database", "must be a non-empty database name"))
    }
    const port = options.port ?? u.port ?? engine.port
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      return Effect.fail(invalid("port", `must be an integer from 1 to 65535, got ${port}`))
    }
    const listed = options.hosts ?? (options.host === undefined && options.port === undefined ? u.hosts : undefined)
    const hosts = listed === undefined
      ? [{ host: options.host ?? u.host ?? "localhost", port }]
      : listed.map((h) => ({ host: h.host, port: h.port ?? port }))
    if (hosts.length === 0) return Effect.fail(invalid("hosts", "must list at least one host"))
    for (const h of hosts) {
      if (h.host.trim() === "") return Effect.fail(invalid("host", "must not be empty"))
      if (!Number.isInteger(h.port) || h.port < 1 || h.port > 65535) {
        return Effect.fail(invalid("port", `must be an integer from 1 to 65535, got ${h.port}`))
      }
    }
    const host = hosts[0]!.host
    const targetRole = options.targetRole ?? (u.params["target_session_attrs"] as TargetRole | undefined) ?? "any"
    if (!targetRoles.includes(targetRole)) {
      return Effect.fail(invalid("targetRole", `must be one of ${targetRoles.join(", ")}, got "${targetRole}"`))
    }
    const pool = options.pool ?? {}
    for (const field of ["min", "max"] as const) {
      const value = pool[field]
      if (value !== undefined && (!Number.isInteger(value) || value < (field === "max" ? 1 : 0))) {
        return Effect.fail(invalid(`pool.${field}`, `must be an integer of at least ${field === "max" ? 1 : 0}`))
      }
    }
    if (pool.leakAction !== undefined && pool.leakAction !== "warn" && pool.leakAction !== "reclaim") {
      return Effect.fail(invalid("pool.leakAction", "must be \"warn\" or \"reclaim\""))
    }
    if (pool.min !== undefined && pool.max !== undefined && pool.min > pool.max) {
      return Effect.fail(invalid("pool.min", `must not exceed pool.max (${pool.max})`))
    }
    const durations: Array<[string, Duration.DurationInput | undefined]> = [
      ["connectTimeout", options.connectTimeout],
      ["statementTimeout", options.statementTimeout],
      ["transactionTimeout", options.transactionTimeout],
      ["slowQueryThreshold", options.slowQueryThreshold],
      ...(poolDurations.map((k) => [`pool.${k}`, pool[k]] as [string, Duration.DurationInput | undefined]))
    ]
    for (const [field, d] of durations) {
      const checked = checkDuration(field, d)
      if (Either.isLeft(checked)) return Effect.fail(checked.left)
    }
    const user = options.user ?? u.user
    const password = options.password ?? (u.password === undefined ? undefined : Redacted.make(u.password))
    const alias = options.alias ?? database
    const env = options.env ?? "prod"
    const poolConfig = resolveOptions(pool)
    const connectTimeout = options.connectTimeout === undefined ? 10_000 : Duration.toMillis(options.connectTimeout)
    const statementTimeout = options.statementTimeout === undefined
      ? undefined
      : Duration.toMillis(options.statementTimeout)
    const statementCacheSize = options.statementCacheSize ?? 256
    if (!Number.isInteger(statementCacheSize) || statementCacheSize < 0) {
      return Effect.fail(invalid("statementCacheSize", "must be an integer of at least 0"))
    }
    const ddlInTransaction = options.ddlInTransaction ?? "fail"
    if (!["fail", "warn", "allow"].includes(ddlInTransaction)) {
      return Effect.fail(invalid("ddlInTransaction", "must be \"fail\", \"warn\" or \"allow\""))
    }
    const hash = createHash("sha256").update(JSON.stringify([
      engine.engine,
      hosts,
      targetRole,
      database,
      user ?? null,
      alias,
      env,
      connectTimeout,
      statementTimeout ?? null,
      poolConfig,
      ddlInTransaction,
      statementCacheSize,
      Object.entries(u.params).sort(),
      hashExtras ?? null
    ])).digest("hex").slice(0, 16)
    return Effect.succeed({
      database,
      host,
      port: hosts[0]!.port,
      hosts,
      targetRole,
      user,
      password,
      alias,
      env,
      connectTimeout,
      statementTimeout,
      transactionTimeout: options.transactionTimeout === undefined
        ? undefined
        : Duration.toMillis(options.transactionTimeout),
      slowQueryThreshold: options.slowQueryThreshold === undefined
        ? 1_000
        : Duration.toMillis(options.slowQueryThreshold),
      statementCacheSize,
      retry: options.retry,
      circuitBreaker: options.circuitBreaker ?? {},
      metricTagKeys: options.metricTagKeys ?? [],
      pool: poolConfig,
      ddlInTransaction,
      params: u.params,
      hash
    })
  })

/**
 * Reads `DatabaseOptions` from the environment:
 * `DATABASE_URL`, `DATABASE_HOST`, `DATABASE_PORT`, `DATABASE_NAME`,
 * `DATABASE_USER`, `DATABASE_PASSWORD`, `DATABASE_ALIAS`, `DATABASE_ENV`,
 * `DATABASE_POOL_MIN`, `DATABASE_POOL_MAX`, `DATABASE_POOL_ACQUIRE_TIMEOUT` and
 * `DATABASE_REPLICA_URLS` (comma-separated).
 *
 * @since 0.1.0
 */
export const fromEnv: Config.Config<DatabaseOptions> = Config.all({
  url: Config.option(Config.redacted("DATABASE_URL")),
  host: Config.option(Config.string("DATABASE_HOST")),
  port: Config.option(Config.integer("DATABASE_PORT")),
  database: Config.option(Config.string("DATABASE_NAME")),
  user: Config.option(Config.string("DATABASE_USER")),
  password: Config.option(Config.redacted("DATABASE_PASSWORD")),
  alias: Config.option(Config.string("DATABASE_ALIAS")),
  env: Config.option(Config.string("DATABASE_ENV")),
  min: Config.option(Config.integer("DATABASE_POOL_MIN")),
  max: Config.option(Config.integer("DATABASE_POOL_MAX")),
  acquireTimeout: Config.option(Config.duration("DATABASE_POOL_ACQUIRE_TIMEOUT")),
  replicaUrls: Config.option(Config.redacted("DATABASE_REPLICA_URLS"))
}).pipe(Config.map((c) => {
  const get = <A>(o: { _tag: "Some"; value: A } | { _tag: "None" }): A | undefined =>
    o._tag === "Some" ? o.value : undefined
  return {
    url: get(c.url),
    host: get(c.host),
    port: get(c.port),
    database: get(c.database),
    user: get(c.user),
    password: get(c.password),
    alias: get(c.alias),
    env: get(c.env),
    pool: { min: get(c.min), max: get(c.max), acquireTimeout: get(c.acquireTimeout) },
    replicas: c.replicaUrls._tag === "None"
      ? undefined
      : Redacted.value(c.replicaUrls.value).split(",").map((url) => url.trim()).filter((url) => url !== "")
        .map((url) => ({ url: Redacted.make(url) }))
  }
}))

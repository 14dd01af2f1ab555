/**
 * The typed error family of effect-dal. Engine errors are classified once, in
 * the engine's driver, into these classes; nothing downstream re-parses error
 * strings. Every error carries a `category`, a `transient` flag and, where the
 * engine gave one, its native `code` (SQLSTATE or MySQL errno).
 *
 * @since 0.1.0
 */
import * as Data from "effect/Data"
import * as Predicate from "effect/Predicate"

/**
 * Every category an effect-dal error can fall in.
 *
 * @since 0.1.0
 */
export type ErrorCategory =
  | "connection"
  | "poolTimeout"
  | "unavailable"
  | "statementTimeout"
  | "cancelled"
  | "serialization"
  | "deadlock"
  | "constraint"
  | "syntax"
  | "permission"
  | "data"
  | "resource"
  | "circuitOpen"
  | "outcomeUnknown"
  | "invalidInput"
  | "unknown"

/**
 * The categories a server-reported statement error (`QueryError`) can carry.
 *
 * @since 0.1.0
 */
export type QueryCategory =
  | "cancelled"
  | "serialization"
  | "deadlock"
  | "syntax"
  | "permission"
  | "data"
  | "resource"
  | "unavailable"
  | "unknown"

const MAX_SQL_IN_MESSAGE = 200

const sqlSuffix = (sql: string | undefined): string => {
  if (sql === undefined) return ""
  const oneLine = sql.replace(/\s+/g, " ").trim()
  return ` (SQL: ${oneLine.length > MAX_SQL_IN_MESSAGE ? oneLine.slice(0, MAX_SQL_IN_MESSAGE) + "…" : oneLine})`
}

const codeSuffix = (code: string | undefined): string => (code === undefined ? "" : ` [${code}]`)

/** @internal */
export const causeMessage = (cause: unknown): string => {
  if (cause instanceof Error) return cause.message
  if (Predicate.hasProperty(cause, "message") && typeof cause.message === "string") return cause.message
  return String(cause)
}

/**
 * The server rejected a statement, or the driver failed to run it, for a
 * reason other than a lost connection or a constraint.
 *
 * @since 0.1.0
 */
export class QueryError extends Data.TaggedError("QueryError")<{
  readonly category: QueryCategory
  readonly code: string | undefined
  readonly transient: boolean
  readonly sql: string | undefined
  readonly cause: unknown
  /** The server's message with any quoted values removed, when the driver had to remove some. */
  readonly detail?: string | undefined
}> {
  override get message(): string {
    return `${this.category} error${codeSuffix(this.code)}: ${this.detail ?? causeMessage(this.cause)}${
      sqlSuffix(this.sql)
    }`
  }
}

/**
 * The kinds of integrity constraint a `ConstraintViolation` reports.
 *
 * @since 0.1.0
 */
export type ConstraintKind = "unique" | "foreignKey" | "check" | "notNull" | "exclusion" | "other"

/**
 * An integrity constraint was violated. Never transient, never retried, and
 * never counted by the circuit breaker.
 *
 * @since 0.1.0
 */
export class ConstraintViolation extends Data.TaggedError("ConstraintViolation")<{
  readonly kind: ConstraintKind
  readonly constraint: string | undefined
  readonly code: string | undefined
  readonly sql: string | undefined
  readonly cause: unknown
  /** The server's message with any quoted values removed, when the driver had to remove some. */
  readonly detail?: string | undefined
}> {
  /** @since 0.1.0 */
  readonly category = "constraint" as const
  /** @since 0.1.0 */
  readonly transient = false
  override get message(): string {
    const name = this.constraint === undefined ? "" : ` "${this.constraint}"`
    return `${this.kind} constraint${name} violated${codeSuffix(this.code)}: ${this.detail ?? causeMessage(this.cause)}${
      sqlSuffix(this.sql)
    }`
  }
}

/**
 * The connection failed: it could not be opened, or it broke while in use.
 * `phase` says whether the statement may have reached the server.
 *
 * @since 0.1.0
 */
export class ConnectionError extends Data.TaggedError("ConnectionError")<{
  readonly phase: "connect" | "query"
  /** False when retrying cannot help: bad credentials, a missing database. */
  readonly transient: boolean
  readonly code: string | undefined
  readonly sql: string | undefined
  readonly cause: unknown
}> {
  /** @since 0.1.0 */
  readonly category = "connection" as const
  override get message(): string {
    const what = this.phase === "connect" ? "could not connect" : "connection lost"
    return `${what}${codeSuffix(this.code)}: ${causeMessage(this.cause)}${sqlSuffix(this.sql)}`
  }
}

/**
 * No connection could be acquired within `acquireTimeout`. `reason` tells a
 * busy pool (`exhausted`) apart from a database that cannot be reached
 * (`unavailable`, with the last connect error as `cause`).
 *
 * @since 0.1.0
 */
export class PoolTimeout extends Data.TaggedError("PoolTimeout")<{
  readonly reason: "exhausted" | "unavailable"
  readonly alias: string
  readonly timeoutMillis: number
  readonly busy: number
  readonly waiting: number
  readonly size: number
  readonly max: number
  readonly cause?: unknown
}> {
  /** @since 0.1.0 */
  get category(): "poolTimeout" | "unavailable" {
    return this.reason === "exhausted" ? "poolTimeout" : "unavailable"
  }
  /** @since 0.1.0 */
  readonly transient = true
  /** @since 0.1.0 */
  readonly code = undefined
  override get message(): string {
    return this.reason === "exhausted"
      ? `pool "${this.alias}" exhausted: no connection within ${this.timeoutMillis} ms (${this.busy} busy of max ${this.max}, ${this.waiting} waiting)`
      : `database "${this.alias}" unavailable: no connection within ${this.timeoutMillis} ms (last error: ${
        this.cause === undefined ? "none" : causeMessage(this.cause)
      })`
  }
}

/**
 * The pool was closed while the caller waited for, or asked for, a connection.
 *
 * @since 0.1.0
 */
export class PoolClosed extends Data.TaggedError("PoolClosed")<{
  readonly alias: string
}> {
  /** @since 0.1.0 */
  readonly category = "unavailable" as const
  /** @since 0.1.0 */
  readonly transient = false
  /** @since 0.1.0 */
  readonly code = undefined
  override get message(): string {
    return `pool "${this.alias}" is closed`
  }
}

/**
 * A statement or transaction exceeded its hard timeout. The statement was
 * cancelled on the server before this error was returned.
 *
 * @since 0.1.0
 */
export class StatementTimeout extends Data.TaggedError("StatementTimeout")<{
  readonly kind: "statement" | "transaction"
  readonly timeoutMillis: number
  readonly sql: string | undefined
}> {
  /** @since 0.1.0 */
  readonly category = "statementTimeout" as const
  /** @since 0.1.0 */
  readonly transient = true
  /** @since 0.1.0 */
  readonly code = undefined
  override get message(): string {
    return `${this.kind} timed out after ${this.timeoutMillis} ms${sqlSuffix(this.sql)}`
  }
}

/**
 * The request was rejected before anything was sent: empty SQL, a parameter
 * count that does not match the placeholders, too many parameters, and so on.
 *
 * @since 0.1.0
 */
export class InvalidQuery extends Data.TaggedError("InvalidQuery")<{
  readonly reason:
    | "empty"
    | "parameterCount"
    | "tooManyParameters"
    | "mixedPlaceholders"
    | "invalidParameter"
    | "invalidArgument"
  readonly detail: string
  readonly sql: string | undefined
}> {
  /** @since 0.1.0 */
  readonly category = "invalidInput" as const
  /** @since 0.1.0 */
  readonly transient = false
  /** @since 0.1.0 */
  readonly code = undefined
  override get message(): string {
    return `invalid query (${this.reason}): ${this.detail}${sqlSuffix(this.sql)}`
  }
}

/**
 * DDL was sent inside a transaction on an engine that commits DDL implicitly
 * (MySQL), which would make the earlier statements impossible to roll back.
 * Nothing was sent. See the `ddlInTransaction` option.
 *
 * @since 0.1.0
 */
export class DdlInTransaction extends Data.TaggedError("DdlInTransaction")<{
  readonly sql: string
}> {
  /** @since 0.1.0 */
  readonly category = "invalidInput" as const
  /** @since 0.1.0 */
  readonly transient = false
  /** @since 0.1.0 */
  readonly code = undefined
  override get message(): string {
    return `DDL inside a transaction would commit it implicitly on this engine; nothing was sent (set ddlInTransaction to "warn" or "allow" to change this)${
      sqlSuffix(this.sql)
    }`
  }
}

/**
 * The circuit breaker of this database is open: the call failed fast,
 * without touching the pool or the network.
 *
 * @since 0.1.0
 */
export class CircuitOpen extends Data.TaggedError("CircuitOpen")<{
  readonly alias: string
  /** How long until the breaker lets a probe through. */
  readonly retryAfterMillis: number
}> {
  /** @since 0.1.0 */
  readonly category = "circuitOpen" as const
  /** @since 0.1.0 */
  readonly transient = true
  /** @since 0.1.0 */
  readonly code = undefined
  override get message(): string {
    return `circuit breaker of "${this.alias}" is open: failing fast (next probe in ${this.retryAfterMillis} ms)`
  }
}

/**
 * The connection was lost after a write or a COMMIT was sent: the server may
 * or may not have applied it. Never retried blindly; check before repeating,
 * or mark the call `idempotent`.
 *
 * @since 0.1.0
 */
export class OutcomeUnknown extends Data.TaggedError("OutcomeUnknown")<{
  readonly phase: "commit" | "write"
  readonly sql: string | undefined
  readonly cause: unknown
}> {
  /** @since 0.1.0 */
  readonly category = "outcomeUnknown" as const
  /** @since 0.1.0 */
  readonly transient = false
  /** @since 0.1.0 */
  readonly code = undefined
  override get message(): string {
    return `outcome unknown: the connection was lost after the ${
      this.phase === "commit" ? "COMMIT" : "write"
    } was sent, so it may or may not have been applied: ${causeMessage(this.cause)}${sqlSuffix(this.sql)}`
  }
}

/**
 * Every error a `Db` operation can fail with.
 *
 * @since 0.1.0
 */
export type DbError =
  | QueryError
  | ConstraintViolation
  | ConnectionError
  | PoolTimeout
  | PoolClosed
  | StatementTimeout
  | InvalidQuery
  | DdlInTransaction
  | CircuitOpen
  | OutcomeUnknown

const tags: ReadonlySet<string> = new Set([
  "QueryError",
  "ConstraintViolation",
  "ConnectionError",
  "PoolTimeout",
  "PoolClosed",
  "StatementTimeout",
  "InvalidQuery",
  "DdlInTransaction",
  "CircuitOpen",
  "OutcomeUnknown"
])

/**
 * Failures that say the database or the path to it is in trouble, as opposed
 * to a problem with the statement: the circuit breaker counts only these. An
 * exhausted pool (`PoolTimeout` with reason `exhausted`) is back-pressure
 * from the application's own load, not one of them.
 *
 * @since 0.1.0
 */
export const isInfrastructure = (error: DbError): boolean => {
  switch (error.category) {
    case "connection":
    case "unavailable":
    case "statementTimeout":
    case "resource":
      return true
    default:
      return false
  }
}

/**
 * Whether a value is one of effect-dal's `DbError`s.
 *
 * @since 0.1.0
 */
export const isDbError = (u: unknown): u is DbError =>
  Predicate.hasProperty(u, "_tag") && typeof u._tag === "string" && tags.has(u._tag)

/**
 * Node's socket error codes that mean the path to the server is gone, for
 * every driver's classifier.
 *
 * @since 0.1.0
 */
export const socketErrorCodes: ReadonlySet<string> = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
  "ECONNABORTED"
])

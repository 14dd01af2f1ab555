/**
 * Classifies `pg` driver errors into effect-dal's `DbError` family, once, by
 * SQLSTATE (or Node's socket error code), never by message text.
 *
 * @since 0.1.0
 */
import { DbError } from "@effect-dal/core"


const constraintKinds: Record<string, DbError.ConstraintKind> = {
  "23505": "unique",
  "23503": "foreignKey",
  "23502": "notNull",
  "23514": "check",
  "23P01": "exclusion"
}

interface PgLikeError {
  readonly code?: unknown
  readonly constraint?: unknown
  readonly message?: unknown
}

const sqlState = (cause: unknown): string | undefined => {
  const code = (cause as PgLikeError | null)?.code
  return typeof code === "string" ? code : undefined
}

/**
 * Whether an error came from a connection that is gone: a socket error, or a
 * `pg` "Connection terminated" error that carries no code.
 *
 * @since 0.1.0
 */
export const isConnectionLoss = (cause: unknown): boolean => {
  const code = sqlState(cause)
  if (code !== undefined) {
    return DbError.socketErrorCodes.has(code) || code.startsWith("08") || code === "57P01" || code === "57P02"
  }
  const message = (cause as PgLikeError | null)?.message
  // pg raises these without a code when the socket closes under it
  return typeof message === "string" &&
    (message.includes("Connection terminated") || message.includes("not queryable") ||
      message.includes("connection error"))
}

/**
 * Maps an error raised while running `sql` to a `DbError`.
 *
 * @since 0.1.0
 */
export const classify = (cause: unknown, sql: string | undefined, phase: "connect" | "query"): DbError.DbError => {
  const code = sqlState(cause)
  if (isConnectionLoss(cause)) {
    return new DbError.ConnectionError({ phase, transient: true, code, sql, cause })
  }
  if (code === undefined || code.length !== 5) {
    if (phase === "connect") return new DbError.ConnectionError({ phase, transient: true, code, sql, cause })
    return new DbError.QueryError({ category: "unknown", code, transient: false, sql, cause })
  }
  const kind = constraintKinds[code]
  if (kind !== undefined || code.startsWith("23")) {
    const constraint = (cause as PgLikeError).constraint
    return new DbError.ConstraintViolation({
      kind: kind ?? "other",
      constraint: typeof constraint === "string" ? constraint : undefined,
      code,
      sql,
      cause
    })
  }
  const query = (category: DbError.QueryCategory, transient: boolean) =>
    new DbError.QueryError({ category, code, transient, sql, cause })
  switch (code) {
    case "40001":
      return query("serialization", true)
    case "40P01":
      return query("deadlock", true)
    case "55P03": // lock_not_available: a conflict with a concurrent transaction
      return query("serialization", true)
    case "57014":
      return query("cancelled", true)
    case "57P03": // cannot_connect_now: the server is starting up or shutting down
      return phase === "connect"
        ? new DbError.ConnectionError({ phase, transient: true, code, sql, cause })
        : query("unavailable", true)
    case "53300": // too_many_connections
      return query("resource", true)
    case "42501":
    case "25006": // a write in a READ ONLY transaction
      return query("permission", false)
    case "28000":
    case "28P01":
      return phase === "connect"
        ? new DbError.ConnectionError({ phase, transient: false, code, sql, cause })
        : query("permission", false)
    case "3D000": // the database does not exist
      return phase === "connect"
        ? new DbError.ConnectionError({ phase, transient: false, code, sql, cause })
        : query("unknown", false)
  }
  switch (code.slice(0, 2)) {
    case "42":
      return query("syntax", false)
    case "22":
      return query("data", false)
    case "53": // insufficient resources: disk full, out of memory
      return query("resource", false)
    case "40":
      return query("serialization", true)
  }
  return query("unknown", false)
}

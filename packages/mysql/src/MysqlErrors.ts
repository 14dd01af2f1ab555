/**
 * Classifies `mysql2` errors into effect-dal's `DbError` family, once, by
 * MySQL/MariaDB error number (or the driver's connection error codes).
 *
 * @since 0.1.0
 */
import { DbError } from "@effect-dal/core"

interface MysqlLikeError {
  readonly errno?: unknown
  readonly code?: unknown
  readonly fatal?: unknown
  readonly message?: unknown
}

/** mysql2's own codes for a lost connection, beside Node's socket codes. */
const PROTOCOL_CODES = new Set([
  "PROTOCOL_CONNECTION_LOST",
  "PROTOCOL_SEQUENCE_TIMEOUT",
  "PROTOCOL_PACKETS_OUT_OF_ORDER"
])

const errnoOf = (cause: unknown): number | undefined => {
  const errno = (cause as MysqlLikeError | null)?.errno
  return typeof errno === "number" ? errno : undefined
}

const codeOf = (cause: unknown): string | undefined => {
  const errno = errnoOf(cause)
  if (errno !== undefined && errno > 0) return String(errno)
  const code = (cause as MysqlLikeError | null)?.code
  return typeof code === "string" ? code : undefined
}

const messageOf = (cause: unknown): string => {
  const message = (cause as MysqlLikeError | null)?.message
  return typeof message === "string" ? message : String(cause)
}

/** MySQL quotes offending values in its messages; keep parameter values out of ours. */
const withoutValues = (message: string): string => message.replace(/'(?:[^'\\]|\\.|'')*'/g, (quoted, offset) =>
  // keep names that follow "key", "column", "table" or "constraint"
  /(?:key|column|table|constraint|for|database)\s*$/i.test(message.slice(0, offset)) ? quoted : "'…'")

/**
 * Whether an error means the connection is gone.
 *
 * @since 0.1.0
 */
export const isConnectionLoss = (cause: unknown): boolean => {
  const errno = errnoOf(cause)
  if (errno === 2006 || errno === 2013 || errno === 1927 || errno === 1053) return true
  const code = (cause as MysqlLikeError | null)?.code
  if (typeof code === "string" && (PROTOCOL_CODES.has(code) || DbError.socketErrorCodes.has(code))) return true
  return (cause as MysqlLikeError | null)?.fatal === true && errno === undefined
}

/**
 * Maps an error raised while running `sql` to a `DbError`.
 *
 * @since 0.1.0
 */
export const classify = (cause: unknown, sql: string | undefined, phase: "connect" | "query"): DbError.DbError => {
  const errno = errnoOf(cause)
  const code = codeOf(cause)
  if (isConnectionLoss(cause)) {
    return new DbError.ConnectionError({ phase, transient: true, code, sql, cause })
  }
  const detail = withoutValues(messageOf(cause))
  const query = (category: DbError.QueryCategory, transient: boolean) =>
    new DbError.QueryError({ category, code, transient, sql, cause, detail })
  const constraint = (kind: DbError.ConstraintKind, name: string | undefined) =>
    new DbError.ConstraintViolation({ kind, constraint: name, code, sql, cause, detail })
  const message = messageOf(cause)
  switch (errno) {
    case 1213:
      return query("deadlock", true)
    case 1205: // lock wait timeout: a conflict with a concurrent transaction
      return query("serialization", true)
    case 1040: // too many connections
    case 1203: // too many user connections
      return phase === "connect"
        ? new DbError.ConnectionError({ phase, transient: true, code, sql, cause })
        : query("resource", true)
    case 1317: // query execution was interrupted (KILL QUERY)
      return query("cancelled", true)
    case 3024: // MySQL: max_execution_time exceeded
    case 1969: // MariaDB: max_statement_time exceeded
      return query("cancelled", true)
    case 1062:
    case 1586:
      return constraint("unique", /for key '([^']+)'/.exec(message)?.[1])
    case 1451:
    case 1452:
    case 1216:
    case 1217:
      return constraint("foreignKey", /CONSTRAINT `([^`]+)`/.exec(message)?.[1])
    case 1048:
      return constraint("notNull", /Column '([^']+)'/.exec(message)?.[1])
    case 3819: // MySQL check constraint
    case 4025: // MariaDB CONSTRAINT_FAILED
      return constraint("check", /(?:constraint|CONSTRAINT) [`']([^`']+)[`']/.exec(message)?.[1])
    case 1064:
    case 1146: // no such table
    case 1054: // unknown column
    case 1149:
      return query("syntax", false)
    case 1142:
    case 1143:
    case 1227:
    case 1044:
    case 1045:
      return phase === "connect"
        ? new DbError.ConnectionError({ phase, transient: false, code, sql, cause })
        : query("permission", false)
    case 1049: // unknown database
      return phase === "connect"
        ? new DbError.ConnectionError({ phase, transient: false, code, sql, cause })
        : query("unknown", false)
    case 1792: // write in a READ ONLY transaction
      return query("permission", false)
    case 1021: // disk full
    case 1114: // table is full
    case 1041: // out of memory
      return query("resource", false)
    case 1264:
    case 1265:
    case 1292:
    case 1366:
    case 1406:
    case 1365:
    case 1690:
    case 3140:
    case 4038:
      return query("data", false)
  }
  if (phase === "connect") return new DbError.ConnectionError({ phase, transient: true, code, sql, cause })
  return query("unknown", false)
}

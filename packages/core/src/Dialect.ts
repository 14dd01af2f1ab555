/**
 * What the core needs to know about an engine's SQL dialect: how to write a
 * placeholder and quote an identifier, how its string literals escape, and
 * the SQL of its transaction statements.
 *
 * @since 0.1.0
 */

/**
 * Transaction isolation levels, as the SQL standard names them.
 *
 * @since 0.1.0
 */
export type IsolationLevel = "read uncommitted" | "read committed" | "repeatable read" | "serializable"

/**
 * Options of a top-level transaction.
 *
 * @since 0.1.0
 */
export interface TransactionOptions {
  readonly isolation?: IsolationLevel | undefined
  readonly readOnly?: boolean | undefined
}

/**
 * An engine's dialect.
 *
 * @since 0.1.0
 */
export interface Dialect {
  readonly name: "pg" | "mysql"
  /** Native placeholder for the 1-based parameter `index`. */
  readonly placeholder: (index: number) => string
  /** Native placeholders are `$1, $2` (pg) or `?` (mysql). */
  readonly nativePlaceholders: "dollar" | "question"
  /** Quote character of identifiers. */
  readonly identifierQuote: "\"" | "`"
  /** `$tag$ ... $tag$` bodies exist (PostgreSQL). */
  readonly dollarQuotes: boolean
  /** Backslash escapes inside every '...' literal (MySQL's default). */
  readonly backslashEscapes: boolean
  /** `"..."` is a string literal rather than an identifier (MySQL's default). */
  readonly doubleQuoteIsString: boolean
  /** The most bind parameters one statement may carry. */
  readonly maxParameters: number
  /** A query whose single row has a `max_connections` column: the server's connection limit. */
  readonly maxConnectionsSql: string
  /** DDL commits the open transaction implicitly (MySQL), so it cannot be rolled back. */
  readonly implicitCommitDdl: boolean
  /** The statements that open a transaction, in order. */
  readonly begin: (options: TransactionOptions) => ReadonlyArray<string>
  readonly commit: string
  readonly rollback: string
  readonly savepoint: (name: string) => string
  readonly rollbackSavepoint: (name: string) => string
  readonly releaseSavepoint: (name: string) => string
  /**
   * The clause after an INSERT's VALUES that makes a row whose `keys`
   * (already quoted) exist do nothing, or update `update` (quoted columns) to
   * the new values. MySQL's "do nothing" is a no-op update, not `INSERT
   * IGNORE`, which would also swallow data errors.
   */
  readonly onConflict: (keys: ReadonlyArray<string>, update: ReadonlyArray<string> | undefined) => string
}

/**
 * Quotes an identifier for the dialect, doubling embedded quote characters.
 *
 * @since 0.1.0
 */
export const quoteIdentifier = (dialect: Dialect, name: string): string => {
  const q = dialect.identifierQuote
  return q + name.split(".").map((part) => part.split(q).join(q + q)).join(q + "." + q) + q
}

const isolationSql = (level: IsolationLevel): string => `ISOLATION LEVEL ${level.toUpperCase()}`

/**
 * PostgreSQL's dialect (also PGlite's).
 *
 * @since 0.1.0
 */
export const postgres: Dialect = {
  name: "pg",
  placeholder: (i) => `$${i}`,
  nativePlaceholders: "dollar",
  identifierQuote: "\"",
  dollarQuotes: true,
  backslashEscapes: false,
  doubleQuoteIsString: false,
  maxParameters: 65535,
  maxConnectionsSql: "SHOW max_connections",
  implicitCommitDdl: false,
  begin: (options) => {
    let sql = "BEGIN"
    if (options.isolation !== undefined) sql += " " + isolationSql(options.isolation)
    if (options.readOnly === true) sql += " READ ONLY"
    return [sql]
  },
  commit: "COMMIT",
  rollback: "ROLLBACK",
  savepoint: (name) => `SAVEPOINT ${name}`,
  rollbackSavepoint: (name) => `ROLLBACK TO SAVEPOINT ${name}`,
  releaseSavepoint: (name) => `RELEASE SAVEPOINT ${name}`,
  onConflict: (keys, update) =>
    update === undefined || update.length === 0
      ? ` ON CONFLICT (${keys.join(", ")}) DO NOTHING`
      : ` ON CONFLICT (${keys.join(", ")}) DO UPDATE SET ${update.map((c) => `${c} = EXCLUDED.${c}`).join(", ")}`
}

/**
 * MySQL's and MariaDB's dialect.
 *
 * @since 0.1.0
 */
export const mysql: Dialect = {
  name: "mysql",
  placeholder: () => "?",
  nativePlaceholders: "question",
  identifierQuote: "`",
  dollarQuotes: false,
  backslashEscapes: true,
  doubleQuoteIsString: true,
  maxParameters: 65535,
  maxConnectionsSql: "SELECT @@max_connections AS max_connections",
  implicitCommitDdl: true,
  begin: (options) => {
    // SET TRANSACTION applies to the next transaction only, which is the one we start
    const start = options.readOnly === true ? "START TRANSACTION READ ONLY" : "START TRANSACTION"
    return options.isolation === undefined
      ? [start]
      : [`SET TRANSACTION ${isolationSql(options.isolation)}`, start]
  },
  commit: "COMMIT",
  rollback: "ROLLBACK",
  savepoint: (name) => `SAVEPOINT ${name}`,
  rollbackSavepoint: (name) => `ROLLBACK TO SAVEPOINT ${name}`,
  releaseSavepoint: (name) => `RELEASE SAVEPOINT ${name}`,
  onConflict: (keys, update) =>
    ` ON DUPLICATE KEY UPDATE ${
      (update === undefined || update.length === 0 ? [keys[0]!] : update).map((c) => `${c} = VALUES(${c})`).join(", ")
    }`
}

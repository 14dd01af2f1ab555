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
  /** The statements of a two-phase commit branch named by a global id (a plain `[A-Za-z0-9_]` string). */
  readonly twoPhase: TwoPhaseSql
  /** Rows sent as one array per column, where the engine can take them so: a handful of parameters for any number of rows. */
  readonly arrayInsert?: ArrayInsertSql | undefined
  /** The engine's bulk load of `table (columns)` (already quoted), for drivers that can stream it (`Driver.copyIn`). */
  readonly bulkLoad?: ((table: string, columns: ReadonlyArray<string>) => string) | undefined
}

/**
 * How an engine inserts rows sent as one array per column (PostgreSQL's
 * `INSERT … SELECT * FROM unnest($1::int[], …)`).
 *
 * @since 0.3.0
 */
export interface ArrayInsertSql {
  /**
   * Lists the columns of the table named (quoted) by the one parameter: `name`,
   * `type` (as a cast can name it) and `array` (a column that is itself an
   * array, which the arrays would flatten: such a table is inserted row by row).
   */
  readonly columnsSql: string
  /** `head` is `INSERT INTO t (c1, c2)`; one array parameter per column, of these types. */
  readonly insert: (head: string, types: ReadonlyArray<string>) => string
  /** Column types whose values go as JSON text. */
  readonly jsonTypes: ReadonlyArray<string>
}

/**
 * An engine's two-phase commit statements: PostgreSQL's `PREPARE
 * TRANSACTION`, MySQL's and MariaDB's XA.
 *
 * @since 0.3.0
 */
export interface TwoPhaseSql {
  readonly begin: (gid: string) => ReadonlyArray<string>
  /** Ends the branch's work and prepares it: from then on it survives a crash, waiting for COMMIT or ROLLBACK. */
  readonly prepare: (gid: string) => ReadonlyArray<string>
  /** Commits a branch that was never prepared (the only one of its transaction). */
  readonly commitOnePhase: (gid: string) => ReadonlyArray<string>
  /** Rolls back a branch that was never prepared; each statement may fail harmlessly. */
  readonly rollbackActive: (gid: string) => ReadonlyArray<string>
  readonly commitPrepared: (gid: string) => string
  readonly rollbackPrepared: (gid: string) => string
  /** A query listing the branches prepared on this database and not yet decided, in a `gid` (or XA RECOVER's `data`) column. */
  readonly listPrepared: string
  /** A prepared branch keeps its session busy until it is decided (XA): such a session is closed, never reused. */
  readonly preparedHoldsSession: boolean
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
      : ` ON CONFLICT (${keys.join(", ")}) DO UPDATE SET ${update.map((c) => `${c} = EXCLUDED.${c}`).join(", ")}`,
  twoPhase: {
    begin: () => ["BEGIN"],
    prepare: (gid) => [`PREPARE TRANSACTION '${gid}'`],
    commitOnePhase: () => ["COMMIT"],
    rollbackActive: () => ["ROLLBACK"],
    commitPrepared: (gid) => `COMMIT PREPARED '${gid}'`,
    rollbackPrepared: (gid) => `ROLLBACK PREPARED '${gid}'`,
    listPrepared: "SELECT gid FROM pg_prepared_xacts WHERE database = current_database()",
    preparedHoldsSession: false
  },
  arrayInsert: {
    // the type without its modifier: an explicit cast to varchar(n) or char(n) would cut a long value short,
    // where the INSERT's own assignment to the column fails on it as an INSERT of VALUES does
    columnsSql: "SELECT a.attname AS name, format_type(a.atttypid, NULL) AS type, " +
      "(a.attndims > 0 OR t.typcategory = 'A') AS array FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid " +
      "WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped",
    insert: (head, types) => `${head} SELECT * FROM unnest(${types.map((t, i) => `$${i + 1}::${t}[]`).join(", ")})`,
    jsonTypes: ["json", "jsonb"]
  },
  bulkLoad: (table, columns) => `COPY ${table} (${columns.join(", ")}) FROM STDIN`
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
  // the data comes from the client's memory, whatever the file name; the defaults are tab-separated fields, backslash escapes
  bulkLoad: (table, columns) =>
    `LOAD DATA LOCAL INFILE 'effect-dal.tsv' INTO TABLE ${table} CHARACTER SET utf8mb4 (${columns.join(", ")})`,
  onConflict: (keys, update) =>
    ` ON DUPLICATE KEY UPDATE ${
      (update === undefined || update.length === 0 ? [keys[0]!] : update).map((c) => `${c} = VALUES(${c})`).join(", ")
    }`,
  twoPhase: {
    begin: (gid) => [`XA START '${gid}'`],
    prepare: (gid) => [`XA END '${gid}'`, `XA PREPARE '${gid}'`],
    commitOnePhase: (gid) => [`XA END '${gid}'`, `XA COMMIT '${gid}' ONE PHASE`],
    rollbackActive: (gid) => [`XA END '${gid}'`, `XA ROLLBACK '${gid}'`],
    commitPrepared: (gid) => `XA COMMIT '${gid}'`,
    rollbackPrepared: (gid) => `XA ROLLBACK '${gid}'`,
    // XA RECOVER lists the whole server's branches, whichever database they wrote: callers filter by their gids
    listPrepared: "XA RECOVER",
    preparedHoldsSession: true
  }
}

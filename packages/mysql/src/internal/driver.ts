import type { DatabaseConfig, DbError } from "@effect-dal/core"
import { CancelGate, DbError as DbErrors, Dialect, Driver, Failover, StatementCache } from "@effect-dal/core"
import * as MysqlClient from "@effect/sql-mysql2/MysqlClient"
import * as Statement from "@effect/sql/Statement"
import * as Cause from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import { replication, ReportedPositions, TRACK_GTID_SQL, tracksGtid } from "./replication.js"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Stream from "effect/Stream"
import * as Mysql from "mysql2"
import { Readable } from "node:stream"
import { classify } from "../MysqlErrors.js"

const CLOSE_GRACE_MS = 1_000
/** SERVER_STATUS_IN_TRANS in the status flags of an OK packet. */
const SERVER_STATUS_IN_TRANS = 1
/** SERVER_STATUS_NO_BACKSLASH_ESCAPES: string literals must not be escaped with backslashes. */
const SERVER_STATUS_NO_BACKSLASH_ESCAPES = 512

/** @internal */
export interface MysqlDriverOptions {
  readonly ssl?: string | Mysql.SslOptions | undefined
  readonly charset?: string | undefined
  readonly transformQueryNames?: ((name: string) => string) | undefined
  readonly transformResultNames?: ((name: string) => string) | undefined
  readonly spanAttributes?: Record<string, unknown> | undefined
  /** Extra `mysql2` connection options, applied under ours. */
  readonly connectionOptions?: Mysql.ConnectionOptions | undefined
}

/** What a driver-compatible pool passes through of a mysql2 query: the method, and mysql2's query options. @internal */
export interface MysqlNativeOptions extends Omit<Mysql.QueryOptions, "sql" | "values"> {
  readonly method: "query" | "execute"
}

/** The `mysql2` connection under one of our connections: a checked-out connection streams on it. @internal */
export const mysqlConnectionOf = (conn: Driver.DriverConnection): Mysql.Connection | undefined =>
  conn instanceof MysqlConnection ? conn.conn : undefined

interface Header {
  readonly affectedRows: number
  readonly insertId?: number
  readonly serverStatus?: number
  /** The session state the server reported changed (mysql2 parses it: the client tracks session state). */
  readonly stateChanges?: { readonly systemVariables?: Readonly<Record<string, string>> } | undefined
}

const statementKeys = new Map<string, string>()

/**
 * mysql2's key of a prepared statement in its per-connection LRU, for a
 * statement sent as text and values (rowsAsArray unset). Kept per SQL text,
 * so that the key's hash is computed once, not on every statement.
 */
const statementKey = (sql: string, rowsAsArray: boolean): string => {
  if (rowsAsArray) return `undefined/undefined/true${sql}`
  let key = statementKeys.get(sql)
  if (key === undefined) {
    // bounded: an application with endless distinct statements only pays the old price
    if (statementKeys.size >= 10_000) statementKeys.clear()
    key = `undefined/undefined/undefined${sql}`
    statementKeys.set(sql, key)
  }
  return key
}

/**
 * A statement to be prepared that may go out as text instead, in one query
 * after its transaction's START TRANSACTION: a write without RETURNING (an OK
 * packet, so no row is typed differently by the text protocol), its values
 * ones that mysql2's escaping renders exactly as the binary protocol binds them.
 */
const INLINE_WRITE = /^\s*(?:insert|update|delete|replace)\b/i
const inlinable = (sql: string, params: ReadonlyArray<unknown>): boolean => {
  if (!INLINE_WRITE.test(sql) || /\breturning\b/i.test(sql)) return false
  for (const p of params) {
    if (!(p === null || typeof p === "string" || typeof p === "boolean" || Number.isSafeInteger(p))) return false
  }
  return true
}

/** A multi-statement result without its first `count` statements' (a held BEGIN's): what the statement alone would have returned. */
const withoutFirst = (parts: any, count: number): any => {
  if (!Array.isArray(parts)) return parts
  return parts.length === count + 1 ? parts[count] : parts.slice(count)
}

const isHeader = (u: unknown): u is Header =>
  typeof u === "object" && u !== null && !Array.isArray(u) && "affectedRows" in u && "fieldCount" in u

const openConnection = (options: Mysql.ConnectionOptions) =>
  Effect.async<Mysql.Connection, unknown>((resume) => {
    const conn = Mysql.createConnection(options)
    let done = false
    // until connected, errors arrive through connect's callback; afterwards through the connection
    conn.on("error", () => {})
    conn.connect((err) => {
      if (done) return
      done = true
      if (err) {
        conn.destroy()
        resume(Effect.fail(err))
      } else {
        resume(Effect.succeed(conn))
      }
    })
    return Effect.sync(() => {
      if (!done) {
        done = true
        conn.destroy()
      }
    })
  })

const plainQuery = (conn: Mysql.Connection, sql: string) =>
  Effect.async<unknown, unknown>((resume) => {
    conn.query(sql, (err, result) => (err ? resume(Effect.fail(err)) : resume(Effect.succeed(result))))
  })

/** What a connection learns of its server's role. */
interface RoleRow {
  readonly read_only: number | string
  readonly innodb_read_only: number | string
}

const ROLE_SQL = "SELECT @@read_only AS read_only, @@innodb_read_only AS innodb_read_only"

/** `target_session_attrs` in MySQL/MariaDB terms: the primary is the server that is not read-only. */
const fits = (role: DatabaseConfig.TargetRole, row: RoleRow | undefined): boolean => {
  if (row === undefined) return false
  const readOnly = Number(row.read_only) !== 0 || Number(row.innodb_read_only) !== 0
  switch (role) {
    case "read-write":
    case "primary":
      return !readOnly
    case "standby":
      return readOnly
    default:
      return true
  }
}

/** Refusals of `LOAD DATA LOCAL` (`local_infile` off, or the client's LOCAL_FILES capability): 1148, 3948, 4166. */
const LOCAL_INFILE_REFUSED = new Set(["1148", "3948", "4166"])
/** About how much of a `LOAD DATA LOCAL` stream goes in one packet: small enough that the server starts early. */
const LOAD_CHUNK_CHARS = 32 * 1024

const LOAD_SPECIAL = /[\\\n\r\t\0]/
const LOAD_SPECIALS = /[\\\n\r\t\0]/g
const loadEscape = (c: string) => (c === "\\" ? "\\\\" : c === "\n" ? "\\n" : c === "\r" ? "\\r" : c === "\t" ? "\\t" : "\\0")

/**
 * One value as a field of `LOAD DATA`'s default format (tab-separated, `\N`
 * for NULL, backslash escapes), read by the server as it reads the same
 * value written into an INSERT by mysql2; `undefined` for a value that has no
 * such field here (bytes, objects, NaN or an infinity).
 */
const loadField = (value: unknown, escapeDate: (d: Date) => string): string | undefined => {
  switch (typeof value) {
    case "string":
      return LOAD_SPECIAL.test(value) ? value.replace(LOAD_SPECIALS, loadEscape) : value
    case "number":
      return Number.isFinite(value) ? String(value) : undefined
    case "bigint":
      return String(value)
    case "boolean":
      return value ? "1" : "0"
    case "object":
      if (value === null) return "\\N"
      // mysql2's own rendering of a date (its timezone option), without the quotes
      if (value instanceof Date) return Number.isNaN(value.getTime()) ? undefined : escapeDate(value).slice(1, -1)
  }
  return undefined
}

/** Whether every value has a `LOAD DATA` field (a check of types only: the text is written as the load reads it). */
const loadable = (rows: ReadonlyArray<Readonly<Record<string, unknown>>>, columns: ReadonlyArray<string>): boolean => {
  for (const row of rows) {
    for (const column of columns) {
      const value = row[column]
      switch (typeof value) {
        case "string":
        case "bigint":
        case "boolean":
          continue
        case "number":
          if (Number.isFinite(value)) continue
          return false
        case "object":
          if (value === null || (value instanceof Date && !Number.isNaN(value.getTime()))) continue
          return false
        default:
          return false
      }
    }
  }
  return true
}

/**
 * The rows as `LOAD DATA` text, a chunk at a time as the load reads them:
 * the server parses the first chunks while the rest are written. Every value
 * must be `loadable`.
 */
function* loadChunks(
  rows: ReadonlyArray<Readonly<Record<string, unknown>>>,
  columns: ReadonlyArray<string>,
  escapeDate: (d: Date) => string
): Generator<Buffer> {
  const last = columns.length - 1
  let text = ""
  for (const row of rows) {
    for (let c = 0; c < last; c++) text += loadField(row[columns[c]!], escapeDate)! + "\t"
    text += loadField(row[columns[last]!], escapeDate)! + "\n"
    if (text.length >= LOAD_CHUNK_CHARS) {
      yield Buffer.from(text, "utf8")
      text = ""
    }
  }
  if (text.length > 0) yield Buffer.from(text, "utf8")
}

/** A server's refusal to write: `--read-only` (1290), `innodb_read_only` (1836). */
const READ_ONLY_CODES = new Set(["1290", "1836"])

/** The parts of mysql2's connection (lib/base/connection.js) that every packet goes out through. */
interface Mysql2Writes {
  /** mysql2's write of one packet: to the socket, with its network-error handler and its `pause` on back-pressure. */
  write: (buffer: Buffer) => void
  readonly stream: { end: (...args: Array<any>) => unknown; readonly writable: boolean }
}

/**
 * Puts the connection's packets through `Driver.TurnWrites`: every packet
 * goes out through mysql2's `write`, and the socket is ended only after what
 * is held (mysql2 ends it right after a COM_QUIT).
 */
const writeAtTurnEnd = (conn: Mysql2Writes): void => {
  const write = conn.write.bind(conn)
  const stream = conn.stream
  const writes = new Driver.TurnWrites((chunk) => {
    write(chunk as Buffer)
    return true
  }, () => stream.writable)
  conn.write = (buffer) => void writes.hold(buffer)
  const end = stream.end.bind(stream)
  stream.end = (...args: Array<any>) => {
    writes.flush()
    return end(...args)
  }
}

class MysqlConnection implements Driver.DriverConnection {
  private broken = false
  /** The server refused `LOAD DATA LOCAL` on this connection, or numbers its rows non-consecutively: bulk loads go as INSERT. */
  private loadRefused = false
  private inTransaction: boolean | undefined = undefined
  private readonly gate: CancelGate
  /** A transaction's START TRANSACTION, held to go out with its first statement. */
  readonly heldBegin = new Driver.HeldBegin(true)

  constructor(
    readonly conn: Mysql.Connection,
    kill: (threadId: number) => Effect.Effect<void>,
    private readonly cacheSize: number,
    private readonly cacheStats: StatementCache.Stats,
    /** Which server this connection may stay on (checked when it is validated), from `targetRole`. */
    private readonly role: DatabaseConfig.TargetRole = "any",
    /** Where write connections land: told when this one is lost, and when its statements succeed. */
    private readonly watch?: Failover.Watch | undefined,
    /** `host:port` of the server. */
    private readonly at: string = "",
    /** The server status flags last reported (an OK packet's); from the connection's setup on. */
    private status: number | undefined = undefined,
    /**
     * `innodb_autoinc_lock_mode` by server (`at`), read with a first bulk load and shared by the
     * driver's connections: it is fixed while a server runs, and reading it per connection cost a
     * round trip on each one's first load.
     */
    private readonly autoincModes: Map<string, number> = new Map(),
    /** Where the commits' GTIDs that the server reports go, when the session tracks them. */
    private readonly reported?: ReportedPositions | undefined
  ) {
    // KILL QUERY on this exact thread
    this.gate = new CancelGate(
      () => (this.broken ? Effect.void : kill(conn.threadId)),
      () => {
        this.broken = true
      }
    )
    conn.on("error", () => this.lose())
    conn.on("end", () => this.lose())
    writeAtTurnEnd(conn as unknown as Mysql2Writes)
  }

  private lose(): void {
    if (!this.broken) this.watch?.failed()
    this.broken = true
  }

  /**
   * A statement's error, classified; a lost connection, or a write refused by
   * a server that should take writes (demoted or fenced read-only: nothing was
   * applied, and the statement may run again on the server that took over),
   * ends the connection.
   */
  private failure(err: Mysql.QueryError, sql: string): DbError.DbError {
    const error = classify(err, sql, "query")
    if (error._tag === "ConnectionError") this.lose()
    if (error._tag !== "QueryError" || !READ_ONLY_CODES.has(error.code ?? "") || !Failover.wantsWrites(this.role)) return error
    this.lose()
    this.watch?.refused(this.at)
    return Failover.refusedWrite(error)
  }

  private track(results: unknown): void {
    // the last status a multi-statement query reported: after `START TRANSACTION; SELECT …`, START TRANSACTION's
    // (a result set carries none); a single SELECT's rows have none either
    let last = results
    if (Array.isArray(results)) {
      last = undefined
      for (let i = results.length - 1; i >= 0 && last === undefined; i--) if (isHeader(results[i])) last = results[i]
    }
    if (isHeader(last) && typeof last.serverStatus === "number") {
      this.status = last.serverStatus
      this.inTransaction = (last.serverStatus & SERVER_STATUS_IN_TRANS) !== 0
      const gtid = this.reported === undefined ? undefined : last.stateChanges?.systemVariables?.["last_gtid"]
      if (typeof gtid === "string" && gtid !== "") this.reported!.report(gtid)
    }
  }

  /**
   * Whether a statement's values are bound by the server (a prepared
   * statement) rather than written into its text by mysql2. mysql2 escapes
   * with backslashes: a session without backslash escapes has its values
   * bound by the server, whatever was asked.
   */
  private bound(params: ReadonlyArray<unknown>, prepared: boolean): boolean {
    return params.length > 0 && ((prepared && this.cacheSize > 0) || !this.escapes)
  }

  /** Whether mysql2's client-side escaping is right for this session: it escapes with backslashes. */
  private get escapes(): boolean {
    return this.status !== undefined && (this.status & SERVER_STATUS_NO_BACKSLASH_ESCAPES) === 0
  }

  send(
    sql: string,
    params: ReadonlyArray<unknown>,
    mode: Driver.QueryMode,
    prepared: boolean,
    timeout: number | undefined,
    onOutcome: (outcome: Exit.Exit<any, DbError.DbError>) => void
  ) {
    return this.gate.send<any>(sql, timeout, (done) => {
      /** `merged`: the reply of START TRANSACTION and the statement, in one query. */
      const reply = (merged: number) => (err: Mysql.QueryError | null, results: any, fields: any) => {
        if (err) return done(Exit.fail(this.failure(err, sql)))
        this.track(results)
        this.watch?.succeeded()
        done(Exit.succeed(merged > 0 ? shape(withoutFirst(results, merged), withoutFirst(fields, merged), mode) : shape(results, fields, mode)))
      }
      // START TRANSACTION, after SET TRANSACTION where the transaction has an isolation level
      const statements = this.heldBegin.statements
      const begin = this.heldBegin.take()
      if (begin === undefined) return this.sendStatement(sql, params, mode, prepared, reply(0), done)
      // MySQL has no pipelining, but one query may hold several statements: the transaction's
      // START TRANSACTION and its first statement share a round trip (if it fails, the statement
      // never runs). As text, the statement is what mysql2 would send anyway; one to be prepared
      // goes as text only where the text is equivalent; none with values on a session whose
      // strings mysql2 would escape wrongly
      const merged = (options?: Omit<MysqlNativeOptions, "method">) => {
        let text: string
        try {
          text = `${begin};\n${params.length === 0 ? sql : this.conn.format(sql, params as Array<any>)}`
        } catch (e) {
          // a value mysql2 cannot render: nothing was sent, not even START TRANSACTION
          this.heldBegin.hold(begin, statements)
          return done(Exit.fail(new DbErrors.InvalidQuery({ reason: "invalidArgument", detail: String((e as Error)?.message ?? e), sql })))
        }
        if (options === undefined) this.conn.query(text, reply(statements))
        else this.conn.query({ ...options, sql: text }, reply(statements))
      }
      if (typeof mode === "object") {
        // a driver-compatible pool's `query` is text already (named placeholders aside), with its options
        const { method, ...options } = mode.native as MysqlNativeOptions
        if (method === "query" && options.namedPlaceholders !== true) return merged(options)
      } else if (mode !== "values" && (params.length === 0 || (this.escapes && (!this.bound(params, prepared) || inlinable(sql, params))))) {
        return merged()
      }
      // otherwise START TRANSACTION first, on its own, in the same turn of the gate
      this.conn.query(begin, (err: Mysql.QueryError | null, results: any) => {
        if (err) return done(Exit.fail(this.failure(err, begin)))
        this.track(results)
        this.sendStatement(sql, params, mode, prepared, reply(0), done)
      })
    }, onOutcome)
  }

  /** One statement as mysql2 sends it: prepared, as text, or as a driver-compatible pool asked. */
  private sendStatement(
    sql: string,
    params: ReadonlyArray<unknown>,
    mode: Driver.QueryMode,
    prepared: boolean,
    callback: (err: Mysql.QueryError | null, results: any, fields: any) => void,
    done: (outcome: Exit.Exit<any, DbError.DbError>) => void
  ): void {
    if (typeof mode === "object") {
      // a driver-compatible pool's statement: mysql2's own method and options
      const { method, ...options } = mode.native as MysqlNativeOptions
      const query = { ...options, sql, values: params as Array<any> }
      try {
        if (method === "execute") this.conn.execute(query, callback)
        else this.conn.query(query, callback)
      } catch (e) {
        done(Exit.fail(new DbErrors.InvalidQuery({ reason: "invalidArgument", detail: String((e as Error)?.message ?? e), sql })))
      }
      return
    }
    // server-side prepared statements for parameterized statements; the text protocol for
    // the rest, which also allows multiple statements. Text and values rather than an options
    // object unless rows come as arrays: mysql2 copies an options object on every call
    const rowsAsArray = mode === "values"
    const values = params as Array<any>
    try {
      if (this.bound(params, prepared)) {
        if (this.cacheSize > 0) this.countLookup(sql, rowsAsArray)
        if (rowsAsArray) this.conn.execute({ sql, values, rowsAsArray }, callback)
        else this.conn.execute(sql, values, callback)
      } else if (rowsAsArray) this.conn.query({ sql, values, rowsAsArray }, callback)
      else this.conn.query(sql, values, callback)
    } catch (e) {
      // mysql2 throws on parameters it cannot bind (undefined, functions) before sending anything
      done(Exit.fail(new DbErrors.InvalidQuery({ reason: "invalidArgument", detail: String((e as Error)?.message ?? e), sql })))
    }
  }

  settle() {
    return this.gate.settle()
  }

  /**
   * mysql2 keeps the prepared statements of a connection in an LRU of
   * `maxPreparedStatements` and closes evicted ones on the server: count what it will do.
   */
  private countLookup(sql: string, rowsAsArray: boolean) {
    const lru = (this.conn as unknown as { _statements: { has(key: string): boolean; size: number } })._statements
    if (lru.has(statementKey(sql, rowsAsArray))) this.cacheStats.hits++
    else {
      this.cacheStats.misses++
      if (lru.size >= this.cacheSize) this.cacheStats.evictions++
    }
  }

  /** All rows as one multi-statement query per chunk of about 1 MB, values escaped by mysql2. */
  batch(sql: string, rows: ReadonlyArray<ReadonlyArray<unknown>>) {
    // mysql2's escaping assumes backslash escapes: without them, each row is bound by the server
    if (!this.escapes) {
      return Effect.reduce(rows, 0, (sum, row) =>
        Effect.map(Driver.query(this, sql, row, "result", true) as Effect.Effect<Driver.QueryResult, DbError.DbError>, (r) =>
          sum + r.affected))
    }
    const chunks: Array<string> = []
    let current: Array<string> = []
    let size = 0
    for (const row of rows) {
      const statement = this.conn.format(sql, row as Array<any>)
      current.push(statement)
      size += statement.length
      if (size > 1_000_000) {
        chunks.push(current.join(";\n"))
        current = []
        size = 0
      }
    }
    if (current.length > 0) chunks.push(current.join(";\n"))
    return Effect.reduce(chunks, 0, (sum, chunk) =>
      Effect.map(Driver.query(this, chunk, [], "result", false) as Effect.Effect<Driver.QueryResult, DbError.DbError>, (r) =>
        sum + r.affected))
  }

  /**
   * Loads rows with `LOAD DATA LOCAL INFILE` (`sql`), streamed from memory.
   * With LOCAL the server skips a row it cannot take (a duplicate key, a value
   * out of range) with a warning instead of failing, so the load runs in a
   * transaction of its own (a savepoint inside one) and is kept only when
   * every row went in without a warning; otherwise it is rolled back and
   * `undefined` returned, and the rows go as INSERT, which fails or warns as
   * it always does. Likewise where the server refuses LOCAL, the session
   * escapes without backslashes, or a value has no exact text here.
   *
   * The keys are the auto-increment values, as an INSERT's: consecutive from
   * the first (`LAST_INSERT_ID()`, set to 0 before the load so that a value
   * after it is this load's, and given back when the table generated none).
   * A server that interleaves auto-increment values of bulk inserts
   * (`innodb_autoinc_lock_mode = 2`) would not number them consecutively:
   * there the rows go as INSERT.
   */
  copyIn(
    sql: string,
    rows: ReadonlyArray<Readonly<Record<string, unknown>>>,
    columns: ReadonlyArray<string>,
    timeout: number | undefined,
    _types?: ReadonlyArray<string>,
    check?: (from: number, to: number) => DbError.DbError | undefined
  ): Effect.Effect<Driver.Loaded | undefined, DbError.DbError> {
    return Effect.suspend(() => {
      // checked whole, before the load, like `loadable`: refused rows open no transaction to undo
      const refused = check?.(0, rows.length)
      return refused === undefined ? this.load(sql, rows, columns, timeout) : Effect.fail(refused)
    })
  }

  private load(
    sql: string,
    rows: ReadonlyArray<Readonly<Record<string, unknown>>>,
    columns: ReadonlyArray<string>,
    timeout: number | undefined
  ): Effect.Effect<Driver.Loaded | undefined, DbError.DbError> {
    if (this.loadRefused || !this.escapes || !loadable(rows, columns)) return Effect.succeed(undefined)
    const raw = (text: string) => Driver.query(this, text, [], "raw", false) as Effect.Effect<Array<any>, DbError.DbError>
    return Effect.gen(this, function*() {
      let autoincMode = this.autoincModes.get(this.at)
      if (autoincMode === undefined) {
        const [row] = yield* raw("SELECT @@innodb_autoinc_lock_mode AS mode")
        autoincMode = Number(row.mode)
        this.autoincModes.set(this.at, autoincMode)
      }
      if (autoincMode >= 2) {
        this.loadRefused = true
        return undefined
      }
      // a transaction's START TRANSACTION still held goes first, in the same query
      const begin = this.heldBegin.take()
      const [open, keep, undo] = begin !== undefined || this.transactionState() === "transaction"
        ? ["SAVEPOINT dal_load", "RELEASE SAVEPOINT dal_load", "ROLLBACK TO SAVEPOINT dal_load"]
        : ["START TRANSACTION", "COMMIT", "ROLLBACK"]
      // the session's LAST_INSERT_ID() is kept in a variable, to be given back where the load is undone or
      // generated no key: set to 0, a value after the load is this load's. All of it and the load in one query
      const text = `${begin === undefined ? "" : `${begin};\n`}SET @dal_load_prev = LAST_INSERT_ID();\n${open};\n` +
        `DO LAST_INSERT_ID(0);\n${sql}`
      const giveBack = ";\nDO LAST_INSERT_ID(@dal_load_prev)"
      const load = this.gate.run<Header & { readonly warningStatus?: number }>(sql, timeout, (done) => {
        this.conn.query({ sql: text, infileStreamFactory: () => Readable.from(loadChunks(rows, columns, (d) => this.conn.escape(d))) }, (err: Mysql.QueryError | null, results: any) => {
          if (err) return done(Exit.fail(this.failure(err, sql)))
          this.track(results)
          done(Exit.succeed(results[results.length - 1]))
        })
      })
      const result = yield* Effect.catchAllCause(load, (cause) => {
        const failure = Cause.failureOption(cause)
        const refused = Option.isSome(failure) && failure.value._tag === "QueryError" &&
          LOCAL_INFILE_REFUSED.has(failure.value.code ?? "")
        if (refused) this.loadRefused = true
        // undone where the connection still answers; a connection left in a transaction is rolled back when released
        return Effect.zipRight(Effect.ignore(raw(undo + giveBack)), refused ? Effect.succeed(undefined) : Effect.failCause(cause))
      })
      if (result === undefined) return undefined
      if (result.affectedRows !== rows.length || (result.warningStatus ?? 0) !== 0) {
        yield* raw(undo + giveBack)
        return undefined
      }
      // where the table generated no key, LAST_INSERT_ID() is the session's again
      const kept = yield* raw(
        `SELECT LAST_INSERT_ID() AS first;\nDO LAST_INSERT_ID(IF(LAST_INSERT_ID() = 0, @dal_load_prev, LAST_INSERT_ID()));\n${keep}`
      )
      const first = Number(kept[0][0].first)
      if (first === 0) return { inserted: result.affectedRows, keys: [] }
      return { inserted: result.affectedRows, keys: Array.from({ length: result.affectedRows }, (_, k) => first + k) }
    })
  }

  stream(sql: string, params: ReadonlyArray<unknown>, chunkSize: number): Stream.Stream<any, DbError.DbError> {
    const conn = this.conn
    return Stream.unwrap(Effect.as(this.heldBegin.sendAlone(this), Stream.async<any, DbError.DbError>((emit) => {
      const query = conn.query(sql, params as Array<any>)
      const rows = query.stream({ highWaterMark: chunkSize })
      let buffer: Array<any> = []
      const flush = () => {
        if (buffer.length === 0) return
        const chunk = buffer
        buffer = []
        rows.pause()
        // back-pressure: read on only once the consumer has taken the chunk
        void emit.chunk(Chunk.unsafeFromArray(chunk)).then(() => rows.resume())
      }
      rows.on("data", (row: any) => {
        buffer.push(row)
        if (buffer.length >= chunkSize) flush()
      })
      rows.on("error", (err: unknown) => void emit.fail(classify(err, sql, "query")))
      rows.on("end", () => {
        flush()
        void emit.end()
      })
      return Effect.sync(() => rows.destroy())
    }, 2)))
  }

  get ping(): Effect.Effect<void, DbError.DbError> {
    if (this.role === "any" || this.role === "prefer-standby") {
      return Effect.async<void, DbError.DbError>((resume) => {
        this.conn.ping((err) => {
          if (err) {
            this.broken = true
            resume(Effect.fail(classify(err, undefined, "query")))
          } else resume(Effect.void)
        })
      })
    }
    // the server's role may have changed since the connection was opened (a promotion, a fencing)
    return Effect.flatMap(Driver.query(this, ROLE_SQL, [], "rows", false), (rows: Array<RoleRow>) => {
      if (fits(this.role, rows[0])) return Effect.void
      this.broken = true
      return Effect.fail(Failover.roleMismatch(this.role, undefined))
    })
  }

  transactionState() {
    // a START TRANSACTION held for the first statement has begun the transaction for that statement
    // (the DDL guard asks before sending it)
    if (this.heldBegin.held) return "transaction" as const
    return this.inTransaction === undefined ? "unknown" as const : this.inTransaction ? "transaction" as const : "idle" as const
  }

  isBroken() {
    // a connection to a server that is no longer the primary is closed, not lent for writes
    return this.broken || (this.watch !== undefined && this.watch.stale(this.at))
  }

  serverId() {
    return this.conn.threadId
  }

  get close(): Effect.Effect<void> {
    return Effect.async<void>((resume) => {
      this.broken = true
      const timer = setTimeout(() => {
        this.conn.destroy()
        resume(Effect.void)
      }, CLOSE_GRACE_MS)
      this.conn.end(() => {
        clearTimeout(timer)
        resume(Effect.void)
      })
    })
  }
}

const shape = (results: any, fields: any, mode: Driver.QueryMode): unknown => {
  if (typeof mode === "object") return [results, fields]
  // a multi-statement query reports one field list (or none) per statement
  const multi = Array.isArray(fields) && fields.length > 0 && fields.every((f) => f === undefined || Array.isArray(f))
    && Array.isArray(results) && results.length === fields.length
  switch (mode) {
    case "raw":
      return results
    case "result": {
      const parts: Array<any> = multi ? results : [results]
      let affected = 0
      const rows: Array<any> = []
      for (const part of parts) {
        if (isHeader(part)) affected += part.affectedRows
        else if (Array.isArray(part)) rows.push(...part)
      }
      const first = parts.find(isHeader)
      return { rows, affected, insertId: first?.insertId }
    }
    default:
      if (multi) return (results as Array<any>).map((r) => (Array.isArray(r) ? r : []))
      return Array.isArray(results) ? results : []
  }
}

/** @internal */
export const makeDriver = (
  config: DatabaseConfig.DatabaseConfig,
  options: MysqlDriverOptions,
  /** A primary whose replicas take reads by commit position: MariaDB then reports each commit's GTID with it. */
  trackCommitPositions = false
): Driver.Driver => {
  const connectionOptions: Mysql.ConnectionOptions = {
    ...options.connectionOptions,
    host: config.host,
    port: config.port,
    database: config.database,
    connectTimeout: config.connectTimeout,
    multipleStatements: true,
    supportBigNumbers: true,
    // dates travel as UTC both ways; the session time zone is set to match on connect
    timezone: "Z",
    charset: options.charset ?? "utf8mb4",
    maxPreparedStatements: Math.max(1, config.statementCacheSize),
    // MySQL's counterpart of application_name, visible in performance_schema.session_connect_attrs
    connectAttributes: { ...options.connectionOptions?.connectAttributes, program_name: config.alias },
    ...(config.user === undefined ? {} : { user: config.user }),
    ...(config.password === undefined ? {} : { password: Redacted.value(config.password) }),
    ...(options.ssl === undefined ? {} : { ssl: options.ssl })
  }
  // KILL QUERY goes to the server the connection is on
  const kill = (endpoint: Mysql.ConnectionOptions) => (threadId: number) =>
    Effect.acquireUseRelease(
      openConnection({ ...connectionOptions, ...endpoint }),
      (conn) => plainQuery(conn, `KILL QUERY ${threadId}`),
      (conn) => Effect.sync(() => conn.destroy())
    ).pipe(Effect.ignore)
  const statementCache = StatementCache.makeStats()
  const role = config.targetRole
  const watch = Failover.watch(config, "mysql")
  const autoincModes = new Map<string, number>()
  const reported = trackCommitPositions ? new ReportedPositions() : undefined
  // the session's time zone, where the server stands, and the tracking of commits' GTIDs, in one round trip
  const setup = role === "any" ? "SET time_zone = '+00:00'" : `SET time_zone = '+00:00'; ${ROLE_SQL}`
  /** Sets a new connection's session up; a failure names what was sent. */
  const setUp = (conn: Mysql.Connection) => {
    const version = (conn as unknown as { _handshakePacket?: { serverVersion?: string } })._handshakePacket?.serverVersion
    const sql = reported !== undefined && tracksGtid(version) ? `${setup}; ${TRACK_GTID_SQL}` : setup
    return Effect.mapError(plainQuery(conn, sql), (err) => classify(err, sql, "connect"))
  }
  /** One server: opened, set up, and kept if it fits `want`. */
  const openOn = (endpoint: { host: string; port: number }, want: DatabaseConfig.TargetRole) =>
    Effect.flatMap(
      Effect.mapError(openConnection({ ...connectionOptions, ...endpoint }), (err) => classify(err, undefined, "connect")),
      (conn) =>
        setUp(conn).pipe(
          Effect.filterOrFail(
            (result) => want === "any" || fits(want, (result as Array<Array<RoleRow>>)[1]?.[0]),
            () => Failover.roleMismatch(want, `${endpoint.host}:${endpoint.port}`)
          ),
          Effect.tapError(() => Effect.sync(() => conn.destroy())),
          Effect.map((result): Driver.DriverConnection => {
            const header = Array.isArray(result) ? result[0] : result
            return new MysqlConnection(
              conn,
              kill(endpoint),
              config.statementCacheSize,
              statementCache,
              role,
              watch,
              `${endpoint.host}:${endpoint.port}`,
              isHeader(header) ? header.serverStatus : undefined,
              autoincModes,
              reported
            )
          })
        )
    )
  const connected = Failover.connect(config.hosts, role, openOn)
  const connect = Failover.follow(watch, connected)
  return {
    system: "mysql",
    dialect: Dialect.mysql,
    connect,
    statementCache,
    compiler: MysqlClient.makeCompiler(options.transformQueryNames),
    transformRows: options.transformResultNames
      ? Statement.defaultTransforms(options.transformResultNames).array
      : undefined,
    spanAttributes: options.spanAttributes ? Object.entries(options.spanAttributes) : [],
    replication,
    committedPosition: reported === undefined ? undefined : () => reported.current(),
    primaryHost: watch?.current
  }
}

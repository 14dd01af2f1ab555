import type { DatabaseConfig, DbError } from "@effect-dal/core"
import { CancelGate, Dialect, Driver, Failover, StatementCache } from "@effect-dal/core"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as Statement from "@effect/sql/Statement"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Stream from "effect/Stream"
import type { ConnectionOptions } from "node:tls"
import * as Pg from "pg"
import { from as copyFrom } from "pg-copy-streams"
import Cursor from "pg-cursor"
import { classify } from "../PgErrors.js"
import { copyData, prepareValue, Refused } from "./copyData.js"
import { replication } from "./replication.js"

/** How long a cancel request may take to reach the server. */
const CANCEL_GRACE_MS = 5_000
/** How long a graceful close may take before the socket is destroyed. */
const CLOSE_GRACE_MS = 1_000

/** @internal */
export interface PgDriverOptions {
  readonly ssl?: boolean | ConnectionOptions | undefined
  readonly applicationName?: string | undefined
  readonly types?: Pg.CustomTypesConfig | undefined
  readonly transformQueryNames?: ((name: string) => string) | undefined
  readonly transformResultNames?: ((name: string) => string) | undefined
  readonly transformJson?: boolean | undefined
  readonly spanAttributes?: Record<string, unknown> | undefined
}

/** What a driver-compatible pool passes through of a pg query config. @internal */
export interface PgNativeOptions {
  readonly rowMode?: "array" | undefined
  readonly types?: Pg.CustomTypesConfig | undefined
}

/** The `pg.Client` under one of our connections: a checked-out client runs pg's submittables (cursors) on it. @internal */
export const pgClientOf = (conn: Driver.DriverConnection): Pg.Client | undefined =>
  conn instanceof PgConnection ? conn.client : undefined

type Endpoint = { readonly host: string; readonly port: number }

/** Sends a PostgreSQL CancelRequest for one backend over a fresh socket; best effort. */
const sendCancel = (endpoint: Endpoint, processID: number, secretKey: number): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    // pg's typings omit the protocol-level methods that a CancelRequest needs
    const con = new Pg.Connection() as Pg.Connection & {
      connect(portOrPath: number | string, host?: string | number): void
      cancel(processID: number, secretKey: number): void
    }
    let finished = false
    const finish = () => {
      if (finished) return
      finished = true
      con.stream.destroy()
      resume(Effect.void)
    }
    con.on("error", finish)
    con.on("end", finish)
    con.on("connect", () => con.cancel(processID, secretKey))
    if (endpoint.host.startsWith("/")) con.connect(`${endpoint.host}/.s.PGSQL.${endpoint.port}`, 0)
    else con.connect(endpoint.port, endpoint.host)
    const timer = setTimeout(finish, CANCEL_GRACE_MS)
    con.stream.once("close", () => {
      clearTimeout(timer)
      finish()
    })
  })

/** The wire-protocol side of a `pg` connection that a Query writes to; pg's types do not describe it. */
interface PgProtocolConnection {
  parse(config: { readonly text: string; readonly name: string | undefined; readonly types: Array<number> | undefined }): void
  bind(config: {
    readonly portal: string
    readonly statement: string | undefined
    readonly values: Array<unknown>
    readonly binary?: boolean | undefined
    readonly valueMapper?: (value: unknown) => unknown
  }): void
  describe(config: { readonly type: "P"; readonly name: string }): void
  execute(config: { readonly portal: string; readonly rows: number }): void
  close(config: { readonly type: "S"; readonly name: string | undefined }): void
  sync(): void
  readonly parsedStatements: Record<string, string>
  readonly submittedNamedStatements: Record<string, string>
}

/** A RowDescription message as pg parses it. */
type RowDescription = { readonly fields: ReadonlyArray<unknown> }

/** What pg's `Result.addFields` derives from a RowDescription (lib/result.js). */
interface PgResultFields {
  fields: ReadonlyArray<unknown>
  _parsers: ReadonlyArray<unknown> | undefined
  _prebuiltEmptyResultObject: object | null
  readonly _types: unknown
}

/**
 * A prepared statement's result as first described: the message, and what
 * pg derived from it for the type parsers it was given (`types`).
 */
interface Description {
  readonly msg: RowDescription
  readonly types: unknown
  readonly fields: ReadonlyArray<unknown>
  readonly parsers: ReadonlyArray<unknown> | undefined
  readonly prebuilt: object | null
}

/**
 * Puts the connection's socket writes through `Driver.TurnWrites`. Every pg
 * message goes through the socket's write (pg's `_send` and `flush` alike,
 * pg-copy-streams too), so what is held keeps its order with what is not: a
 * write with a callback, or of anything but a buffer, goes out at once after
 * it. pg corks the socket around a query's four or five messages, which Node
 * would send with a `writev`; one `write` of the same bytes cost 9 µs less (a
 * throwaway echo script, 20,000 round trips over 10 sockets).
 */
const writeAtTurnEnd = (stream: { write: (...args: Array<any>) => boolean; readonly writable?: boolean }): void => {
  const write = stream.write.bind(stream)
  const writes = new Driver.TurnWrites(write, () => stream.writable !== false)
  stream.write = (...args: Array<any>) => {
    if (args.length === 1 && Buffer.isBuffer(args[0])) return writes.hold(args[0])
    writes.flush()
    return write(...args)
  }
}

/** The parts of pg's `Query` (lib/query.js) that `Described` and a pipelined BEGIN build on. */
interface PgQueryInternals {
  name?: string | undefined
  readonly _result: PgResultFields
  _accumulateRows: boolean
  readonly callback: unknown
  listeners(event: "row"): ReadonlyArray<unknown>
  _checkForMultirow(): void
  readonly text: string
  readonly values: Array<unknown>
  readonly types: Array<number> | undefined
  readonly portal: string
  readonly binary: boolean | undefined
  readonly rows: number | undefined
  requiresPreparation(): boolean
  prepare(connection: PgProtocolConnection): void
  hasBeenParsed(connection: PgProtocolConnection): boolean
  handleRowDescription(msg: RowDescription): void
  handleCommandComplete(msg: unknown, connection: PgProtocolConnection): void
  handleError(err: Error, connection: PgProtocolConnection): void
  _getRows(connection: PgProtocolConnection, rows: number | undefined): void
}

const QueryBase = Pg.Query as unknown as new (config: unknown, values: unknown, callback: unknown) => PgQueryInternals

/**
 * A query that describes a prepared statement's result once per connection,
 * as postgres.js does: pg asks for a RowDescription on every execution, which
 * costs the server and the client on every point select. A named statement's
 * result cannot change under it (the server fails it with 0A000, and the
 * statement cache then prepares it anew under another name), so the first
 * description stands for the name's lifetime, and so does what pg derives
 * from it (its `addFields` builds a dictionary object and two copies of it
 * per execution: 6% of a point select's client CPU). So a parser set with
 * pg's global `types.setTypeParser` after a statement was first described
 * applies to it on connections opened after the change: set them at startup,
 * as pg's documentation does.
 */
class Described extends QueryBase {
  /** The connection's descriptions by statement name (`null`: no rows); unset, pg's own path. */
  descriptions: Map<string, Description | null> | undefined
  /** Where to record this execution's description, when it was asked for. */
  private recordIn: Map<string, Description | null> | undefined
  private described = false

  /** pg's Query.prepare, less the Describe once the description is known. */
  override prepare(connection: PgProtocolConnection): void {
    const name = this.name
    if (name === undefined || this.descriptions === undefined || this.rows !== undefined) return super.prepare(connection)
    const known = this.descriptions.get(name)
    if (!this.hasBeenParsed(connection)) {
      connection.parse({ text: this.text, name, types: this.types })
      connection.submittedNamedStatements[name] = this.text
    }
    try {
      connection.bind({ portal: this.portal, statement: name, values: this.values, binary: this.binary, valueMapper: prepareValue })
    } catch (err) {
      connection.close({ type: "S", name })
      connection.sync()
      this.handleError(err as Error, connection)
      return
    }
    if (known === undefined) {
      this.recordIn = this.descriptions
      connection.describe({ type: "P", name: this.portal || "" })
    } else if (known !== null) this.describedAs(known)
    this._getRows(connection, undefined)
  }

  /** pg's handleRowDescription with what `addFields` derived the first time, where the type parsers are the same. */
  private describedAs(known: Description): void {
    const result = this._result
    if (known.types !== result._types) return super.handleRowDescription(known.msg)
    this._checkForMultirow()
    result.fields = known.fields
    result._parsers = known.parsers
    result._prebuiltEmptyResultObject = known.prebuilt
    this._accumulateRows = Boolean(this.callback) || this.listeners("row").length === 0
  }

  override handleRowDescription(msg: RowDescription): void {
    this.described = true
    super.handleRowDescription(msg)
    const result = this._result
    this.recordIn?.set(this.name!, {
      msg,
      types: result._types,
      fields: result.fields,
      parsers: result._parsers,
      prebuilt: result._prebuiltEmptyResultObject
    })
  }

  override handleCommandComplete(msg: unknown, connection: PgProtocolConnection): void {
    // NoData (a statement without rows) has no handler in pg: a completion without a description is one
    if (!this.described) this.recordIn?.set(this.name!, null)
    super.handleCommandComplete(msg, connection)
  }
}

/** A multi-statement simple query that counts its statements that completed (see `sendThenRead`). */
class ThenRead extends QueryBase {
  completed = 0

  override handleCommandComplete(msg: unknown, connection: PgProtocolConnection): void {
    this.completed++
    super.handleCommandComplete(msg, connection)
  }
}

/** Whether a text may hold more than one statement (a `;` before its end; one inside a literal counts too). */
const severalStatements = (sql: string): boolean => {
  const end = sql.trimEnd()
  const semicolon = end.indexOf(";")
  return semicolon !== -1 && semicolon < end.length - 1
}

/** A statement as a query config: named when prepared, rows as arrays, a driver-compatible pool's row mode and types. */
const queryConfig = (sql: string, params: ReadonlyArray<unknown>, name: string | undefined, mode: Driver.QueryMode) => {
  const config: Pg.QueryConfig & { rowMode?: "array"; types?: Pg.CustomTypesConfig } = { text: sql, values: params as Array<unknown> }
  if (name !== undefined) config.name = name
  if (typeof mode === "object") {
    const native = mode.native as PgNativeOptions
    if (native.rowMode === "array") config.rowMode = "array"
    if (native.types !== undefined) config.types = native.types
  } else if (mode === "values") config.rowMode = "array"
  return config
}

/**
 * A statement with its transaction's BEGIN in front: both go out in one flush
 * under one Sync, so a failed BEGIN fails the statement, and the server skips
 * the statement (everything up to the Sync) after it.
 */
class AfterBegin extends Described {
  private begun = false
  private parsedHere = false

  /** `statement`: the text with `values`, or a whole query config (where rows come as arrays or with their own types). */
  constructor(
    private readonly begin: string,
    statement: string | Pg.QueryConfig,
    values: ReadonlyArray<unknown> | undefined,
    callback: (err: Error | null, result: any) => void
  ) {
    super(statement, values, callback)
  }

  override requiresPreparation(): boolean {
    return true
  }

  override prepare(connection: PgProtocolConnection): void {
    connection.parse({ text: this.begin, name: "", types: [] })
    connection.bind({ portal: "", statement: "", values: [] })
    connection.execute({ portal: "", rows: 0 })
    this.parsedHere = !this.hasBeenParsed(connection)
    super.prepare(connection)
  }

  override handleCommandComplete(msg: unknown, connection: PgProtocolConnection): void {
    // BEGIN's own completion: the statement's result starts after it
    if (!this.begun) {
      this.begun = true
      return
    }
    super.handleCommandComplete(msg, connection)
  }

  override handleError(err: Error, connection: PgProtocolConnection): void {
    // pg records a named statement as parsed at the first ParseComplete, which was BEGIN's
    if (this.parsedHere && this.name !== undefined) delete connection.parsedStatements[this.name]
    super.handleError(err, connection)
  }
}

class PgConnection implements Driver.DriverConnection {
  private broken = false
  /** A transaction's BEGIN held back for the next statement. */
  readonly heldBegin = new Driver.HeldBegin()
  /** `host:port` of the server. */
  private readonly at: string
  private readonly gate: CancelGate
  private readonly cache: StatementCache.StatementCache
  private evicted: Array<string> = []
  /** Each prepared statement's result, as the server first described it (see `Described`). */
  private readonly descriptions = new Map<string, Description | null>()
  /** A server error's report, held until the ReadyForQuery after it (see `afterReady`). */
  private heldReport: (() => void) | undefined = undefined

  constructor(
    readonly client: Pg.Client,
    endpoint: Endpoint,
    cacheSize: number,
    cacheStats: StatementCache.Stats,
    /** Which server this connection may stay on (checked when it is validated), from `targetRole`. */
    private readonly role: DatabaseConfig.TargetRole = "any",
    /** Where write connections land: told when this one is lost, and when its statements succeed. */
    private readonly watch?: Failover.Watch | undefined
  ) {
    this.at = `${endpoint.host}:${endpoint.port}`
    this.cache = new StatementCache.StatementCache(cacheSize, cacheStats, (name) => {
      // pg remembers what it prepared; forget it there too. The server copy is freed once the
      // connection is idle again (see settle): a second query may not be queued behind one in flight
      delete (client as unknown as { connection: { parsedStatements: Record<string, string> } }).connection
        .parsedStatements[name]
      this.descriptions.delete(name)
      this.evicted.push(name)
    })
    client.on("error", () => this.lose())
    client.on("end", () => this.lose())
    // after connecting: pg replaces the socket with a TLS one during the handshake
    writeAtTurnEnd((client as unknown as { connection: { stream: Parameters<typeof writeAtTurnEnd>[0] } }).connection.stream)
    // registered after pg's own listeners, so the transaction status is recorded first
    const connection = (client as unknown as { connection: NodeJS.EventEmitter }).connection
    const report = () => {
      const held = this.heldReport
      this.heldReport = undefined
      held?.()
    }
    connection.on("readyForQuery", report)
    connection.on("end", report)
    const keys = client as unknown as { processID?: number; secretKey?: number }
    this.gate = new CancelGate(
      () =>
        keys.processID === undefined || keys.secretKey === undefined || this.broken
          ? Effect.void
          : sendCancel(endpoint, keys.processID, keys.secretKey),
      () => {
        this.broken = true
      }
    )
  }

  /**
   * A statement's error, classified; a lost connection, or a write refused by
   * a server that should take writes (demoted or fenced: nothing was applied,
   * and the statement may run again on the server that took over), ends the
   * connection.
   */
  private failure(err: Error, sql: string): DbError.DbError {
    const error = classify(err, sql, "query")
    if (error._tag === "ConnectionError") this.lose()
    if (error._tag !== "QueryError" || error.code !== "25006" || !Failover.wantsWrites(this.role)) return error
    this.lose()
    this.watch?.refused(this.at)
    return Failover.refusedWrite(error)
  }

  /**
   * pg calls back with a server's error as soon as it reads the
   * ErrorResponse, before the ReadyForQuery that follows, which the server
   * may send in a later packet (it flushes errors at once). Reporting the
   * failure only then makes `transactionState` the one after it (idle after
   * a failed COMMIT, failed inside a transaction) when the caller resumes,
   * and spares a needless ROLLBACK on the way back to the pool.
   */
  private afterReady(err: Error, report: () => void): void {
    if (err instanceof Pg.DatabaseError && !this.broken) this.heldReport = report
    else report()
  }

  private lose(): void {
    if (!this.broken) this.watch?.failed()
    this.broken = true
  }

  /** The prepared name for `sql`, or `undefined` to send it unnamed. */
  statementName(sql: string): string | undefined {
    return this.cache.lookup(sql)
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
      const send = (retried: boolean) => {
        // only parameterized statements are prepared: the rest may hold several statements
        const name = prepared && params.length > 0 ? this.cache.lookup(sql) : undefined
        const callback = (err: Error | null, result: Pg.QueryResult | Array<Pg.QueryResult>) => {
          if (err) {
            const error = this.failure(err, sql)
            // "cached plan must not change result type": the table changed under the prepared statement
            if (name !== undefined && error.code === "0A000") {
              this.cache.invalidate(sql)
              if (!retried && this.client.getTransactionStatus() === "I") return send(true)
            }
            this.afterReady(err, () => done(Exit.fail(error)))
          } else {
            this.watch?.succeeded()
            done(Exit.succeed(shape(result, mode)))
          }
        }
        const begin = this.heldBegin.take()
        if (begin !== undefined && params.length === 0 && severalStatements(sql)) {
          // several statements need the simple protocol, which parses the whole text before it runs
          // any of it: BEGIN goes on its own first, so that it holds whatever the text does
          this.client.query(begin, (err: Error | null) => {
            if (!err) return send(retried)
            const error = this.failure(err, begin)
            this.afterReady(err, () => done(Exit.fail(error)))
          })
          return
        }
        // text and values where they do: pg copies a config object property by property on every call
        const query = typeof mode === "object" || mode === "values"
          ? begin === undefined
            ? new Described(queryConfig(sql, params, name, mode), undefined, callback)
            : new AfterBegin(begin, queryConfig(sql, params, name, mode), undefined, callback)
          : begin === undefined
          ? new Described(sql, params, callback)
          : new AfterBegin(begin, sql, params, callback)
        if (name !== undefined) {
          query.name = name
          query.descriptions = this.descriptions
        }
        this.client.query(query as unknown as Pg.Query)
      }
      send(false)
    }, onOutcome)
  }

  private query(sql: string, params: ReadonlyArray<unknown>, mode: Driver.QueryMode, prepared: boolean): Effect.Effect<any, DbError.DbError> {
    return Driver.query(this, sql, params, mode, prepared)
  }

  settle() {
    const cancelling = this.gate.settle()
    if (this.evicted.length === 0) return cancelling
    const names = this.evicted
    this.evicted = []
    const deallocate = Effect.ignore(
      this.query(names.map((name) => `DEALLOCATE "${name}"`).join("; "), [], "raw", false)
    )
    return cancelling === undefined ? deallocate : Effect.zipRight(cancelling, deallocate)
  }

  /** Pipelines every row: all Bind/Execute messages go out before the first reply comes back. */
  batch(sql: string, rows: ReadonlyArray<ReadonlyArray<unknown>>) {
    return Effect.zipRight(this.heldBegin.sendAlone(this), this.gate.run<number>(sql, undefined, (done) => {
      const client = this.client as unknown as { pipeline: boolean }
      client.pipeline = true
      let pending = rows.length
      let affected = 0
      let failure: DbError.DbError | undefined
      const name = this.statementName(sql)
      for (const row of rows) {
        const config = name === undefined
          ? { text: sql, values: row as Array<unknown> }
          : { name, text: sql, values: row as Array<unknown> }
        this.client.query(config, (err: Error | null, result: Pg.QueryResult) => {
          if (err) {
            const error = this.failure(err, sql)
            failure ??= error
          } else affected += result.rowCount ?? 0
          if (--pending === 0) {
            client.pipeline = false
            done(failure === undefined ? Exit.succeed(affected) : Exit.fail(failure))
          }
        })
      }
    }))
  }

  /**
   * `statement` and `read` as one simple query: one message, one flush and
   * one ReadyForQuery for both. The server runs `read` only once `statement`
   * went through, and `ThenRead` counts the completions, so that an error in
   * `read` is not taken for `statement`'s. (As two pipelined Query messages,
   * each with its own ReadyForQuery, the read cost a raw pg transfer 15% of
   * its throughput, against 8% this way: a throwaway script, 20 callers.)
   */
  sendThenRead(statement: string, read: string) {
    return Effect.zipRight(this.heldBegin.sendAlone(this), this.gate.run<ReadonlyArray<any> | undefined>(statement, undefined, (done) => {
      const query = new ThenRead(`${statement};\n${read}`, undefined, (err: Error | null, results: ReadonlyArray<Pg.QueryResult>) => {
        if (!err) {
          this.watch?.succeeded()
          return done(Exit.succeed(results[1]?.rows))
        }
        if (query.completed === 0) {
          const error = this.failure(err, statement)
          return this.afterReady(err, () => done(Exit.fail(error)))
        }
        this.watch?.succeeded()
        // the read failing costs only its rows: `statement` went through
        this.afterReady(err, () => done(Exit.succeed(undefined)))
      })
      this.client.query(query as unknown as Pg.Query)
    }))
  }

  /**
   * Loads rows with `COPY … FROM STDIN`, in binary where every column's type
   * and value has an exact binary form, else as text (see `copyData`), so
   * that the server reads what an INSERT of the same values would store.
   * Writes wait for the socket to drain. With `check`, rows are checked as
   * they go out: a refused range ends the load with CopyFail, which stores
   * nothing, and fails it with the check's error; a value with no binary form
   * met after the load began in binary declines it.
   */
  copyIn(
    sql: string,
    rows: ReadonlyArray<Readonly<Record<string, unknown>>>,
    columns: ReadonlyArray<string>,
    timeout: number | undefined,
    types?: ReadonlyArray<string>,
    check?: (from: number, to: number) => DbError.DbError | undefined
  ) {
    // a check mid-load must never end a transaction's COPY: the CopyFail would abort the transaction
    if (check !== undefined && (this.heldBegin.held || this.transactionState() !== "idle")) {
      const error = check(0, rows.length)
      if (error !== undefined) return Effect.fail(error)
      check = undefined
    }
    const copy = copyData(sql, rows, columns, types, check)
    // COPY reports no keys: with `returning`, insertMany stays on INSERT
    return Effect.zipRight(this.heldBegin.sendAlone(this), Effect.suspend(() => {
      const chunks = copy.chunks()
      let next: IteratorResult<Buffer | string>
      try {
        // the first rows checked before anything goes out: a refusal there costs no round trip
        next = chunks.next()
      } catch (thrown) {
        if (!(thrown instanceof Refused)) throw thrown
        return thrown.error === undefined ? Effect.succeed(undefined) : Effect.fail(thrown.error as DbError.DbError)
      }
      return this.gate.run<Driver.Loaded | undefined>(copy.sql, timeout, (done) => {
        const stream = this.client.query(copyFrom(copy.sql))
        let finished = false
        let refusal: Refused<unknown> | undefined
        const finish = (outcome: Exit.Exit<Driver.Loaded | undefined, DbError.DbError>) => {
          if (finished) return
          finished = true
          done(outcome)
        }
        stream.on("error", (err: Error) => {
          if (refusal === undefined) return finish(Exit.fail(this.failure(err, copy.sql)))
          // the server has given up the COPY (its error answers the CopyFail)
          finish(refusal.error === undefined ? Exit.succeed(undefined) : Exit.fail(refusal.error as DbError.DbError))
        })
        stream.on("finish", () => finish(Exit.succeed({ inserted: stream.rowCount, keys: [] })))
        const write = (): void => {
          try {
            for (; !next.done; next = chunks.next()) {
              if (!stream.write(next.value)) {
                next = chunks.next()
                return void stream.once("drain", write)
              }
            }
          } catch (thrown) {
            if (!(thrown instanceof Refused)) throw thrown
            refusal = thrown
            return void stream.destroy(new Error(refusal.error === undefined ? "effect-dal: a value with no binary form" : "effect-dal: rows refused"))
          }
          stream.end()
        }
        write()
      })
    }))
  }

  stream(sql: string, params: ReadonlyArray<unknown>, chunkSize: number): Stream.Stream<any, DbError.DbError> {
    const client = this.client
    const begun = this.heldBegin.sendAlone(this)
    return Stream.unwrapScoped(Effect.gen(function*() {
      yield* begun
      const cursor = client.query(new Cursor(sql, params as Array<unknown>))
      yield* Effect.addFinalizer(() =>
        Effect.async<void>((resume) => {
          cursor.close(() => resume(Effect.void))
        })
      )
      const pull = Effect.async<Chunk.Chunk<any>, Option.Option<DbError.DbError>>((resume) => {
        cursor.read(chunkSize, (err, rows) => {
          if (err) resume(Effect.fail(Option.some(classify(err, sql, "query"))))
          else if (rows.length === 0) resume(Effect.fail(Option.none()))
          else resume(Effect.succeed(Chunk.unsafeFromArray(rows)))
        })
      })
      return Stream.repeatEffectChunkOption(pull)
    }))
  }

  get ping(): Effect.Effect<void, DbError.DbError> {
    if (this.role === "any" || this.role === "prefer-standby") return Effect.asVoid(this.query("SELECT 1", [], "raw", false))
    // the server's role may have changed since the connection was opened (a promotion, a demotion)
    return Effect.flatMap(this.query(ROLE_SQL, [], "rows", false), (rows: Array<RoleRow>) => {
      if (fits(this.role, rows[0])) return Effect.void
      this.broken = true
      return Effect.fail(Failover.roleMismatch(this.role, undefined))
    })
  }

  transactionState() {
    // pg records the status of every ReadyForQuery before it calls back
    switch (this.client.getTransactionStatus()) {
      case "I":
        return "idle" as const
      case "T":
        return "transaction" as const
      case "E":
        return "failed" as const
      default:
        return "unknown" as const
    }
  }

  isBroken() {
    // a connection to a server that is no longer the primary is closed, not lent for writes
    return this.broken || (this.watch !== undefined && this.watch.stale(this.at))
  }

  serverId() {
    return (this.client as unknown as { processID?: number }).processID
  }

  get close(): Effect.Effect<void> {
    return Effect.async<void>((resume) => {
      this.broken = true
      const stream = (this.client as unknown as { connection: { stream: { destroy(): void } } }).connection.stream
      const timer = setTimeout(() => {
        stream.destroy()
        resume(Effect.void)
      }, CLOSE_GRACE_MS)
      this.client.end(() => {
        clearTimeout(timer)
        resume(Effect.void)
      })
    })
  }
}

const shape = (result: Pg.QueryResult | Array<Pg.QueryResult>, mode: Driver.QueryMode): unknown => {
  if (typeof mode === "object") return result
  switch (mode) {
    case "raw":
      return result
    case "result":
      return Array.isArray(result)
        ? { rows: result.flatMap((r) => r.rows ?? []), affected: result.reduce((n, r) => n + (r.rowCount ?? 0), 0) }
        : { rows: result.rows ?? [], affected: result.rowCount ?? 0 }
    default:
      // a multi-statement query returns each result set in order
      return Array.isArray(result) ? result.map((r) => r.rows ?? []) : result.rows ?? []
  }
}

/** The `pg.Client` settings of a database: the pool's connections and the LISTEN connection share them. @internal */
export const clientConfigOf = (config: DatabaseConfig.DatabaseConfig, options: PgDriverOptions): Pg.ClientConfig => {
  const sslFromUrl = config.params["sslmode"] !== undefined && config.params["sslmode"] !== "disable"
  return {
    host: config.host,
    port: config.port,
    database: config.database,
    application_name: options.applicationName ?? config.alias,
    connectionTimeoutMillis: config.connectTimeout,
    keepAlive: true,
    ...(config.user === undefined ? {} : { user: config.user }),
    ...(config.password === undefined ? {} : { password: Redacted.value(config.password) }),
    ...(options.ssl !== undefined ? { ssl: options.ssl } : sslFromUrl ? { ssl: true } : {}),
    ...(options.types === undefined ? {} : { types: options.types })
  }
}

/** What a connection learns of its server's role. */
interface RoleRow {
  readonly recovery: boolean
  readonly read_only: boolean
}

const ROLE_SQL = "SELECT pg_is_in_recovery() AS recovery, current_setting('default_transaction_read_only') = 'on' AS read_only"

/** libpq's `target_session_attrs`, checked on a server's answer to `ROLE_SQL`. */
const fits = (role: DatabaseConfig.TargetRole, row: RoleRow | undefined): boolean => {
  if (row === undefined) return false
  switch (role) {
    case "read-write":
      return !row.recovery && !row.read_only
    case "primary":
      return !row.recovery
    case "standby":
      return row.recovery
    default:
      return true
  }
}

/** Opens one `pg.Client` to `endpoint`. */
const open = (clientConfig: Pg.ClientConfig, endpoint: Endpoint) =>
  Effect.async<Pg.Client, DbError.DbError>((resume) => {
    const client = new Pg.Client({ ...clientConfig, host: endpoint.host, port: endpoint.port })
    let done = false
    // until connected, a socket error is reported through connect's callback; afterwards through the connection
    const swallow = () => {}
    client.on("error", swallow)
    client.connect((err: Error | undefined) => {
      if (done) return
      done = true
      if (err) {
        client.end(() => {})
        resume(Effect.fail(classify(err, undefined, "connect")))
      } else {
        resume(Effect.succeed(client))
      }
    })
    return Effect.sync(() => {
      if (!done) {
        done = true
        client.end(() => {})
      }
    })
  })

const roleOf = (client: Pg.Client) =>
  Effect.async<RoleRow | undefined, DbError.DbError>((resume) => {
    client.query(ROLE_SQL, (err: Error | null, result: Pg.QueryResult) => {
      if (err) resume(Effect.fail(classify(err, ROLE_SQL, "connect")))
      else resume(Effect.succeed(result.rows[0] as RoleRow | undefined))
    })
  })

/** One server: opened, and kept if it fits `want` (checked on the open connection). */
const openOn = (clientConfig: Pg.ClientConfig, endpoint: Endpoint, want: DatabaseConfig.TargetRole) =>
  Effect.flatMap(open(clientConfig, endpoint), (client) =>
    want === "any" ? Effect.succeed(client) : roleOf(client).pipe(
      Effect.filterOrFail((row) => fits(want, row), () => Failover.roleMismatch(want, `${endpoint.host}:${endpoint.port}`)),
      Effect.tapError(() => Effect.sync(() => client.end(() => {}))),
      Effect.as(client)
    ))

/** @internal */
export const makeDriver = (config: DatabaseConfig.DatabaseConfig, options: PgDriverOptions): Driver.Driver => {
  const clientConfig = clientConfigOf(config, options)
  const statementCache = StatementCache.makeStats()
  const watch = Failover.watch(config, "postgresql")
  const connected = Effect.map(
    Failover.connect(config.hosts, config.targetRole, (endpoint, want) => openOn(clientConfig, endpoint, want)),
    ([client, endpoint]) => [
      new PgConnection(client, endpoint, config.statementCacheSize, statementCache, config.targetRole, watch) as Driver.DriverConnection,
      endpoint
    ] as const
  )
  const connect = Failover.follow(watch, connected)
  const transformRows = options.transformResultNames
    ? Statement.defaultTransforms(options.transformResultNames, options.transformJson).array
    : undefined
  return {
    system: "postgresql",
    dialect: Dialect.postgres,
    connect,
    statementCache,
    compiler: PgClient.makeCompiler(options.transformQueryNames, options.transformJson),
    transformRows,
    spanAttributes: options.spanAttributes ? Object.entries(options.spanAttributes) : [],
    replication,
    primaryHost: watch?.current
  }
}

/**
 * The seam between the core and an engine. An engine package implements a
 * `Driver`; the pool, transactions, timeouts and the `SqlClient` adapter are
 * written once in the core against it.
 *
 * @since 0.1.0
 */
import type * as Statement from "@effect/sql/Statement"
import * as Effect from "effect/Effect"
import type * as Exit from "effect/Exit"
import type * as Stream from "effect/Stream"
import type { ConnectionError, DbError } from "./DbError.js"
import type { Dialect } from "./Dialect.js"
import { fromSend } from "./internal/abortable.js"
import type { Replication } from "./Replication.js"
import type * as StatementCache from "./StatementCache.js"

/**
 * How a statement's result is returned:
 * - `rows`: an array of row objects (an array of such arrays for a multi-statement query);
 * - `values`: an array of row value arrays;
 * - `result`: rows plus the affected row count, normalized;
 * - `raw`: the driver's own result object;
 * - `{ native }`: the driver's own query options (`rowMode` and `types` for pg,
 *   `rowsAsArray` and `typeCast` for mysql2), for a driver-compatible pool; the
 *   result is the driver's own, as that driver's API returns it.
 *
 * @since 0.1.0
 */
export type QueryMode = "rows" | "values" | "result" | "raw" | NativeMode

/**
 * A statement sent with the driver's own options, by a driver-compatible pool.
 *
 * @since 0.3.0
 */
export interface NativeMode {
  readonly native: unknown
}

/**
 * The normalized result of `QueryMode` `result`.
 *
 * @since 0.1.0
 */
export interface QueryResult {
  readonly rows: ReadonlyArray<any>
  readonly affected: number
  /** The first generated key of an insert, where the engine reports one (MySQL). */
  readonly insertId?: number | undefined
}

/**
 * One open connection of an engine.
 *
 * Aborting a statement, or an interrupted effect, must return at once and
 * cancel the running statement on the server in the background; until that
 * cancel has settled, `settle` says so, and the core runs nothing else on the
 * connection and does not pass it on. So a cancel can never hit another
 * statement. `CancelGate` does this for a driver.
 *
 * @since 0.1.0
 */
export interface DriverConnection {
  /**
   * Sends one statement with native placeholders and calls `done` once with
   * its outcome. `prepared` allows the statement cache; `timeout`
   * (milliseconds) is the hard timeout, after which the outcome is
   * `StatementTimeout` and the statement is cancelled. The function returned
   * aborts: `done` is then never called. Callbacks rather than an effect, so
   * that a pool can hand a finished connection straight to the next caller.
   */
  readonly send: (
    sql: string,
    params: ReadonlyArray<unknown>,
    mode: QueryMode,
    prepared: boolean,
    timeout: number | undefined,
    done: (outcome: Exit.Exit<any, DbError>) => void
  ) => () => void
  /**
   * Runs one statement for many parameter rows in as few round trips as the
   * engine allows (pipelined, or as one multi-statement); returns the
   * affected row count. Absent: the core runs the rows one by one.
   */
  readonly batch?: ((sql: string, rows: ReadonlyArray<ReadonlyArray<unknown>>) => Effect.Effect<number, DbError>) | undefined
  /**
   * Sends `statement` and then `read` (neither with parameters) in one round
   * trip: `read` runs once `statement` went through, and its failure cannot
   * fail `statement`. Fails with `statement`'s error; else succeeds with
   * `read`'s rows, or `undefined` where `read` failed. How a COMMIT and the
   * read of the commit position share one round trip. Absent where the
   * engine cannot keep the two outcomes apart.
   */
  readonly sendThenRead?: ((statement: string, read: string) => Effect.Effect<ReadonlyArray<any> | undefined, DbError>) | undefined
  /**
   * Bulk-loads rows with the engine's bulk load (`sql` is the dialect's
   * `bulkLoad`, naming `columns` in that order; `types` their types as the
   * catalog names them, where the core read them); returns the rows loaded
   * and the keys an INSERT would report, or `undefined` when the driver
   * declined them with nothing written (the core then inserts them with
   * INSERT).
   *
   * With `check`, the rows are not yet checked: the driver calls it on each
   * range of rows (`from`, `to` excluded) before that range goes out, and
   * where it returns an error, fails with it and writes nothing. Checking
   * as the rows go lets the server start on the first of a large load while
   * the rest are checked.
   */
  readonly copyIn?:
    | ((
      sql: string,
      rows: ReadonlyArray<Readonly<Record<string, unknown>>>,
      columns: ReadonlyArray<string>,
      timeout: number | undefined,
      types?: ReadonlyArray<string>,
      check?: (from: number, to: number) => DbError | undefined
    ) => Effect.Effect<Loaded | undefined, DbError>)
    | undefined
  /**
   * Where a transaction's `BEGIN` waits to go out with the next statement (in
   * one flush, or one query): a failed BEGIN fails that statement, which then
   * never runs. A use that is not one statement (a stream, a batch, a COPY)
   * sends it on its own first. Where absent, BEGIN is a round trip of its own.
   */
  readonly heldBegin?: HeldBegin | undefined
  /** Reads a result incrementally, with back-pressure. */
  readonly stream: (sql: string, params: ReadonlyArray<unknown>, chunkSize: number) => Stream.Stream<any, DbError>
  /** A cheap round trip. */
  readonly ping: Effect.Effect<void, DbError>
  /**
   * The transaction state the server last reported: `idle`, `transaction`
   * or `failed` (inside a failed transaction), or `unknown`.
   */
  readonly transactionState: () => "idle" | "transaction" | "failed" | "unknown"
  /** Whether the connection is known to be unusable. */
  readonly isBroken: () => boolean
  /**
   * When an interrupted statement is still being cancelled: waits until the
   * server has let go of it (or the connection was given up as broken).
   * `undefined` when nothing is pending, which is the usual case.
   */
  readonly settle: () => Effect.Effect<void> | undefined
  /** Closes the connection; never fails. */
  readonly close: Effect.Effect<void>
  /** A server-side identifier (backend pid, thread id), for logs and tests. */
  readonly serverId: () => number | undefined
}

/**
 * An engine driver.
 *
 * @since 0.1.0
 */
export interface Driver {
  /** `db.system.name` in OpenTelemetry terms, e.g. `postgresql`. */
  readonly system: string
  readonly dialect: Dialect
  /** Opens one connection. */
  readonly connect: Effect.Effect<DriverConnection, ConnectionError | DbError>
  /** The `@effect/sql` compiler of the engine, for `SqlClient` templates. */
  readonly compiler: Statement.Compiler
  /** Row transform for `SqlClient` results (`transformResultNames`). */
  readonly transformRows?: (<A extends object>(rows: ReadonlyArray<A>) => ReadonlyArray<A>) | undefined
  /** Extra span attributes for `SqlClient` statements. */
  readonly spanAttributes: ReadonlyArray<readonly [string, unknown]>
  /** Hit, miss and eviction counts of the prepared-statement caches of its connections. */
  readonly statementCache: StatementCache.Stats
  /** Releases what the driver holds beyond its connections (an embedded database), after the pool closed. */
  readonly shutdown?: Effect.Effect<void> | undefined
  /** Commit and replay positions, for read/write splitting over replicas; absent where the engine has none. */
  readonly replication?: Replication | undefined
  /**
   * The latest commit position the server reported with its replies on this
   * driver's connections, merged over them (MariaDB sends `last_gtid` with
   * every commit once the session tracks it); `undefined` before any. A
   * write's position is then known as soon as its reply is in, and
   * read-your-writes needs no read of the primary's position.
   */
  readonly committedPosition?: (() => string | undefined) | undefined
  /** With several hosts: the `host:port` write connections last landed on, the primary as last seen. */
  readonly primaryHost?: (() => string | undefined) | undefined
}

/**
 * `DriverConnection.send` as an effect; interrupting it aborts the statement.
 *
 * @since 0.1.0
 */
export const query = (
  conn: DriverConnection,
  sql: string,
  params: ReadonlyArray<unknown>,
  mode: QueryMode,
  prepared: boolean,
  timeout?: number | undefined
): Effect.Effect<any, DbError> =>
  Effect.suspend(() => fromSend<any, DbError>((done) => conn.send(sql, params, mode, prepared, timeout, done)))

/**
 * What a bulk load (`DriverConnection.copyIn`) wrote: the rows, and the keys
 * generated for them, in row order, where the engine reports them as it does
 * for an INSERT.
 *
 * @since 0.3.0
 */
export interface Loaded {
  readonly inserted: number
  readonly keys: ReadonlyArray<unknown>
}

/**
 * A transaction's BEGIN held back for the next statement (a connection's
 * `heldBegin`): the statement takes it to send with itself; a use that is
 * not one statement sends it on its own first.
 *
 * @since 0.3.0
 */
export class HeldBegin {
  private sql: string | undefined = undefined
  private count = 1

  constructor(
    /**
     * Whether a BEGIN of several statements (MySQL's `SET TRANSACTION …` and
     * `START TRANSACTION`) may be held, as one text joined by `;\n`: the
     * driver sends it as a multi-statement query.
     */
    readonly severalStatements = false
  ) {}

  /** Holds `sql`, the transaction's BEGIN, of `statements` statements. */
  hold(sql: string, statements = 1): void {
    this.sql = sql
    this.count = statements
  }

  /** How many statements the BEGIN held (or last taken) has. */
  get statements(): number {
    return this.count
  }

  /** Forgets it; `true` when one was held, whose transaction never began on the server. */
  drop(): boolean {
    const had = this.sql !== undefined
    this.sql = undefined
    return had
  }

  /** Whether one is held. */
  get held(): boolean {
    return this.sql !== undefined
  }

  /** Takes it, to send with a statement now; `undefined` when none is held. */
  take(): string | undefined {
    const sql = this.sql
    this.sql = undefined
    return sql
  }

  /** Sends it on its own on `conn`, if one is held. */
  sendAlone(conn: DriverConnection): Effect.Effect<void, DbError> {
    return Effect.suspend(() => {
      const begin = this.take()
      return begin === undefined ? Effect.void : Effect.asVoid(query(conn, begin, [], "raw", false))
    })
  }
}

/**
 * A connection's socket writes held until the end of the event loop's turn
 * and sent then as one buffer, as postgres.js does: the statements that one
 * turn's results let callers issue go out together, after the client's work
 * for that turn. Each write wakes the server's session, which on a machine of
 * few cores then takes the client's core in the middle of its turn (on 2
 * cores, a pg point select cost the client's main thread 85–116 µs written at
 * once, 61–78 µs held to the turn's end). A driver calls `hold` in place of
 * its socket write, and `flush` before any write it does not hold, so that
 * order holds.
 *
 * @since 0.3.0
 */
export class TurnWrites {
  private chunks: Array<Uint8Array> = []
  private size = 0
  /** In the list flushed at the end of this turn (still, after a flush of more than 64 KB within it). */
  private due = false

  constructor(
    /** The socket's write of one buffer; false when it asks the writer to wait for `drain`. */
    private readonly send: (chunk: Uint8Array) => boolean,
    /** Whether the socket still takes writes: one ended or destroyed fails its queries with the connection. */
    private readonly writable: () => boolean
  ) {}

  /** Holds `chunk`; true, or the socket's answer when what is held passed 64 KB and went out at once. */
  hold(chunk: Uint8Array): boolean {
    this.chunks.push(chunk)
    this.size += chunk.length
    if (this.size > TURN_WRITES_MAX) return this.flush()
    if (!this.due) {
      this.due = true
      TurnWrites.dueNow.push(this)
      if (TurnWrites.dueNow.length === 1) setImmediate(TurnWrites.endTurn)
    }
    return true
  }

  /** The connections holding writes until the end of this turn. */
  private static dueNow: Array<TurnWrites> = []
  private static readonly endTurn = (): void => {
    const now = TurnWrites.dueNow
    TurnWrites.dueNow = []
    for (const writes of now) {
      writes.due = false
      writes.flush()
    }
  }

  /**
   * Writes what is held: as one buffer up to 64 KB; past that (a batch's
   * arrays, a COPY's rows) each as it is, since copying would cost more than
   * the writes.
   */
  flush(): boolean {
    const chunks = this.chunks
    const size = this.size
    this.chunks = []
    this.size = 0
    if (chunks.length === 0 || !this.writable()) return true
    if (chunks.length === 1) return this.send(chunks[0]!)
    if (size <= TURN_WRITES_MAX) return this.send(Buffer.concat(chunks, size))
    let ok = true
    for (const chunk of chunks) ok = this.send(chunk)
    return ok
  }
}

const TURN_WRITES_MAX = 64 * 1024

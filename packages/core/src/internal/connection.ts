import type * as SqlConnection from "@effect/sql/SqlConnection"
import { SqlError } from "@effect/sql/SqlError"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import type * as Cause from "effect/Cause"
import * as Stream from "effect/Stream"
import type { DbError } from "../DbError.js"
import type { Keys } from "../Invalidation.js"
import type { DriverConnection, Loaded, QueryMode, QueryResult } from "../Driver.js"
import { InvalidQuery } from "../DbError.js"
import { changesSessionState, unbindableParameter } from "../PortableSql.js"
import { fromSend } from "./abortable.js"
import type { QueryTags } from "../QueryTags.js"
import { currentTags } from "../QueryTags.js"

/** @internal */
export const toSqlError = (error: DbError): SqlError => new SqlError({ cause: error, message: error.message })

type TransformRows = (<A extends object>(rows: ReadonlyArray<A>) => ReadonlyArray<A>) | undefined

/**
 * A pooled connection. It is also an `@effect/sql` `Connection`, so that the
 * `SqlClient` adapter and `SqlClient.TransactionConnection` can hold it
 * directly; `owner` is the config hash of the pool it belongs to.
 *
 * @internal
 */
/** What the `Db` around a connection wants to see of each statement. @internal */
export interface StatementHooks {
  /** Checks a statement before it is sent; `undefined` lets it through. */
  readonly guard: ((sql: string, conn: DriverConnection) => Effect.Effect<void, DbError> | undefined) | undefined
  /** Sees every statement's outcome and duration (breaker, slow-query log, metrics); may return a log to run. */
  readonly observe: (
    sql: string,
    failure: Cause.Cause<DbError> | undefined,
    millis: number,
    tags: QueryTags | undefined
  ) => Effect.Effect<void> | undefined
  /** Whether `observe` wants the current tags (reading them costs a little). */
  readonly wantsTags: boolean
}

/** The deadline of the transaction a connection is in, and the error to fail with past it. @internal */
export interface TransactionDeadline {
  readonly at: number
  readonly error: () => DbError
}

export class DalConnection implements SqlConnection.Connection {
  /** Set once a statement changed session state: the connection is then closed on return, never reused. */
  sessionDirty = false
  /**
   * While a transaction with a timeout runs on this connection, every
   * statement on it (whichever API sent it) is cut at the transaction's deadline.
   */
  txDeadline: TransactionDeadline | undefined = undefined
  /** Invalidation keys of the open transaction's writes, announced at its COMMIT. */
  pendingInvalidations: Array<Keys> | undefined = undefined

  constructor(
    readonly driver: DriverConnection,
    readonly owner: string,
    private readonly hooks: StatementHooks
  ) {}

  run(
    sql: string,
    params: ReadonlyArray<unknown>,
    mode: QueryMode,
    prepared = true,
    timeout?: number
  ): Effect.Effect<any, DbError> {
    const tx = this.txDeadline
    if (tx === undefined) return this.prefixed(sql, this.statement(sql, params, mode, prepared, timeout))
    const remaining = tx.at - Date.now()
    if (remaining <= 0) return Effect.fail(tx.error())
    if (timeout !== undefined && timeout <= remaining) {
      return this.prefixed(sql, this.statement(sql, params, mode, prepared, timeout))
    }
    return Effect.catchTag(
      this.prefixed(sql, this.statement(sql, params, mode, prepared, remaining)),
      "StatementTimeout",
      () => Effect.fail(tx.error())
    )
  }

  /** `send` as an effect: one `Effect.async`, the outcome observed in the driver's callback. */
  private statement(
    sql: string,
    params: ReadonlyArray<unknown>,
    mode: QueryMode,
    prepared: boolean,
    timeout: number | undefined
  ): Effect.Effect<any, DbError> {
    return Effect.withFiberRuntime((fiber) => {
      const tags = this.hooks.wantsTags ? fiber.getFiberRef(currentTags) : undefined
      return fromSend<any, DbError>((done) => this.send(sql, params, mode, prepared, timeout, tags, done))
    })
  }

  /**
   * `run` in callbacks, without what `run` adds around it: the DDL guard, the
   * settling of a cancelled statement and the transaction deadline. A
   * connection fresh from the pool needs none of them (the pool settles
   * connections and rolls back transactions before it lends them). `done`
   * gets the outcome, with the slow-query log to run first if any. The
   * function returned aborts.
   */
  send(
    sql: string,
    params: ReadonlyArray<unknown>,
    mode: QueryMode,
    prepared: boolean,
    timeout: number | undefined,
    tags: QueryTags | undefined,
    done: (outcome: Effect.Effect<any, DbError>) => void
  ): () => void {
    if (!this.sessionDirty && changesSessionState(sql)) this.sessionDirty = true
    const observe = this.hooks.observe
    const start = performance.now()
    return this.driver.send(sql, params, mode, prepared, timeout, (outcome) => {
      const log = observe(sql, outcome._tag === "Failure" ? outcome.cause : undefined, performance.now() - start, tags)
      done(log === undefined ? outcome : Effect.zipRight(log, outcome))
    })
  }

  /** One statement for many parameter rows, in as few round trips as the driver allows; the affected count. */
  batch(sql: string, rows: ReadonlyArray<ReadonlyArray<unknown>>): Effect.Effect<number, DbError> {
    const driver = this.driver
    if (driver.batch === undefined) {
      return Effect.reduce(rows, 0, (sum, row) =>
        Effect.map(this.run(sql, row, "result") as Effect.Effect<QueryResult, DbError>, (r) => sum + r.affected))
    }
    return this.guarded(sql, () => driver.batch!(sql, rows))
  }

  /** Bulk-loads rows with the driver's bulk load, observed like a statement; `undefined`: declined. */
  copyIn(
    sql: string,
    rows: ReadonlyArray<Readonly<Record<string, unknown>>>,
    columns: ReadonlyArray<string>,
    timeout: number | undefined,
    types?: ReadonlyArray<string>,
    check?: (from: number, to: number) => DbError | undefined
  ): Effect.Effect<Loaded | undefined, DbError> {
    return this.guarded(sql, () => this.driver.copyIn!(sql, rows, columns, timeout, types, check))
  }

  /** `statement` and `read` in one round trip, observed as `statement`; see `DriverConnection.sendThenRead`. */
  sendThenRead(statement: string, read: string): Effect.Effect<ReadonlyArray<any> | undefined, DbError> {
    return this.guarded(statement, () => this.driver.sendThenRead!(statement, read))
  }

  /** Reads a result incrementally on this connection. */
  stream(sql: string, params: ReadonlyArray<unknown>, chunkSize: number): Stream.Stream<any, DbError> {
    const settle = this.driver.settle()
    const stream = this.driver.stream(sql, params, chunkSize)
    return settle === undefined ? stream : Stream.unwrap(Effect.as(settle, stream))
  }

  /** Observes a statement that runs as an effect (a batch): the breaker, metrics and slow-query log see it. */
  private guarded<A>(sql: string, send: () => Effect.Effect<A, DbError>): Effect.Effect<A, DbError> {
    if (!this.sessionDirty && changesSessionState(sql)) this.sessionDirty = true
    const observe = this.hooks.observe
    const wantsTags = this.hooks.wantsTags
    const query: Effect.Effect<A, DbError> = Effect.withFiberRuntime((fiber) => {
      const tags = wantsTags ? fiber.getFiberRef(currentTags) : undefined
      const start = performance.now()
      return Effect.matchCauseEffect(send(), {
        onFailure: (cause) => {
          const log = observe(sql, cause, performance.now() - start, tags)
          return log === undefined ? Effect.failCause(cause) : Effect.zipRight(log, Effect.failCause(cause))
        },
        onSuccess: (a) => {
          const log = observe(sql, undefined, performance.now() - start, tags)
          return log === undefined ? Effect.succeed(a) : Effect.as(log, a)
        }
      })
    })
    return this.prefixed(sql, query)
  }

  /** The DDL guard, and a cancelled statement's settling, go before anything else on the connection. */
  private prefixed<A>(sql: string, query: Effect.Effect<A, DbError>): Effect.Effect<A, DbError> {
    const check = this.hooks.guard === undefined ? undefined : this.hooks.guard(sql, this.driver)
    const settle = this.driver.settle()
    if (check !== undefined) query = Effect.zipRight(check, query)
    return settle === undefined ? query : Effect.zipRight(settle, query)
  }

  private runSql(sql: string, params: ReadonlyArray<unknown>, mode: QueryMode, prepared: boolean) {
    // `sql` templates get the same parameter rule as `Db.execute`
    const unbindable = unbindableParameter(params)
    if (unbindable !== undefined) {
      return Effect.fail(toSqlError(new InvalidQuery({ reason: "invalidParameter", detail: unbindable, sql })))
    }
    return Effect.mapError(this.run(sql, params, mode, prepared), toSqlError)
  }

  execute(sql: string, params: ReadonlyArray<unknown>, transformRows: TransformRows) {
    const run = this.runSql(sql, params, "rows", true)
    return transformRows === undefined ? run : Effect.map(run, transformRows)
  }

  executeRaw(sql: string, params: ReadonlyArray<unknown>) {
    return this.runSql(sql, params, "raw", true)
  }

  executeValues(sql: string, params: ReadonlyArray<unknown>) {
    return this.runSql(sql, params, "values", true)
  }

  executeUnprepared(sql: string, params: ReadonlyArray<unknown>, transformRows: TransformRows) {
    const run = this.runSql(sql, params, "rows", false)
    return transformRows === undefined ? run : Effect.map(run, transformRows)
  }

  executeStream(sql: string, params: ReadonlyArray<unknown>, transformRows: TransformRows) {
    const stream = Stream.mapError(this.driver.stream(sql, params, 128), toSqlError)
    return transformRows === undefined
      ? stream
      : Stream.mapChunks(stream, (chunk) => {
        const rows = transformRows(Array.from(chunk) as Array<object>)
        return Chunk.unsafeFromArray(rows as Array<any>)
      })
  }
}

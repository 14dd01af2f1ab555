import type { DbError } from "@effect-dal/core"
import { DbError as DbErrors, Dialect, Driver, StatementCache } from "@effect-dal/core"
import { classify } from "@effect-dal/pg/PgErrors"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as Statement from "@effect/sql/Statement"
import type { PGliteOptions, Results } from "@electric-sql/pglite"
import { PGlite, types } from "@electric-sql/pglite"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"

/** @internal */
export interface PgliteDriverOptions {
  /** Where the database lives: a directory, `idb://…` in a browser, or in memory when omitted. */
  readonly dataDir?: string | undefined
  /** Extra PGlite options (extensions, `relaxedDurability`, …). */
  readonly pglite?: Omit<PGliteOptions, "dataDir"> | undefined
  readonly transformQueryNames?: ((name: string) => string) | undefined
  readonly transformResultNames?: ((name: string) => string) | undefined
  readonly transformJson?: boolean | undefined
  readonly spanAttributes?: Record<string, unknown> | undefined
}

let cursors = 0

class PgliteConnection implements Driver.DriverConnection {
  constructor(readonly db: PGlite) {}

  private run(sql: string, params: ReadonlyArray<unknown>, mode: Driver.QueryMode) {
    // statements without parameters go through exec, which also runs several statements at once
    return params.length === 0 && mode !== "values"
      ? this.db.exec(sql)
      : this.db.query(sql, params as Array<unknown>, { rowMode: mode === "values" ? "array" : "object" }).then((r) => [
        r as Results
      ])
  }

  send(
    sql: string,
    params: ReadonlyArray<unknown>,
    mode: Driver.QueryMode,
    _prepared: boolean,
    timeout: number | undefined,
    done: (outcome: Exit.Exit<any, DbError.DbError>) => void
  ) {
    // PGlite runs one statement at a time in-process and cannot cancel one: a timed-out or
    // aborted caller returns at once, and the next statement queues behind the running one
    let finished = false
    const timer = timeout === undefined ? undefined : setTimeout(() => {
      finished = true
      done(Exit.fail(new DbErrors.StatementTimeout({ kind: "statement", timeoutMillis: timeout, sql })))
    }, timeout)
    const settle = (outcome: Exit.Exit<any, DbError.DbError>) => {
      if (timer !== undefined) clearTimeout(timer)
      if (finished) return
      finished = true
      done(outcome)
    }
    this.run(sql, params, mode).then(
      (results) => settle(Exit.succeed(shape(results, mode))),
      (err) => settle(Exit.fail(classify(err, sql, "query")))
    )
    return () => {
      if (timer !== undefined) clearTimeout(timer)
      finished = true
    }
  }

  private query(sql: string, params: ReadonlyArray<unknown>, mode: Driver.QueryMode): Effect.Effect<any, DbError.DbError> {
    return Driver.query(this, sql, params, mode, false)
  }

  stream(sql: string, params: ReadonlyArray<unknown>, chunkSize: number): Stream.Stream<any, DbError.DbError> {
    const name = `dal_cursor_${++cursors}`
    const exec = (statement: string, values: ReadonlyArray<unknown> = []) => this.query(statement, values, "rows")
    const db = this.db
    return Stream.unwrapScoped(Effect.gen(function*() {
      const ownTransaction = !db.isInTransaction()
      if (ownTransaction) yield* exec("BEGIN")
      yield* Effect.addFinalizer(() =>
        Effect.ignore(ownTransaction ? exec("ROLLBACK") : exec(`CLOSE ${name}`))
      )
      yield* exec(`DECLARE ${name} NO SCROLL CURSOR FOR ${sql}`, params)
      const fetch = Effect.flatMap(
        Effect.mapError(exec(`FETCH ${chunkSize} FROM ${name}`), Option.some),
        (rows: Array<any>) => rows.length === 0 ? Effect.fail(Option.none()) : Effect.succeed(Chunk.unsafeFromArray(rows))
      )
      return Stream.repeatEffectChunkOption(fetch)
    }))
  }

  /** Nothing is ever cancelled: PGlite itself queues the next statement behind a running one. */
  settle() {
    return undefined
  }

  get ping() {
    return Effect.asVoid(this.query("SELECT 1", [], "raw"))
  }

  transactionState() {
    return this.db.isInTransaction() ? "transaction" as const : "idle" as const
  }

  isBroken() {
    return this.db.closed
  }

  serverId() {
    return undefined
  }

  /** The database outlives its connection: it closes with the pool (`shutdown`). */
  readonly close = Effect.void
}

const shape = (results: Array<Results>, mode: Driver.QueryMode): unknown => {
  // PGlite's own results are what a native caller gets too
  if (typeof mode === "object") return results.length === 1 ? results[0] : results
  switch (mode) {
    case "raw":
      return results.length === 1 ? results[0] : results
    case "result":
      return {
        rows: results.flatMap((r) => r.rows),
        affected: results.reduce((n, r) => n + (r.affectedRows ?? 0), 0)
      }
    default:
      // a multi-statement query returns each result set in order
      return results.length === 1 ? results[0]!.rows : results.length === 0 ? [] : results.map((r) => r.rows)
  }
}

/** @internal */
export const makeDriver = (options: PgliteDriverOptions): Driver.Driver => {
  let instance: Promise<PGlite> | undefined
  const open = () =>
    PGlite.create(options.dataDir, {
      ...options.pglite,
      // int8 as a string, as the pg driver returns it: exact, and JSON-safe
      parsers: { [types.INT8]: (value: string) => value, ...options.pglite?.parsers }
    })
  const connect = Effect.tryPromise({
    try: () => (instance ??= open()),
    catch: (cause) => {
      instance = undefined
      return classify(cause, undefined, "connect")
    }
  }).pipe(Effect.map((db) => new PgliteConnection(db) as Driver.DriverConnection))
  const shutdown = Effect.promise(async () => {
    const db = await instance?.catch(() => undefined)
    instance = undefined
    if (db !== undefined && !db.closed) await db.close()
  })
  return {
    system: "postgresql",
    dialect: Dialect.postgres,
    connect,
    // PGlite runs in-process: no round trip to save, so no prepared-statement cache
    statementCache: StatementCache.makeStats(),
    compiler: PgClient.makeCompiler(options.transformQueryNames, options.transformJson),
    transformRows: options.transformResultNames
      ? Statement.defaultTransforms(options.transformResultNames, options.transformJson).array
      : undefined,
    spanAttributes: options.spanAttributes ? Object.entries(options.spanAttributes) : [],
    shutdown
  }
}

/**
 * Batches and streams: one statement for many parameter rows
 * (`executeMany`), multi-row INSERTs cut by count and size (`insertMany`),
 * and large results read with back-pressure (`stream`).
 *
 * @internal
 */
import type { Row } from "@effect/sql/SqlConnection"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import type { DbService, ExecuteOptions, InsertManyOptions, InsertManyResult, StreamOptions } from "../Db.js"
import type { DbError } from "../DbError.js"
import { InvalidQuery, StatementTimeout } from "../DbError.js"
import type { Dialect } from "../Dialect.js"
import { quoteIdentifier } from "../Dialect.js"
import type { QueryResult } from "../Driver.js"
import type { Translated } from "../PortableSql.js"
import { unbindableParameter } from "../PortableSql.js"
import type { DalConnection } from "./connection.js"
import type { DbCore } from "./core.js"
import { identity, noParams } from "./core.js"
import type { Statements } from "./statements.js"
import type { Transactions } from "./transactions.js"

const insertTexts = new Map<string, string>()

/**
 * The text of a multi-row INSERT, kept for the shapes last used (64 of them):
 * building 10,000 tuples of placeholders takes about 2 ms.
 */
const insertText = (dialect: Dialect, head: string, columns: number, count: number, returning: string): string => {
  const key = `${dialect.name}\u0000${count}\u0000${returning}\u0000${head}`
  const hit = insertTexts.get(key)
  if (hit !== undefined) return hit
  const tuples: Array<string> = []
  let n = 0
  for (let r = 0; r < count; r++) {
    const slots: Array<string> = []
    for (let c = 0; c < columns; c++) slots.push(dialect.placeholder(++n))
    tuples.push(`(${slots.join(", ")})`)
  }
  const text = head + tuples.join(", ") + returning
  if (insertTexts.size >= 64) insertTexts.delete(insertTexts.keys().next().value!)
  insertTexts.set(key, text)
  return text
}

const sameColumns = (columns: ReadonlyArray<string>) =>
  new InvalidQuery({
    reason: "invalidArgument",
    detail: `every row must have the same columns (${columns.join(", ")})`,
    sql: undefined
  })

/**
 * One pass over `insertMany`'s values, allocating nothing per row: their
 * shape and bindability, and the size of their text and bytes; or what is
 * wrong with them. A function of the module rather than of each call: V8
 * compiles the loop once, where a closure made per call was compiled again
 * (on the stack, ~10 ms) after every full collection.
 */
const measureRows = (
  rows: ReadonlyArray<Readonly<Record<string, unknown>>>,
  columns: ReadonlyArray<string>,
  from = 0,
  to = rows.length
): number | InvalidQuery => {
  let bytes = 0
  for (let r = from; r < to; r++) {
    const row = rows[r]!
    let count = 0
    for (const _ in row) count++
    if (count !== columns.length) return sameColumns(columns)
    for (let c = 0; c < columns.length; c++) {
      const v = row[columns[c]!]
      const type = typeof v
      if (type === "string") bytes += (v as string).length
      else if (type === "object") {
        if (v instanceof Uint8Array) bytes += v.byteLength
      } else if (type === "undefined" || type === "function" || type === "symbol") {
        // a column of another name reads as undefined: the same count, other columns
        if (!(columns[c]! in row)) return sameColumns(columns)
        const unbindable = unbindableParameter(columns.map((name) => row[name]))!
        return new InvalidQuery({ reason: "invalidParameter", detail: `row ${r + 1}: ${unbindable}`, sql: undefined })
      }
    }
  }
  return bytes
}

/** How one statement of `insertMany` is written and what it sends. */
interface Shape {
  readonly perChunk: number
  readonly sqlOf: (chunk: ReadonlyArray<Readonly<Record<string, unknown>>>) => string
  readonly paramsOf: (chunk: ReadonlyArray<Readonly<Record<string, unknown>>>) => ReadonlyArray<unknown>
  /** A text reused across calls goes through the statement cache; one-off texts do not. */
  readonly prepared: boolean
}

/** Rows from which `insertMany` loads with COPY where the driver has it (see the README's figures). */
const COPY_THRESHOLD = 3_000

/** About how much text and bytes one INSERT statement of `insertMany` may carry. */
const CHUNK_BYTES = 4 * 1024 * 1024

/** Cuts rows into statements of at most `perChunk` rows and about `CHUNK_BYTES` of values. */
const chunkRows = <R extends Readonly<Record<string, unknown>>>(
  rows: ReadonlyArray<R>,
  columns: ReadonlyArray<string>,
  perChunk: number
): Array<ReadonlyArray<R>> => {
  const chunks: Array<ReadonlyArray<R>> = []
  let start = 0
  let bytes = 0
  for (let i = 0; i < rows.length; i++) {
    let size = 0
    for (const column of columns) {
      const v = rows[i]![column]
      if (typeof v === "string") size += v.length
      else if (v instanceof Uint8Array) size += v.byteLength
    }
    if (i > start && (i - start >= perChunk || bytes + size > CHUNK_BYTES)) {
      chunks.push(rows.slice(start, i))
      start = i
      bytes = 0
    }
    bytes += size
  }
  chunks.push(rows.slice(start))
  return chunks
}

/**
 * The batch and stream operations of one database.
 *
 * @internal
 */
export interface Batches extends Pick<DbService, "insertMany" | "stream"> {
  /** `executeMany` on `conn` (a transaction's), or in a transaction of its own when `undefined`. */
  readonly executeManyOn: (conn: DalConnection | undefined) => DbService["executeMany"]
}

/**
 * Builds the batch and stream operations.
 *
 * @internal
 */
export const makeBatches = (core: DbCore, statements: Statements, transactions: Transactions): Batches => {
  const { acquire, breaker, currentTx, dialect, invalidator, pool, prepare, statementTimeout, tagged, taggedHere } = core
  const { autocommit } = statements
  const runTransaction = transactions.run

  /** A hard timeout around a whole batch (executeMany, insertMany); single statements use driver deadlines. */
  const withTimeout = <A, E, R>(
    effect: Effect.Effect<A, E, R>,
    millis: number | undefined,
    sql: string | undefined
  ): Effect.Effect<A, E | StatementTimeout, R> =>
    millis === undefined ? effect : Effect.timeoutFail(effect, {
      duration: millis,
      onTimeout: () => {
        breaker?.record(true, millis)
        return new StatementTimeout({ kind: "statement", timeoutMillis: millis, sql })
      }
    })

  const executeManyOn = (conn: DalConnection | undefined) =>
  (
    sql: string,
    rows: ReadonlyArray<ReadonlyArray<unknown>>,
    options?: ExecuteOptions
  ): Effect.Effect<number, DbError> =>
    Effect.suspend(() => {
      if (rows.length === 0) return Effect.succeed(0)
      let translated: Translated | undefined
      for (const row of rows) {
        const t = prepare(sql, row)
        if (t instanceof InvalidQuery) return Effect.fail(t)
        translated = t
      }
      const nativeSql = translated!.sql
      const body = Effect.withFiberRuntime<number, DbError>((fiber) =>
        (conn ?? currentTx(fiber.currentContext)![0]).batch(nativeSql, rows)
      )
      return invalidator.around(
        taggedHere(withTimeout(runTransaction(body, {}, identity), statementTimeout(options), sql), options, nativeSql),
        options?.invalidates
      )
    })

  const insertMany = (
    table: string,
    objects: ReadonlyArray<object>,
    options?: InsertManyOptions
  ): Effect.Effect<InsertManyResult, DbError> =>
    invalidator.around(Effect.suspend(() => {
      // an interface's rows have no index signature; their keys are checked below like any others
      const rows = objects as ReadonlyArray<Readonly<Record<string, unknown>>>
      if (rows.length === 0) return Effect.succeed({ inserted: 0, keys: [] })
      const columns = Object.keys(rows[0]!)
      if (columns.length === 0) {
        return Effect.fail(new InvalidQuery({ reason: "invalidArgument", detail: "rows have no columns", sql: undefined }))
      }
      // checked where they are sent: a bulk load checks them as they go out, the rest before
      let measured: number | InvalidQuery | undefined
      const measure = () => (measured ??= measureRows(rows, columns))
      const quotedTable = quoteIdentifier(dialect, table)
      const head = `INSERT INTO ${quotedTable} (${columns.map((c) => quoteIdentifier(dialect, c)).join(", ")})`
      const conflict = options?.onConflict
      const returning = (conflict === undefined ? "" : dialect.onConflict(
        conflict.keys.map((k) => quoteIdentifier(dialect, k)),
        conflict.action === "update"
          ? columns.filter((c) => !conflict.keys.includes(c)).map((c) => quoteIdentifier(dialect, c))
          : undefined
      )) + (options?.returning !== undefined && dialect.name === "pg"
        ? ` RETURNING ${quoteIdentifier(dialect, options.returning)}`
        : "")
      const chunkSize = options?.chunkSize ?? 10_000
      // rows as multi-row VALUES: as many rows per statement as the engine's parameter limit allows
      const values: Shape = {
        perChunk: Math.max(1, Math.min(chunkSize, Math.floor(dialect.maxParameters / columns.length))),
        sqlOf: (chunk) => insertText(dialect, `${head} VALUES `, columns.length, chunk.length, returning),
        paramsOf: (chunk) => {
          const params: Array<unknown> = []
          for (const row of chunk) for (const column of columns) params.push(row[column])
          return params
        },
        prepared: false
      }
      const arrays = (types: ReadonlyArray<{ readonly type: string; readonly json: boolean }>): Shape => {
        // one text per table and columns: a prepared statement like any other
        const sql = dialect.arrayInsert!.insert(head, types.map((t) => t.type)) + returning
        return {
          perChunk: Math.max(1, chunkSize),
          sqlOf: () => sql,
          paramsOf: (chunk) =>
            columns.map((column, c) =>
              types[c]!.json
                ? chunk.map((row) => {
                  const v = row[column]
                  return v === null || typeof v === "string" ? v : JSON.stringify(v)
                })
                : chunk.map((row) => row[column])
            ),
          prepared: true
        }
      }
      const run = (shape: Shape): Effect.Effect<InsertManyResult, DbError> => {
        const bytes = measure()
        if (bytes instanceof InvalidQuery) return Effect.fail(bytes)
        // most batches fit one statement: no need to look at each row again
        const chunks = rows.length <= shape.perChunk && bytes <= CHUNK_BYTES ? [rows] : chunkRows(rows, columns, shape.perChunk)
        const keys: Array<unknown> = []
        let inserted = 0
        const collect = (r: QueryResult): void => {
          inserted += r.affected
          if (options?.returning !== undefined && dialect.name === "pg") for (const row of r.rows) keys.push(row[options.returning])
          else if (r.insertId !== undefined && r.insertId > 0) {
            for (let k = 0; k < r.affected; k++) keys.push(r.insertId + k)
          }
        }
        const result = (): InsertManyResult => ({ inserted, keys })
        if (chunks.length === 1) {
          // one statement is atomic by itself: no BEGIN and COMMIT around it
          const sql = shape.sqlOf(chunks[0]!)
          const params = shape.paramsOf(chunks[0]!)
          return Effect.withFiberRuntime<InsertManyResult, DbError>((fiber) => {
            const tx = currentTx(fiber.currentContext)
            const timeout = statementTimeout(options)
            const sent = tx === undefined
              ? autocommit(fiber, sql, params, options, timeout, "result", shape.prepared)
              : tx[0].run(sql, params, "result", shape.prepared, timeout)
            return tagged(fiber, Effect.map(sent as Effect.Effect<QueryResult, DbError>, (r) => {
              collect(r)
              return result()
            }), options, head)
          })
        }
        const body = Effect.withFiberRuntime<InsertManyResult, DbError>((fiber) => {
          const c = currentTx(fiber.currentContext)![0]
          return Effect.map(
            Effect.forEach(chunks, (chunk) =>
              Effect.map(
                c.run(shape.sqlOf(chunk), shape.paramsOf(chunk), "result", shape.prepared) as Effect.Effect<QueryResult, DbError>,
                collect
              ), { discard: true }),
            result
          )
        })
        return taggedHere(
          withTimeout(runTransaction(body, {}, identity), statementTimeout(options), head),
          options,
          head
        )
      }
      /**
       * A bulk load with the driver's COPY or LOAD DATA; where the driver has none or declines the rows,
       * `otherwise`, which is suspended: its statement text and parameters are as large as the rows.
       */
      const copy = (
        types: ReadonlyArray<{ readonly type: string; readonly json: boolean }> | undefined,
        otherwise: Effect.Effect<InsertManyResult, DbError>
      ) => {
        const sql = dialect.bulkLoad!(quotedTable, columns.map((c) => quoteIdentifier(dialect, c)))
        const json = types === undefined ? [] : columns.filter((_, c) => types[c]!.json)
        // JSON columns go as JSON text (a JavaScript array would otherwise read as a PostgreSQL array)
        const loaded = () =>
          json.length === 0 ? rows : rows.map((row) => {
            const copy: Record<string, unknown> = { ...row }
            for (const column of json) {
              const v = row[column]
              if (v !== null && typeof v !== "string") copy[column] = JSON.stringify(v)
            }
            return copy
          })
        const timeout = statementTimeout(options)
        const typeNames = types?.map((t) => t.type)
        const loadedOr = (loaded: InsertManyResult | undefined): Effect.Effect<InsertManyResult, DbError> =>
          loaded === undefined ? otherwise : Effect.succeed(loaded)
        /** The rows checked range by range, as the driver sends them. */
        const check = (from: number, to: number) => {
          const checked = measureRows(rows, columns, from, to)
          return checked instanceof InvalidQuery ? checked : undefined
        }
        return Effect.withFiberRuntime<InsertManyResult, DbError>((fiber) => {
          // JSON values are copied before the load (`loaded`): their rows are checked first
          if (json.length > 0) {
            const bytes = measure()
            if (bytes instanceof InvalidQuery) return Effect.fail(bytes)
          }
          // the driver checks the rows where it sends them (see `DriverConnection.copyIn`)
          const checking = measured === undefined ? check : undefined
          const tx = currentTx(fiber.currentContext)
          if (tx !== undefined) {
            return tx[0].driver.copyIn === undefined
              ? otherwise
              : Effect.flatMap(tagged(fiber, tx[0].copyIn(sql, loaded(), columns, timeout, typeNames, checking), options, sql), loadedOr)
          }
          // a bulk load is atomic by itself, like one INSERT
          return Effect.flatMap(acquire, (lease) =>
            lease.conn.driver.copyIn === undefined
              ? Effect.zipRight(pool.release(lease), otherwise)
              : Effect.flatMap(
                tagged(
                  fiber,
                  Effect.ensuring(
                    lease.conn.copyIn(sql, loaded(), columns, timeout, typeNames, checking),
                    pool.release(lease)
                  ),
                  options,
                  sql
                ),
                loadedOr
              ))
        })
      }
      const bulk = dialect.bulkLoad !== undefined && conflict === undefined && options?.returning === undefined &&
        rows.length >= Math.max(2, options?.copyThreshold ?? COPY_THRESHOLD)
      if (!bulk) {
        // bad rows refused before the catalog is asked about their table
        const bytes = measure()
        if (bytes instanceof InvalidQuery) return Effect.fail(bytes)
      }
      if (dialect.arrayInsert === undefined) return bulk ? copy(undefined, Effect.suspend(() => run(values))) : run(values)
      if (rows.length < 2) return run(values)
      return Effect.flatMap(arrayTypes(quotedTable, columns), (types) =>
        types === undefined
          ? run(values)
          // a table altered since its columns were read: read them again next time
          : Effect.tapError(
            bulk ? copy(types, Effect.suspend(() => run(arrays(types)))) : run(arrays(types)),
            (error) => Effect.sync(() => error._tag === "InvalidQuery" || catalog.delete(quotedTable))
          ))
    }), options?.invalidates)

  /** Each table's columns, read once from the catalog (again when a column is not known yet). */
  const catalog = new Map<string, ReadonlyMap<string, { readonly type: string; readonly array: boolean }>>()
  const readColumns = (quotedTable: string) =>
    Effect.withFiberRuntime<ReadonlyMap<string, { readonly type: string; readonly array: boolean }> | undefined>((fiber) => {
      // inside a transaction, on its connection: the table may be the transaction's own
      const tx = currentTx(fiber.currentContext)
      const sql = dialect.arrayInsert!.columnsSql
      const read = tx === undefined
        ? autocommit(fiber, sql, [quotedTable], undefined, undefined, "rows", true)
        : tx[0].run(sql, [quotedTable], "rows", true)
      return Effect.match(read as Effect.Effect<ReadonlyArray<{ name: string; type: string; array: boolean }>, DbError>, {
        // not a table we can read: the rows go as VALUES, which reports what is wrong
        onFailure: () => undefined,
        onSuccess: (rows) => {
          const columns = new Map(rows.map((r) => [r.name, { type: r.type, array: r.array }]))
          catalog.set(quotedTable, columns)
          return columns
        }
      })
    })
  /** The array types of `columns`, or `undefined` when the rows must go as VALUES. */
  const arrayTypes = (quotedTable: string, columns: ReadonlyArray<string>) => {
    const known = catalog.get(quotedTable)
    const read = known !== undefined && columns.every((c) => known.has(c)) ? Effect.succeed(known) : readColumns(quotedTable)
    return Effect.map(read, (found) => {
      const types = columns.map((c) => found?.get(c))
      if (types.some((t) => t === undefined || t.array)) return undefined
      return types.map((t) => ({ type: t!.type, json: dialect.arrayInsert!.jsonTypes.includes(t!.type) }))
    })
  }

  const stream = <A extends object = Row>(
    sql: string,
    params: ReadonlyArray<unknown> = noParams,
    options?: StreamOptions
  ): Stream.Stream<A, DbError> => {
    const t = prepare(sql, params)
    if (t instanceof InvalidQuery) return Stream.fail(t)
    const chunkSize = options?.chunkSize ?? 128
    return Stream.unwrapScoped(Effect.withFiberRuntime<Stream.Stream<A, DbError>, DbError, Scope.Scope>((fiber) => {
      const tx = currentTx(fiber.currentContext)
      if (tx !== undefined) return Effect.succeed(tx[0].stream(t.sql, params, chunkSize))
      // the connection is held while the stream is read, and goes back when it ends or is interrupted
      return Effect.map(
        Effect.acquireRelease(acquire, pool.release),
        (lease) => lease.conn.stream(t.sql, params, chunkSize)
      )
    }))
  }

  return { executeManyOn, insertMany, stream }
}

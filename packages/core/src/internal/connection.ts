import type * as SqlConnection from "@effect/sql/SqlConnection"
import { SqlError } from "@effect/sql/SqlError"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import type { DbError } from "../DbError.js"
import type { DriverConnection, QueryMode } from "../Driver.js"

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
export class DalConnection implements SqlConnection.Connection {
  constructor(readonly driver: DriverConnection, readonly owner: string) {}

  run(sql: string, params: ReadonlyArray<unknown>, mode: QueryMode, prepared = true): Effect.Effect<any, DbError> {
    return this.driver.query(sql, params, mode, prepared)
  }

  execute(sql: string, params: ReadonlyArray<unknown>, transformRows: TransformRows) {
    const run = this.driver.query(sql, params, "rows", true)
    return Effect.mapError(transformRows === undefined ? run : Effect.map(run, transformRows), toSqlError)
  }

  executeRaw(sql: string, params: ReadonlyArray<unknown>) {
    return Effect.mapError(this.driver.query(sql, params, "raw", true), toSqlError)
  }

  executeValues(sql: string, params: ReadonlyArray<unknown>) {
    return Effect.mapError(this.driver.query(sql, params, "values", true), toSqlError)
  }

  executeUnprepared(sql: string, params: ReadonlyArray<unknown>, transformRows: TransformRows) {
    const run = this.driver.query(sql, params, "rows", false)
    return Effect.mapError(transformRows === undefined ? run : Effect.map(run, transformRows), toSqlError)
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

/**
 * The `@effect/sql` bridge: a `SqlClient` over the database's pool, with
 * the engine's compiler, whose transactions are ours (so that `sql`
 * templates and `Db` calls nest and mix in one transaction).
 *
 * @internal
 */
import * as Reactivity from "@effect/experimental/Reactivity"
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type { DalConnection } from "./connection.js"
import { toSqlError } from "./connection.js"
import type { DbCore } from "./core.js"
import type { Transactions } from "./transactions.js"

/**
 * Makes the `SqlClient` of a database.
 *
 * @internal
 */
export const makeSqlClient = (core: DbCore, transactions: Transactions): Effect.Effect<SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const { acquire, config, driver, pool } = core
    const acquireForSql: Effect.Effect<DalConnection, SqlError, Scope.Scope> = Effect.acquireRelease(
      Effect.mapError(acquire, toSqlError),
      pool.release
    ).pipe(Effect.map((lease) => lease.conn))

    const sqlClient = yield* SqlClient.make({
      acquirer: acquireForSql,
      transactionAcquirer: acquireForSql,
      compiler: driver.compiler,
      spanAttributes: [
        ...driver.spanAttributes,
        ["db.system.name", driver.system],
        ["db.namespace", config.database],
        ["server.address", config.host],
        ["server.port", config.port]
      ],
      transformRows: driver.transformRows
    }).pipe(Effect.provideService(Reactivity.Reactivity, core.invalidator.reactivity))

    // `sql.withTransaction` shares our transaction machinery, so it and `Db.withTransaction` nest and mix freely
    return Object.assign(sqlClient, {
      withTransaction: <A, E, R>(effect: Effect.Effect<A, E, R>) => transactions.run(effect, {}, toSqlError)
    })
  })

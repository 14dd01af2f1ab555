/**
 * Two-phase commit branches on a database's pool.
 *
 * @internal
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import type * as Scope from "effect/Scope"
import type { Executor } from "../Db.js"
import { InvalidQuery } from "../DbError.js"
import type { DbError } from "../DbError.js"
import type { Branch, TwoPhase } from "../TwoPhase.js"
import { isValidGid } from "../TwoPhase.js"
import type { DalConnection } from "./connection.js"
import type { DbCore } from "./core.js"
import { noParams } from "./core.js"

/**
 * Builds the two-phase commit operations of a database; `execute` runs the
 * statements that need no connection of their own.
 *
 * @internal
 */
export const makeTwoPhase = (core: DbCore, execute: Executor["execute"]): TwoPhase => {
  const { acquire, dialect, invalidator, pool } = core
  const sql = dialect.twoPhase
  // a branch's statements are cut at the layer's statement timeout: a node lost mid-protocol must not hang its coordinator
  const timeout = core.statementTimeout(undefined)

  const checked = (gid: string): Effect.Effect<void, DbError> =>
    isValidGid(gid) ? Effect.void : Effect.fail(
      new InvalidQuery({
        reason: "invalidArgument",
        detail: `"${gid}" is not a two-phase commit id: 1 to 64 of [A-Za-z0-9_]`,
        sql: undefined
      })
    )

  const runOne = (conn: DalConnection, statement: string) => conn.run(statement, noParams, "raw", false, timeout)
  const runAll = (conn: DalConnection, statements: ReadonlyArray<string>) =>
    Effect.forEach(statements, (s) => runOne(conn, s), { discard: true })

  const begin = (gid: string): Effect.Effect<Branch, DbError, Scope.Scope> =>
    Effect.zipRight(
      checked(gid),
      Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(restore(acquire), (lease) => {
          const conn = lease.conn
          // "broken": a decision statement failed on this connection, whose state is then unknown
          let state: "active" | "prepared" | "done" | "broken" = "active"
          const settle = <A>(effect: Effect.Effect<A, DbError>, next: typeof state) =>
            Effect.tapBoth(effect, {
              onFailure: () => Effect.sync(() => (state = "broken")),
              onSuccess: () => Effect.sync(() => (state = next))
            })
          const release = Effect.suspend((): Effect.Effect<void> => {
            switch (state) {
              case "done":
                return pool.release(lease)
              case "prepared":
                // the branch stays prepared on the server; an XA session that holds one is unusable until then
                return sql.preparedHoldsSession ? pool.invalidate(lease) : pool.release(lease)
              case "broken":
                return pool.invalidate(lease)
              case "active":
                // a statement may fail harmlessly here (XA END after XA END); the session is then not reused
                invalidator.discarded(conn)
                return Effect.flatMap(
                  Effect.forEach(sql.rollbackActive(gid), (s) => Effect.either(runOne(conn, s))),
                  (results) => results.every((r) => r._tag === "Right") ? pool.release(lease) : pool.invalidate(lease)
                )
            }
          })
          const branch: Branch = {
            gid,
            run: (effect) =>
              Effect.withFiberRuntime((fiber) =>
                Effect.locally(
                  effect,
                  FiberRef.currentContext,
                  Context.add(fiber.currentContext, SqlClient.TransactionConnection, [conn, 0] as const)
                )
              ),
            prepare: Effect.suspend(() =>
              state === "active"
                ? Effect.tap(runAll(conn, sql.prepare(gid)), () => Effect.sync(() => (state = "prepared")))
                : Effect.void
            ),
            commit: Effect.suspend(() => {
              if (state === "done") return Effect.void
              const commit = state === "prepared"
                ? runOne(conn, sql.commitPrepared(gid))
                : runAll(conn, sql.commitOnePhase(gid))
              return settle(commit, "done").pipe(Effect.tap(() => Effect.sync(() => invalidator.committed(conn))), Effect.asVoid)
            }),
            rollback: Effect.suspend(() => {
              if (state === "done") return Effect.void
              invalidator.discarded(conn)
              const rollback = state === "prepared"
                ? runOne(conn, sql.rollbackPrepared(gid))
                : runAll(conn, sql.rollbackActive(gid))
              return Effect.asVoid(settle(rollback, "done"))
            })
          }
          invalidator.discarded(conn)
          return runAll(conn, sql.begin(gid)).pipe(
            Effect.tapError(() => pool.invalidate(lease)),
            Effect.zipRight(Effect.addFinalizer(() => release)),
            Effect.as(branch)
          )
        })
      )
    )

  const decide = (statement: (gid: string) => string) => (gid: string) =>
    Effect.zipRight(checked(gid), Effect.asVoid(execute(statement(gid))))

  return {
    begin,
    commitPrepared: decide(sql.commitPrepared),
    rollbackPrepared: decide(sql.rollbackPrepared),
    prepared: Effect.map(execute<Record<string, unknown>>(sql.listPrepared), (rows) =>
      rows.map((row) => {
        const gid = row["gid"] ?? row["data"]
        return gid instanceof Uint8Array ? new TextDecoder().decode(gid) : String(gid)
      }))
  }
}

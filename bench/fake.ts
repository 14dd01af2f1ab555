/**
 * An in-memory driver that answers every statement on the next turn of the
 * event loop, and effect-dal's `Db` on it (`bench/fakeprof.ts`,
 * `bench/steps.ts`): what is left to measure is effect-dal's own cost.
 */
import { DatabaseConfig, Db, DbModule, Dialect, StatementCache } from "@effect-dal/core"
import type { Driver } from "@effect-dal/core"
import { Replicated } from "@effect-dal/routing"
import * as MysqlClient from "@effect/sql-mysql2/MysqlClient"
import type * as ConfigError from "effect/ConfigError"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"

const makeConn = (): Driver.DriverConnection => {
let inTx = false
return {
  send: (sql, _params, mode, _prepared, _timeout, done) => {
    if (sql.startsWith("START") || sql.startsWith("BEGIN")) inTx = true
    if (sql.startsWith("COMMIT") || sql.startsWith("ROLLBACK")) inTx = false
    const result = mode === "result" ? { rows: [], affected: 1 } : [{ id: 1, name: "x", balance: 1 }]
    setImmediate(() => done(Exit.succeed(result)))
    return () => {}
  },
  stream: () => Stream.empty,
  ping: Effect.void,
  transactionState: () => (inTx ? "transaction" : "idle"),
  isBroken: () => false,
  settle: () => undefined,
  close: Effect.void,
  serverId: () => 1
}
}
const driver: Driver.Driver = {
  system: "mysql",
  dialect: Dialect.mysql,
  connect: Effect.sync(makeConn),
  compiler: MysqlClient.makeCompiler(),
  spanAttributes: [],
  statementCache: StatementCache.makeStats(),
  // positions that never move: every replica has every write
  replication: {
    currentPositionSql: "SELECT 1 AS position",
    replicaStatus: () => Effect.succeed({ position: "1", lagMillis: 0 }),
    waitFor: () => Effect.succeed(true),
    reached: () => true,
    merge: (a) => a,
    distance: () => 0,
    isPosition: () => true,
    isReadOnlyRejection: () => false
  }
}
const node = (alias: string) =>
  Effect.flatMap(
    DatabaseConfig.resolve({ host: "fake", database: "fake", alias, statementTimeout: "10 seconds", transactionTimeout: "30 seconds", pool: { min: 20, max: 20 } }, { engine: "mysql", port: 3306, schemes: ["mysql"] }),
    (config) => DbModule.make(driver, config)
  )
/** `Db` on the fake driver, deployed as in the benchmark; `routed`: behind the replica router, over a primary and one replica. */
export const fakeLayer = (routed: boolean): Layer.Layer<Db, ConfigError.ConfigError> => Layer.scoped(
  Db,
  routed
    ? Effect.flatMap(Effect.all([node("fake"), node("fake_replica")]), ([primary, replica]) =>
      Replicated.make({ primary, replicas: [{ db: replica, weight: 1 }], driver }))
    : node("fake")
)

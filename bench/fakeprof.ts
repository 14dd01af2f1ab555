/**
 * `node --conditions=dist --cpu-prof --import tsx bench/fakeprof.ts [transfer|point] [effect|promise|routed]`:
 * the whole statement path of effect-dal (pool, breaker, deadlines, metrics,
 * transactions) on an in-memory driver that answers on the next turn of the
 * event loop, so what a profile shows is effect-dal's own cost per operation.
 * `routed`: behind the replica router, over a primary and one replica.
 */
import { DatabaseConfig, Db, DbModule, Dialect, StatementCache } from "@effect-dal/core"
import type { Driver } from "@effect-dal/core"
import { connect } from "@effect-dal/promise"
import { Replicated } from "@effect-dal/routing"
import * as MysqlClient from "@effect/sql-mysql2/MysqlClient"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Stream from "effect/Stream"
import { dalWorkloads, runCallers } from "./systems.js"

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
const layer = Layer.scoped(
  Db,
  process.argv[3] === "routed"
    ? Effect.flatMap(Effect.all([node("fake"), node("fake_replica")]), ([primary, replica]) =>
      Replicated.make({ primary, replicas: [{ db: replica, weight: 1 }], driver }))
    : node("fake")
)
const workload = process.argv[2] === "point" ? "point" : "transfer"
const n = Number(process.env["QUERIES"] ?? 200_000)
if (process.argv[3] === "promise") {
  const db = await connect({ layer })
  const start = performance.now()
  await Promise.all(Array.from({ length: 20 }, async () => {
    for (let i = 0; i < n / 20; i++) {
      if (workload === "point") await db.execute("SELECT id, name, balance FROM [bench_accounts] WHERE id = ?", [i])
      else {
        await db.transaction(async (tx) => {
          await tx.execute("UPDATE [bench_accounts] SET balance = balance - ? WHERE id = ?", [1, i])
          await tx.execute("UPDATE [bench_accounts] SET balance = balance + ? WHERE id = ?", [1, i + 1])
        })
      }
    }
  }))
  console.log(`fake ${workload}, Promise API: ${((performance.now() - start) * 1000 / n).toFixed(2)} µs/op`)
  await db.close()
  process.exit(0)
}
const runtime = ManagedRuntime.make(layer)
const start = performance.now()
const ops = dalWorkloads("")
await runCallers(runtime, n / 20, (i) => workload === "point" ? ops.pointSelect(i) : ops.transfer(i, i + 1, 1))
console.log(`fake ${workload}${process.argv[3] === "routed" ? ", routed" : ""}: ${((performance.now() - start) * 1000 / n).toFixed(2)} µs/op`)
await runtime.dispose()

/**
 * `node --cpu-prof --import tsx bench/profile.ts [pg|mysql|routed] [point|transfer|batch]`:
 * point selects, transfers or `insertMany` batches of 10k rows through
 * effect-dal, deployed as in the benchmark, for a CPU profile. `routed`: pg
 * behind the replica router, its one replica the same server.
 */
import { Db } from "@effect-dal/core"
import { MysqlDatabase } from "@effect-dal/mysql"
import { PgDatabase } from "@effect-dal/pg"
import * as Effect from "effect/Effect"
import type * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import { ACCOUNTS, dalWorkloads, MYSQL_URL, PG_URL, prepare, runCallers } from "./systems.js"

const engine = process.argv[2] === "mysql" || process.argv[2] === "routed" ? process.argv[2] : "pg"
const workload = process.argv[3] === "transfer" || process.argv[3] === "batch" ? process.argv[3] : "point"
const batch = Array.from({ length: 10_000 }, (_, i) => ({ account_id: 1 + (i % ACCOUNTS), payload: `batch ${i}` }))
const flag = (name: string) => process.env[name] === "1"
const options = {
  alias: "profile",
  ...(flag("NO_TIMEOUT") ? {} : { statementTimeout: "10 seconds" as const, transactionTimeout: "30 seconds" as const }),
  ...(flag("NO_RETRY") ? { retry: false as const } : {}),
  ...(flag("NO_BREAKER") ? { circuitBreaker: false as const } : {}),
  pool: { min: 20, max: 20, ...(flag("NO_LEAK") ? { leakDetectionThreshold: 0 } : {}) }
} as const
const layer = (engine === "pg"
  ? PgDatabase.layer({ url: PG_URL, ...options })
  : engine === "routed"
  ? PgDatabase.layer({ url: PG_URL, ...options, replicas: [{ url: PG_URL, alias: "profile_replica" }] })
  : MysqlDatabase.layer({ url: MYSQL_URL, ...options })) as Layer.Layer<Db, unknown>

const main = async () => {
  await prepare()
  const runtime = ManagedRuntime.make(layer)
  const n = Number(process.env["QUERIES"] ?? (workload === "batch" ? 200 : 100_000))
  const start = performance.now()
  if (workload === "batch") {
    await runtime.runPromise(Effect.repeatN(Db.insertMany("bench_events", batch), n - 1))
    console.log(`${engine} batch: ${(n * batch.length / ((performance.now() - start) / 1000)).toFixed(0)} rows/s`)
    return runtime.dispose()
  }
  const ops = dalWorkloads("")
  await runCallers(runtime, n / 20, () => {
    const id = 1 + Math.floor(Math.random() * (ACCOUNTS - 1))
    return workload === "point" ? ops.pointSelect(id) : ops.transfer(id, id + 1, 1)
  })
  console.log(`${engine} ${workload}: ${Math.round(n / ((performance.now() - start) / 1000))} ops/s`)
  await runtime.dispose()
}
main()

/**
 * `node --conditions=dist --cpu-prof --import tsx bench/fakeprof.ts [transfer|point] [effect|promise|routed]`:
 * the whole statement path of effect-dal (pool, breaker, deadlines, metrics,
 * transactions) on an in-memory driver that answers on the next turn of the
 * event loop, so what a profile shows is effect-dal's own cost per operation.
 * `routed`: behind the replica router, over a primary and one replica.
 */
import { connect } from "@effect-dal/promise"
import * as ManagedRuntime from "effect/ManagedRuntime"
import { fakeLayer } from "./fake.js"
import { dalWorkloads, runCallers } from "./systems.js"

const layer = fakeLayer(process.argv[3] === "routed")
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

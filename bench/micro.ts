import { Pool } from "@effect-dal/core"
import * as Effect from "effect/Effect"
const cycles = 200_000
await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
  const pool = yield* Effect.acquireRelease(
    Pool.make({ alias: "micro", config: Pool.resolveOptions({ min: 20, max: 20, leakDetectionThreshold: 0 }),
      hooks: { create: Effect.succeed({}), destroy: () => Effect.void, validate: () => Effect.void, isBroken: () => false, recycle: () => undefined } }),
    (p) => p.close)
  yield* Effect.sleep(20)
  const cycle = pool.withConnection(() => Effect.void)
  const rounds: string[] = []
  for (let r = 0; r < Number(process.env["R"] ?? 20); r++) {
    const start = performance.now()
    for (let i = 0; i < cycles; i++) yield* cycle
    rounds.push((((performance.now() - start) * 1000) / cycles).toFixed(2))
  }
  console.log(rounds.join(" "), JSON.stringify(process.memoryUsage()))
})))

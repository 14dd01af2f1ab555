/**
 * What the benchmark's tools share: the callers that drive one system for a
 * while, and the operations they draw.
 */
import * as Effect from "effect/Effect"
import type { Op, System } from "./systems.js"
import { ACCOUNTS } from "./systems.js"

/** One system's turn: operations per second, latencies in ms, failed operations. */
export interface Sample {
  readonly ops: number
  readonly p50: number
  readonly p99: number
  readonly errors: number
}

const quantile = (sorted: ReadonlyArray<number>, q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN

/** An account id, uniformly. */
export const randomId = () => 1 + Math.floor(Math.random() * ACCOUNTS)

/** A transfer between two accounts, locked in id order as a careful application would: the benchmark measures overhead, not deadlocks. */
export const randomTransfer = (s: System): Op => {
  const a = randomId()
  const b = randomId()
  return s.workloads.transfer(Math.min(a, b), a === b ? (a % ACCOUNTS) + 1 : Math.max(a, b), 1)
}

/** Runs `concurrency` callers of `next()` for `seconds`; latencies in ms. */
export const drive = async (system: System, next: () => Op, concurrency: number, seconds: number): Promise<Sample> => {
  const latencies: Array<number> = []
  let errors = 0
  const deadline = performance.now() + seconds * 1000
  const first = next()
  if (first._tag === "promise") {
    const caller = async () => {
      while (performance.now() < deadline) {
        const op = next() as Extract<Op, { _tag: "promise" }>
        const start = performance.now()
        try {
          await op.run()
        } catch {
          errors++
        }
        latencies.push(performance.now() - start)
      }
    }
    const started = performance.now()
    await Promise.all(Array.from({ length: concurrency }, caller))
    const elapsed = (performance.now() - started) / 1000
    latencies.sort((a, b) => a - b)
    return { ops: latencies.length / elapsed, p50: quantile(latencies, 0.5), p99: quantile(latencies, 0.99), errors }
  }
  const caller = Effect.gen(function*() {
    while (performance.now() < deadline) {
      const op = next() as Extract<Op, { _tag: "effect" }>
      const start = performance.now()
      const exit = yield* Effect.exit(op.run)
      if (exit._tag === "Failure") errors++
      latencies.push(performance.now() - start)
    }
  })
  const started = performance.now()
  await system.runtime!.runPromise(Effect.all(Array.from({ length: concurrency }, () => caller), {
    concurrency: "unbounded",
    discard: true
  }))
  const elapsed = (performance.now() - started) / 1000
  latencies.sort((a, b) => a - b)
  return { ops: latencies.length / elapsed, p50: quantile(latencies, 0.5), p99: quantile(latencies, 0.99), errors }
}

/**
 * Cache correctness under concurrency: 16 workers on 2 instances in this
 * process, and 4 in a real child process, read and update 100 rows through
 * the cache while invalidations cross between them. After a committed write,
 * no read that starts later, once the invalidation reached the reader's
 * process, returns an older value. Reports the delivery delay (p50/p99).
 */
import { Db } from "@effect-dal/core"
import { DbCache } from "@effect-dal/redis"
import * as Effect from "effect/Effect"
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { dropKeys, instance, on, unique } from "./helpers.js"

const table = unique("cache_conc")
const prefix = `${unique("dalconc")}:`
const instances = { a: instance(unique("conc_a"), { prefix }), b: instance(unique("conc_b"), { prefix }) }
const RUN_MILLIS = 3_000

interface Op {
  readonly who: string
  readonly op: "r" | "w"
  readonly id: number
  readonly v: number
  readonly t: number
}

const quantile = (xs: ReadonlyArray<number>, q: number) => {
  const s = [...xs].sort((x, y) => x - y)
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? NaN
}

beforeAll(async () => {
  await on(instances.a, Db.execute(`CREATE TABLE [${table}] (id int PRIMARY KEY, v int NOT NULL)`))
  await on(instances.a, Db.execute(`INSERT INTO [${table}] SELECT g, 0 FROM generate_series(1, 100) g`))
})
afterAll(async () => {
  await on(instances.a, Db.execute(`DROP TABLE IF EXISTS [${table}]`))
  await Promise.all([instances.a.dispose(), instances.b.dispose()])
  await dropKeys(prefix)
})

/** Starts the child process; `ready` resolves when its cache is up, `output` with its operations when it ends. */
const child = () => {
  const proc = spawn(
    process.execPath,
    ["--import", "tsx", fileURLToPath(new URL("./fixtures/worker.ts", import.meta.url)), prefix, table, String(RUN_MILLIS)],
    { stdio: ["ignore", "pipe", "inherit"] }
  )
  let out = ""
  let signal: () => void
  const ready = new Promise<void>((resolve) => (signal = resolve))
  proc.stdout.on("data", (chunk: Buffer) => {
    out += chunk.toString()
    if (out.split("\n").includes("ready")) signal()
  })
  const output = new Promise<string>((resolve, reject) =>
    proc.once("exit", (code) => (code === 0 ? resolve(out) : reject(new Error(`child exited ${code}`))))
  )
  return { ready, output }
}

describe("DbCache under concurrency", () => {
  it("no read that starts after a write's invalidation reached its process returns an older value", async () => {
    await Promise.all([on(instances.a, DbCache), on(instances.b, DbCache)])
    const ops: Array<Op> = []
    const third = child()
    await third.ready
    const end = Date.now() + RUN_MILLIS
    // each cache keeps only its last 1,000 delays: the largest of the whole run is sampled as it goes
    const maxDelay: Record<string, number> = { a: 0, b: 0, child: 0 }
    const sample = () =>
      Promise.all((["a", "b"] as const).map((who) =>
        on(instances[who], Effect.map(DbCache, (c) => (maxDelay[who] = Math.max(maxDelay[who]!, ...c.deliveryDelays()))))
      ))
    const sampler = setInterval(() => void sample(), 100)
    const worker = (who: "a" | "b") => async () => {
      const runtime = instances[who]
      while (Date.now() < end) {
        const id = 1 + Math.floor(Math.random() * 100)
        if (Math.random() < 0.2) {
          const [row] = await on(runtime, Db.execute<{ v: number }>(
            `UPDATE [${table}] SET v = v + 1 WHERE id = ? RETURNING v`,
            [id],
            { invalidates: { [table]: [id] } }
          ))
          ops.push({ who, op: "w", id, v: row!.v, t: Date.now() })
        } else {
          const t = Date.now()
          const [row] = await on(runtime, DbCache.cached<{ v: number }>(`SELECT v FROM [${table}] WHERE id = ?`, [id], {
            keys: { [table]: [id] }
          }))
          ops.push({ who, op: "r", id, v: row!.v, t })
        }
      }
    }
    const [childOut] = await Promise.all([
      third.output,
      ...Array.from({ length: 8 }, () => worker("a")()),
      ...Array.from({ length: 8 }, () => worker("b")())
    ])
    clearInterval(sampler)
    await sample()
    const childDelays: Array<number> = []
    // the child's own log lines (a breaker opening under load) share its stdout with the operations
    for (const line of childOut.split("\n").filter((l) => l.startsWith("{"))) {
      const parsed = JSON.parse(line)
      if (parsed.op === "delays") {
        childDelays.push(...parsed.delays)
        maxDelay["child"] = parsed.max
      }
      else ops.push({ who: "child", ...parsed })
    }
    const delays = {
      a: await on(instances.a, Effect.map(DbCache, (c) => c.deliveryDelays())),
      b: await on(instances.b, Effect.map(DbCache, (c) => c.deliveryDelays())),
      child: childDelays
    } as Record<string, ReadonlyArray<number>>
    // a reader's process has surely received a write's invalidation this long after the commit
    const bound = (reader: string, writer: string) => (reader === writer ? 0 : maxDelay[reader]! + 2)

    const writes = ops.filter((o) => o.op === "w")
    const reads = ops.filter((o) => o.op === "r")
    // enough of both to race (the counts fall under a loaded CI, hence the modest floors)
    expect(writes.length).toBeGreaterThan(50)
    expect(reads.length).toBeGreaterThan(200)
    expect(new Set(ops.map((o) => o.who))).toEqual(new Set(["a", "b", "child"]))
    const violations = reads.filter((r) =>
      writes.some((w) => w.id === r.id && w.v > r.v && w.t + bound(r.who, w.who) < r.t)
    )
    if (violations.length > 0) {
      for (const r of violations.slice(0, 5)) {
        const w = writes.filter((w) => w.id === r.id && w.v > r.v && w.t + bound(r.who, w.who) < r.t)
        console.log("VIOLATION", JSON.stringify(r), JSON.stringify(w.slice(0, 2)), "bounds", JSON.stringify(maxDelay))
      }
    }
    expect(violations).toEqual([])

    // every process heard the others' invalidations
    for (const who of ["a", "b", "child"]) expect(delays[who]!.length).toBeGreaterThan(10)
    const all = [...delays["a"]!, ...delays["b"]!, ...delays["child"]!]
    // each cache keeps its last 1,000 delays: on a fast run (3,064 writes once) the three hold 3,000 at most
    expect(all.length).toBeGreaterThanOrEqual(Math.min(writes.length, 3 * 1_000))
    console.log(
      `cache invalidation delivery across processes: p50 ${quantile(all, 0.5)} ms, p99 ${quantile(all, 0.99)} ms over the last ${all.length} messages, max ${
        Math.max(...Object.values(maxDelay))
      } ms over the run; ${reads.length} reads, ${writes.length} writes, 0 stale reads`
    )
  }, 90_000)
})

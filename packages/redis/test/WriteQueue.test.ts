/**
 * The write-behind queue on the real Redis and databases: batches written
 * exactly once by id, upserts, dead letters, back-pressure, the flush at
 * shutdown; and durability through SIGKILLed flushers and a Redis restart.
 */
import { Db } from "@effect-dal/core"
import type { DbError } from "@effect-dal/core"
import { MysqlDatabase } from "@effect-dal/mysql"
import { PgDatabase } from "@effect-dal/pg"
import { WriteQueue } from "@effect-dal/redis"
import { Traffic } from "@effect-dal/testkit"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import type * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { afterAll, describe, expect, it } from "vitest"
import { dropKeys, PG_URL, throwawayRedis, unique } from "./helpers.js"

const MYSQL_URL = process.env["TEST_MYSQL_URL"] ?? "mysql://root@127.0.0.1:3306/test"
const engines: ReadonlyArray<readonly [string, Layer.Layer<Db, unknown>]> = [
  ["pg", PgDatabase.layer({ url: PG_URL, alias: unique("queue_pg") })],
  ["mysql", MysqlDatabase.layer({ url: MYSQL_URL, alias: unique("queue_my") })]
]
const prefix = unique("dalqueue")
afterAll(() => dropKeys(prefix))

/** Runs `f` with a queue on `layer`'s database, closing the queue (and its flush) at the end. */
const withQueue = <A>(
  layer: Layer.Layer<Db, unknown>,
  options: Omit<WriteQueue.WriteQueueOptions, "stream">,
  f: (queue: WriteQueue.WriteQueue) => Effect.Effect<A, unknown, Db>
) =>
  Effect.runPromise(
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const queue = yield* Scope.extend(WriteQueue.make({ stream: `${prefix}:${unique("s")}`, flushInterval: "20 millis", ...options }), scope)
      const result = yield* Effect.exit(f(queue))
      yield* Scope.close(scope, Exit.void)
      return yield* result
    }).pipe(Effect.provide(layer)) as Effect.Effect<A, unknown, never>
  )

const count = (table: string) =>
  Effect.map(Db.execute<{ n: unknown }>(`SELECT count(*) AS n, count(DISTINCT [id]) AS d FROM [${table}]`), (rows) => rows[0] as any)

describe.each(engines)("WriteQueue on %s", (_, layer) => {
  it("writes every offered row exactly once by id, in batches, and flushes what is left when it closes", async () => {
    const table = unique("wq")
    const result = await withQueue(layer, { table }, (queue) =>
      Effect.gen(function*() {
        yield* Db.execute(`CREATE TABLE [${table}] ([id] int PRIMARY KEY, [payload] varchar(50) NOT NULL)`)
        // 2,000 offers of 1,500 ids: the repeats are skipped (the first write of an id stays)
        yield* Effect.forEach(Array.from({ length: 2_000 }, (_, i) => i % 1_500), (id) =>
          queue.offer({ id, payload: `first ${id}` }), { concurrency: 20, discard: true })
        return queue
      })).then(async (queue) => queue.stats())
    // closed: everything offered is in the table
    const rows = await Effect.runPromise(Effect.provide(Effect.gen(function*() {
      const c = yield* count(table)
      const sample = yield* Db.execute<{ payload: string }>(`SELECT [payload] FROM [${table}] WHERE [id] = 7`)
      yield* Db.execute(`DROP TABLE [${table}]`)
      return { c, sample }
    }), layer))
    expect(Number(rows.c.n)).toBe(1_500)
    expect(Number(rows.c.d)).toBe(1_500)
    expect(rows.sample).toEqual([{ payload: "first 7" }])
    expect(result.offered).toBe(2_000)
    expect(result.batches).toBeGreaterThan(1)
    expect(result.batches).toBeLessThan(2_000)
  }, 60_000)

  it("upsert mode: the last write of an id wins", async () => {
    const table = unique("wqu")
    const payloads = await withQueue(layer, { table, mode: "upsert" }, (queue) =>
      Effect.gen(function*() {
        yield* Db.execute(`CREATE TABLE [${table}] ([id] int PRIMARY KEY, [payload] varchar(50) NOT NULL)`)
        for (let round = 0; round < 3; round++) {
          for (let id = 0; id < 50; id++) yield* queue.offer({ id, payload: `round ${round}` })
        }
        expect(yield* Traffic.holds(Effect.map(queue.depth, (d) => d.rows === 0))).toBe(true)
        const rows = yield* Db.execute<{ payload: string }>(`SELECT DISTINCT [payload] FROM [${table}]`)
        yield* Db.execute(`DROP TABLE [${table}]`)
        return rows.map((r) => r.payload)
      }))
    expect(payloads).toEqual(["round 2"])
  }, 60_000)

  it("a poison row goes to the dead letters with its error; the others are written", async () => {
    const table = unique("wqd")
    const { dead, n } = await withQueue(layer, { table }, (queue) =>
      Effect.gen(function*() {
        yield* Db.execute(`CREATE TABLE [${table}] ([id] int PRIMARY KEY, [payload] varchar(50) NOT NULL, CHECK ([payload] <> 'poison'))`)
        for (let id = 0; id < 100; id++) yield* queue.offer({ id, payload: id === 37 ? "poison" : `ok ${id}` })
        expect(yield* Traffic.holds(Effect.map(queue.depth, (d) => d.rows === 0))).toBe(true)
        const c = yield* count(table)
        const dead = yield* queue.deadLetters
        yield* Db.execute(`DROP TABLE [${table}]`)
        return { dead, n: Number(c.n) }
      }))
    expect(n).toBe(99)
    expect(dead).toHaveLength(1)
    expect(dead[0]).toMatchObject({ id: "37", row: { id: 37, payload: "poison" } })
    expect(dead[0]!.error).toMatch(/constraint|check/i)
  }, 60_000)
})

describe("WriteQueue back-pressure", () => {
  it("a full queue makes offer wait, or fail with QueueFull after its timeout; room returns as the flusher writes", async () => {
    const table = unique("wqb")
    const stream = `${prefix}:${unique("bp")}`
    const layer = engines[0]![1]
    await Effect.runPromise(Effect.provide(Effect.gen(function*() {
      yield* Db.execute(`CREATE TABLE [${table}] ([id] int PRIMARY KEY, [payload] varchar(50) NOT NULL)`)
      // an offering process without a flusher: the budget of 20 rows fills
      const offers = yield* Effect.scoped(Effect.gen(function*() {
        const queue = yield* WriteQueue.make({ table, stream, flush: false, maxPending: 20 })
        for (let id = 0; id < 20; id++) yield* queue.offer({ id, payload: "x" })
        const full = yield* Effect.flip(queue.offer({ id: 20, payload: "x" }, { timeout: "100 millis" }))
        expect(full._tag).toBe("QueueFull")
        expect((yield* queue.depth).rows).toBe(20)
        // an offer without a timeout waits for room: a flusher starts elsewhere and makes some
        const waiting = yield* Effect.fork(queue.offer({ id: 21, payload: "x" }))
        yield* Effect.sleep(200)
        expect(waiting.unsafePoll()).toBeNull()
        yield* Effect.scoped(Effect.gen(function*() {
          yield* WriteQueue.make({ table, stream, flushInterval: "20 millis" })
          yield* Fiber.join(waiting)
          expect(yield* Traffic.holds(Effect.map(count(table), (c) => Number(c.n) === 21))).toBe(true)
        }))
        return 21
      }))
      expect(offers).toBe(21)
      yield* Db.execute(`DROP TABLE [${table}]`)
    }), layer) as Effect.Effect<void, DbError.DbError>)
  }, 60_000)
})

describe("WriteQueue with a target that stops answering", () => {
  it("batches that time out are retried until the table is free again; meanwhile the budget fills and offers fail typed", async () => {
    const table = unique("wqs")
    const stream = `${prefix}:${unique("slow")}`
    // the queue's database cuts statements at 200 ms: a locked table makes every batch fail transiently
    const layer = PgDatabase.layer({ url: PG_URL, alias: unique("queue_slow"), statementTimeout: "200 millis" })
    await Effect.runPromise(Effect.provide(Effect.gen(function*() {
      yield* Db.execute(`CREATE TABLE [${table}] ([id] int PRIMARY KEY, [payload] varchar(50) NOT NULL)`)
      const locker = yield* Effect.fork(Db.withTransaction(Effect.zipRight(
        Db.execute(`LOCK TABLE [${table}] IN ACCESS EXCLUSIVE MODE`),
        Effect.sleep("1500 millis")
      )))
      yield* Effect.sleep(100)
      const stats = yield* Effect.scoped(Effect.gen(function*() {
        const queue = yield* WriteQueue.make({ table, stream, maxPending: 30, flushInterval: "20 millis", maxBatch: 10 })
        let full = 0
        for (let id = 0; id < 60; id++) {
          const offered = yield* Effect.either(queue.offer({ id, payload: "x" }, { timeout: "20 millis" }))
          if (offered._tag === "Left") {
            expect(offered.left._tag).toBe("QueueFull")
            full++
          }
        }
        expect(full).toBeGreaterThan(0)
        yield* Fiber.join(locker)
        expect(yield* Traffic.holds(Effect.map(queue.depth, (d) => d.rows === 0))).toBe(true)
        expect(Number((yield* count(table)).n)).toBe(60 - full)
        return queue.stats()
      }))
      expect(stats.retries).toBeGreaterThan(0)
      expect(stats.deadLetters).toBe(0)
      yield* Db.execute(`DROP TABLE [${table}]`)
    }), layer) as Effect.Effect<void, unknown>)
  }, 60_000)
})

describe("WriteQueue durability", () => {
  it("flushers SIGKILLed mid-batch many times, and Redis restarted, over 10,000 offers: every acknowledged id exactly once", async () => {
    const redis = await throwawayRedis()
    const table = unique("wqk")
    const stream = `${prefix}:${unique("kill")}`
    const layer = engines[0]![1]
    const run = <A>(effect: Effect.Effect<A, unknown, Db>) => Effect.runPromise(Effect.provide(effect, layer) as Effect.Effect<A>)
    await run(Db.execute(`CREATE TABLE [${table}] ([id] int PRIMARY KEY, [payload] varchar(50) NOT NULL)`))
    const acknowledged = new Set<number>()
    let next = 1
    let kills = 0
    let restarts = 0
    try {
      const TOTAL = 10_000
      while (next <= TOTAL) {
        const child = spawn(process.execPath, [
          "--import",
          "tsx",
          fileURLToPath(new URL("./fixtures/offerer.ts", import.meta.url)),
          redis.url,
          stream,
          table,
          String(next),
          String(TOTAL)
        ], { stdio: ["ignore", "pipe", "inherit"] })
        let done = false
        let buffered = ""
        child.stdout.on("data", (chunk: Buffer) => {
          buffered += chunk.toString()
          const lines = buffered.split("\n")
          buffered = lines.pop()!
          for (const line of lines) {
            if (line === "done") done = true
            else if (line !== "") {
              acknowledged.add(Number(line))
              next = Number(line) + 1
            }
          }
        })
        const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()))
        // let it get going (its first offer acknowledged), work a while, then kill it mid-flight
        const before = acknowledged.size
        await Traffic.until(() => done || acknowledged.size > before, 30_000)
        const working = 200 + Math.random() * 600
        await Traffic.until(() => done, working)
        if (kills === 3 && restarts === 0) {
          // Redis crashes under the load and comes back with its AOF
          await redis.kill()
          await new Promise((r) => setTimeout(r, 200))
          await redis.start()
          restarts++
          await new Promise((r) => setTimeout(r, 500))
        }
        child.kill("SIGKILL")
        await exited
        if (!done) kills++
        else break
      }
      // a last flusher drains what the killed ones left pending
      await run(Effect.scoped(Effect.gen(function*() {
        const queue = yield* WriteQueue.make({ table, stream, redis: redis.url, claimIdle: "200 millis", flushInterval: "20 millis" })
        expect(yield* Traffic.holds(Effect.map(queue.depth, (d) => d.rows === 0), 60_000)).toBe(true)
      })))
      const rows = await run(Db.execute<{ id: number }>(`SELECT [id] FROM [${table}]`))
      const ids = rows.map((r) => r.id)
      expect(new Set(ids).size).toBe(ids.length)
      const missing = [...acknowledged].filter((id) => !ids.includes(id))
      expect(missing).toEqual([])
      expect(acknowledged.size).toBe(TOTAL)
      expect(kills).toBeGreaterThanOrEqual(5)
      expect(restarts).toBe(1)
      console.log(`write queue durability: ${TOTAL} offers, ${kills} flushers killed, 1 Redis restart, ${ids.length} rows, 0 missing, 0 duplicates`)
    } finally {
      await run(Db.execute(`DROP TABLE IF EXISTS [${table}]`))
      await redis.remove()
    }
  }, 300_000)
})


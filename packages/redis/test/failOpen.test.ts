/**
 * Fail-open: a throwaway `redis-server` killed under a read load costs no
 * failed read (the cache is bypassed), the cache is used again after a
 * restart, and an entry invalidated while Redis was down is not served after
 * it (Redis here keeps its data across the restart: AOF, fsync always).
 */
import { Db } from "@effect-dal/core"
import { DbCache, type DbCacheOptions } from "@effect-dal/redis"
import * as Effect from "effect/Effect"
import { Redis } from "ioredis"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Traffic } from "@effect-dal/testkit"
import { instance, on, throwawayRedis, unique } from "./helpers.js"

const table = unique("failopen")
let redis: Awaited<ReturnType<typeof throwawayRedis>>
let app: ReturnType<typeof instance>

const read = (id: number) =>
  DbCache.cached<{ id: number; v: number }>(`SELECT id, v FROM [${table}] WHERE id = ?`, [id], { keys: { [table]: [id] } })
const stats = () => on(app, Effect.map(DbCache, (c) => c.stats()))
const available = () => on(app, Effect.map(DbCache, (c) => c.available()))

beforeAll(async () => {
  redis = await throwawayRedis()
  app = instance(unique("failopen"), {
    redis: redis.url,
    prefix: "failopen:",
    localTtl: 0,
    timeout: "50 millis"
  })
  await on(app, Db.execute(`CREATE TABLE [${table}] (id int PRIMARY KEY, v int NOT NULL)`))
  await on(app, Db.execute(`INSERT INTO [${table}] SELECT g, 0 FROM generate_series(1, 20) g`))
}, 30_000)

afterAll(async () => {
  await on(app, Db.execute(`DROP TABLE IF EXISTS [${table}]`))
  await app.dispose()
  await redis.remove()
})

describe("DbCache fails open", () => {
  it("Redis killed under a read load: no read fails, reads bypass it, and it is used again after a restart", async () => {
    for (let id = 1; id <= 20; id++) await on(app, read(id))
    expect(await available()).toBe(true)
    let failures = 0
    let reads = 0
    let stop = false
    const load = Promise.all(Array.from({ length: 8 }, async () => {
      while (!stop) {
        const id = 1 + Math.floor(Math.random() * 20)
        await on(app, read(id)).then((rows) => {
          reads++
          if (rows[0]?.id !== id) failures++
        }, () => failures++)
      }
    }))
    await new Promise((r) => setTimeout(r, 300))
    await redis.kill()
    const bypassedBefore = (await stats()).bypasses
    await new Promise((r) => setTimeout(r, 1_000))
    expect(await available()).toBe(false)
    expect((await stats()).bypasses).toBeGreaterThan(bypassedBefore)

    // an entry invalidated while Redis is down: the write succeeds, its invalidation waits
    await on(app, Db.execute(`UPDATE [${table}] SET v = 42 WHERE id = 7`, [], { invalidates: { [table]: [7] } }))

    await redis.start()
    // the entries written before the crash are back
    const probe = new Redis(redis.url)
    expect((await probe.keys("failopen:e:*")).length).toBeGreaterThanOrEqual(20)
    probe.disconnect()
    expect(await Traffic.until(available, 10_000)).toBe(true)
    stop = true
    await load
    expect(failures).toBe(0)
    expect(reads).toBeGreaterThan(100)
    // the invalidation went out before the cache was used again: the entry kept by the AOF is not served
    expect((await on(app, read(7)))[0]!.v).toBe(42)
    const hitsBefore = (await stats()).hits
    await on(app, read(8))
    expect((await stats()).hits).toBe(hitsBefore + 1)
  }, 60_000)

  it("an invalidation still waiting for Redis when the cache closes is sent before it disconnects", async () => {
    const closing = instance(unique("failopen_close"), { redis: redis.url, prefix: "failopen_close:", closeTimeout: "5 seconds" })
    await on(closing, DbCache)
    await redis.kill()
    await on(closing, Db.execute(`UPDATE [${table}] SET v = v + 1 WHERE id = 3`, [], { invalidates: { [table]: [3] } }))
    await redis.start()
    // closed at once: the invalidation waits for the reconnection, which the close waits for
    await closing.dispose()
    const probe = new Redis(redis.url)
    try {
      expect(await probe.get(`failopen_close:r:${table}:3`)).toBe("1")
    } finally {
      probe.disconnect()
    }
  }, 30_000)

  it("a lookup begun before the subscription was lost keeps nothing locally: an invalidation may have been missed meanwhile", async () => {
    const options: DbCacheOptions = { redis: redis.url, prefix: "failopen_resub:", localTtl: "10 seconds" }
    const reader = instance(unique("failopen_reader"), options)
    const writer = instance(unique("failopen_writer"), options)
    try {
      await Promise.all([on(reader, DbCache), on(writer, DbCache)])
      const [before] = await on(writer, Db.execute<{ v: number }>(`SELECT v FROM [${table}] WHERE id = 5`))
      // the read's snapshot is taken before the write below; its rows arrive a second later
      const slow = `SELECT v FROM [${table}], pg_sleep(1) WHERE id = ?`
      const lookup = on(reader, DbCache.cached<{ v: number }>(slow, [5], { keys: { [table]: [5] } }))
      await new Promise((r) => setTimeout(r, 200))
      const probe = new Redis(redis.url)
      await probe.client("KILL", "TYPE", "pubsub")
      probe.disconnect()
      // published while the reader is not subscribed: the reader never hears of it
      await on(writer, Db.execute(`UPDATE [${table}] SET v = v + 1 WHERE id = 5`, [], { invalidates: { [table]: [5] } }))
      expect((await lookup)[0]!.v).toBe(before!.v)
      expect(await Traffic.until(() => on(reader, Effect.map(DbCache, (c) => c.available())), 10_000)).toBe(true)
      const [after] = await on(reader, DbCache.cached<{ v: number }>(slow, [5], { keys: { [table]: [5] } }))
      expect(after!.v).toBe(before!.v + 1)
    } finally {
      await Promise.all([reader.dispose(), writer.dispose()])
    }
  }, 30_000)

  it("a Redis that stops answering costs each read its timeout at most: the database answers every read", async () => {
    const hung = instance(unique("failopen_hung"), { redis: redis.url, prefix: "failopen_hung:", localTtl: 0, timeout: "50 millis" })
    try {
      for (let id = 1; id <= 5; id++) await on(hung, read(id))
      const before = (await on(hung, Effect.map(DbCache, (c) => c.stats()))).bypasses
      redis.pause()
      // without the timeout these reads would wait for the stopped server for ever
      const rows = await Promise.all(Array.from({ length: 40 }, (_, i) => on(hung, read(1 + (i % 5)))))
      expect(rows.map((r) => r[0]!.id)).toEqual(Array.from({ length: 40 }, (_, i) => 1 + (i % 5)))
      expect((await on(hung, Effect.map(DbCache, (c) => c.stats()))).bypasses).toBeGreaterThan(before)
    } finally {
      redis.resume()
      await hung.dispose()
    }
  }, 30_000)
})

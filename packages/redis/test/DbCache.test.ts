/**
 * The read cache on the real Redis and PostgreSQL: reads through it,
 * invalidation after commit (never after a rollback) across instances,
 * `Reactivity.mutation` from `sql` templates, and stampedes.
 */
import { Db } from "@effect-dal/core"
import { DbCache } from "@effect-dal/redis"
import * as Reactivity from "@effect/experimental/Reactivity"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { dropKeys, instance, on, unique } from "./helpers.js"

const table = unique("cache_rows")
const prefix = `${unique("dalcache")}:`
const a = instance(unique("cache_a"), { prefix, localTtl: "1 second", staleFor: "30 seconds" })
const b = instance(unique("cache_b"), { prefix, localTtl: "1 second", staleFor: "30 seconds" })

const select = `SELECT id, v, note FROM [${table}] WHERE id = ?`
const read = (id: number) => DbCache.cached<{ id: number; v: number; note: string }>(select, [id], { keys: { [table]: [id] } })
const bump = (id: number) =>
  Effect.map(
    Db.execute<{ v: number }>(`UPDATE [${table}] SET v = v + 1 WHERE id = ? RETURNING v`, [id], { invalidates: { [table]: [id] } }),
    (rows) => rows[0]!.v
  )

beforeAll(async () => {
  await on(a, Db.execute(`CREATE TABLE [${table}] (id int PRIMARY KEY, v int NOT NULL, note text NOT NULL)`))
  await on(a, Db.execute(`INSERT INTO [${table}] SELECT g, 0, 'row ' || g FROM generate_series(1, 100) g`))
})
afterAll(async () => {
  await on(a, Db.execute(`DROP TABLE IF EXISTS [${table}]`))
  await Promise.all([a.dispose(), b.dispose()])
  await dropKeys(prefix)
})

describe("DbCache", () => {
  it("a hot key is refreshed early (XFetch) and its readers never wait for a recompute", async () => {
    const hot = instance(unique("cache_hot"), { prefix, localTtl: 0, beta: 2 })
    try {
      const seq = unique("cache_hot_seq")
      await on(hot, Db.execute(`CREATE SEQUENCE [${seq}]`))
      const readHot = DbCache.cached<{ n: string }>(`SELECT nextval('${seq}') AS n, pg_sleep(0.05) IS NULL AS slept`, [], {
        keys: [seq],
        ttl: "400 millis"
      })
      await on(hot, readHot)
      const end = Date.now() + 2_000
      await Promise.all(Array.from({ length: 5 }, async () => {
        while (Date.now() < end) await on(hot, readHot)
      }))
      const stats = await on(hot, Effect.map(DbCache, (c) => c.stats()))
      expect(stats.earlyRefreshes).toBeGreaterThanOrEqual(2)
      // 2 s of a 400 ms entry: recomputed several times, early, and no reader ever waited for it
      expect(stats.misses).toBe(1) // the first fill only
      expect(stats.lockWaits).toBe(0)
      await on(hot, Db.execute(`DROP SEQUENCE [${seq}]`))
    } finally {
      await hot.dispose()
    }
  })

  it("a reply that came while the process was busy past the timeout is a hit, not a timeout: the timeout waits for the loop's next poll", async () => {
    const busy = instance(unique("cache_busy"), { prefix, localTtl: 0 })
    try {
      await on(busy, read(7))
      const before = await on(busy, Effect.map(DbCache, (c) => c.stats()))
      const pending = on(busy, read(7))
      // the lookup is issued (ioredis writes it in a `setImmediate`); the process stays busy past the 50 ms timeout
      const until = Date.now() + 150
      while (Date.now() < until) {
        // a synchronous stall, as a long collection or a burst of work makes one
      }
      const rows = await pending
      const after = await on(busy, Effect.map(DbCache, (c) => c.stats()))
      expect(rows.map((r) => r.id)).toEqual([7])
      expect({ hits: after.hits - before.hits, bypasses: after.bypasses - before.bypasses }).toEqual({ hits: 1, bypasses: 0 })
    } finally {
      await busy.dispose()
    }
  })

  it("reads through: a miss fills the entry, the next read is a hit in this and the other instance", async () => {
    const first = await on(a, read(1))
    expect(first).toEqual([{ id: 1, v: 0, note: "row 1" }])
    const before = await on(b, Effect.map(DbCache, (c) => c.stats()))
    expect(await on(b, read(1))).toEqual(first)
    const after = await on(b, Effect.map(DbCache, (c) => c.stats()))
    expect(after.hits - before.hits).toBe(1)
    expect(after.recomputes - before.recomputes).toBe(0)
  })

  it("a committed write invalidates in every instance; a rolled-back one invalidates nothing", async () => {
    await on(a, read(2))
    await on(b, read(2))
    const v = await on(a, bump(2))
    // the writer's own instance: at once
    expect((await on(a, read(2)))[0]!.v).toBe(v)
    // the other instance: once the message arrived (its local tier dropped; Redis already has the new version)
    await new Promise((r) => setTimeout(r, 100))
    expect((await on(b, read(2)))[0]!.v).toBe(v)

    const sent = (await on(a, Effect.map(DbCache, (c) => c.stats()))).invalidationsSent
    const failed = await on(a, Effect.exit(Db.withTransaction(Effect.zipRight(bump(2), Effect.fail("rolled back")))))
    expect(failed._tag).toBe("Failure")
    await new Promise((r) => setTimeout(r, 100))
    expect((await on(a, Effect.map(DbCache, (c) => c.stats()))).invalidationsSent).toBe(sent)
    expect((await on(b, read(2)))[0]!.v).toBe(v)

    // inside a transaction: invalidated at COMMIT
    const inTx = await on(a, Db.withTransaction(bump(2)))
    expect((await on(a, read(2)))[0]!.v).toBe(inTx)
  })

  it("sql templates invalidate the same entries with Reactivity.mutation", async () => {
    await on(b, read(3))
    await on(a, Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* Reactivity.mutation(sql`UPDATE ${sql(table)} SET note = ${"changed"} WHERE id = ${3}`, { [table]: [3] })
    }))
    await new Promise((r) => setTimeout(r, 100))
    expect((await on(b, read(3)))[0]!.note).toBe("changed")
  })

  it("a whole-table invalidation drops row entries and table reads; a row one drops table reads only", async () => {
    const list = `SELECT count(*)::int AS n, sum(v)::int AS total FROM [${table}]`
    const readList = DbCache.cached<{ n: number; total: number }>(list, [], { keys: [table] })
    const before = (await on(a, readList))[0]!.total
    await on(a, read(4))
    await on(a, bump(5))
    expect((await on(a, readList))[0]!.total).toBe(before + 1)
    await on(a, Db.execute(`UPDATE [${table}] SET note = 'all' WHERE id = 4`, [], { invalidates: [table] }))
    expect((await on(a, read(4)))[0]!.note).toBe("all")
  })

  it("concurrent misses of one key run the query once per instance, and across instances 1 or 2 times", async () => {
    const seq = unique("cache_seq")
    await on(a, Db.execute(`CREATE SEQUENCE [${seq}]`))
    try {
      // a slow value: 100 ms to compute, and every computation counted by the sequence
      const slow = `SELECT nextval('${seq}') AS n, pg_sleep(0.1) IS NULL AS slept`
      const readSlow = DbCache.cached<{ n: string }>(slow, [], { keys: [seq], ttl: "30 seconds" })
      const readers = (runtime: typeof a) =>
        Promise.all(Array.from({ length: 250 }, () => on(runtime, readSlow)))
      const results = await Promise.all([readers(a), readers(b)])
      const computed = Number((await on(a, Db.execute<{ n: string }>(`SELECT last_value AS n FROM [${seq}]`)))[0]!.n)
      expect(computed).toBeGreaterThanOrEqual(1)
      expect(computed).toBeLessThanOrEqual(2)
      expect(results.flat()).toHaveLength(500)

      // at expiry: one process recomputes under the lock, the rest serve the stale value meanwhile
      const shortLived = DbCache.cached<{ n: string }>(`${slow}, 'short' AS kind`, [], { keys: [seq], ttl: "300 millis" })
      await on(a, shortLived)
      const filled = Number((await on(a, Db.execute<{ n: string }>(`SELECT last_value AS n FROM [${seq}]`)))[0]!.n)
      await new Promise((r) => setTimeout(r, 1_200))
      const expired = (runtime: typeof a) => Promise.all(Array.from({ length: 250 }, () => on(runtime, shortLived)))
      await Promise.all([expired(a), expired(b)])
      const recomputed = Number((await on(a, Db.execute<{ n: string }>(`SELECT last_value AS n FROM [${seq}]`)))[0]!.n) - filled
      expect(recomputed).toBeGreaterThanOrEqual(1)
      expect(recomputed).toBeLessThanOrEqual(2)
      const stale = (await on(a, Effect.map(DbCache, (c) => c.stats()))).staleServed +
        (await on(b, Effect.map(DbCache, (c) => c.stats()))).staleServed
      expect(stale).toBeGreaterThanOrEqual(1)
    } finally {
      await on(a, Db.execute(`DROP SEQUENCE IF EXISTS [${seq}]`))
    }
  })
})

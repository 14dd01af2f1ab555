import { describe, expect, it } from "@effect/vitest"
import { Db } from "@effect-dal/core"
import type { DbError } from "@effect-dal/core"
import { PgDatabase } from "@effect-dal/pg"
import { FaultProxy, PgCluster } from "@effect-dal/testkit"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as HashMap from "effect/HashMap"
import * as Logger from "effect/Logger"
import { admin, backends, PG_URL, unique } from "./helpers.js"

const terminate = (alias: string) =>
  admin((c) => c.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", [alias]))

/** Polls until `f` holds, for at most `millis`. */
const eventually = <E, R>(check: Effect.Effect<boolean, E, R>, millis = 5_000) =>
  Effect.gen(function*() {
    const deadline = Date.now() + millis
    while (!(yield* check)) {
      if (Date.now() > deadline) return yield* Effect.die(new Error("condition not met in time"))
      yield* Effect.sleep(20)
    }
  })

interface Captured {
  readonly message: string
  readonly annotations: Record<string, unknown>
}
const captureLogs = () => {
  const logs: Array<Captured> = []
  const logger = Logger.make(({ annotations, message }) => {
    logs.push({
      message: Array.isArray(message) ? message.join(" ") : String(message),
      annotations: Object.fromEntries(HashMap.toEntries(annotations))
    })
  })
  return { logs, layer: Logger.replace(Logger.defaultLogger, logger) }
}

describe("pool faults: PostgreSQL", () => {
  it.live("terminated idle backends are never handed out: the next 100 queries all succeed", () => {
    const alias = unique("term")
    return Effect.gen(function*() {
      yield* Effect.forEach(Array.from({ length: 4 }), () => Db.execute("SELECT pg_sleep(0.05)"), { concurrency: 4 })
      const before = (yield* backends(alias)).map((b) => b.pid)
      expect(before.length).toBe(4)
      yield* terminate(alias)
      yield* eventually(Effect.map(backends(alias), (rows) => rows.every((r) => !before.includes(r.pid))))
      yield* Effect.sleep(50)
      for (let i = 0; i < 100; i++) {
        const [row] = yield* Db.execute<{ pid: number }>("SELECT pg_backend_pid() AS pid")
        expect(before).not.toContain(row!.pid)
      }
    }).pipe(Effect.provide(PgDatabase.layer({ url: PG_URL, alias, pool: { min: 4, max: 4 } })))
  })

  it.live("a backend killed mid-query fails that call with a typed ConnectionError; the next call succeeds", () => {
    const alias = unique("kill")
    return Effect.gen(function*() {
      const fiber = yield* Effect.fork(Db.execute("SELECT pg_sleep(5)", [], { retry: false }))
      yield* eventually(Effect.map(backends(alias), (rows) => rows.some((r) => r.state === "active")))
      yield* terminate(alias)
      const exit = yield* Fiber.await(fiber)
      expect(Exit.isFailure(exit)).toBe(true)
      const error = Exit.isFailure(exit) && exit.cause._tag === "Fail" ? exit.cause.error as DbError.DbError : undefined
      expect(error?._tag).toBe("ConnectionError")
      expect(error?.transient).toBe(true)
      expect(yield* Db.execute("SELECT 1 AS ok")).toEqual([{ ok: 1 }])
    }).pipe(Effect.provide(PgDatabase.layer({ url: PG_URL, alias, pool: { min: 1, max: 1 } })))
  })

  it.live("a server restart under steady load: errors only during the outage, then success within 2 s and the pool refills", () =>
    Effect.gen(function*() {
      const cluster = yield* PgCluster.make(21_000 + (process.pid % 500))
      const layer = PgDatabase.layer({
        url: cluster.url,
        alias: unique("restart"),
        // no retries: this test watches the pool itself recover
        retry: false,
        pool: { min: 3, max: 5, acquireTimeout: "1 second" }
      })
      yield* Effect.gen(function*() {
        const db = yield* Db
        const outcomes: Array<{ at: number; ok: boolean; tag?: string }> = []
        let running = true
        const worker = Effect.gen(function*() {
          while (running) {
            const exit = yield* Effect.exit(Db.execute("SELECT 1"))
            outcomes.push({
              at: Date.now(),
              ok: Exit.isSuccess(exit),
              ...(Exit.isFailure(exit) && exit.cause._tag === "Fail" ? { tag: exit.cause.error._tag } : {})
            })
            yield* Effect.sleep(10)
          }
        })
        const workers = yield* Effect.forEach(Array.from({ length: 4 }), () => Effect.fork(worker))
        yield* Effect.sleep(300)
        const down = Date.now()
        yield* cluster.stop
        yield* Effect.sleep(500)
        yield* cluster.start
        const up = Date.now()
        yield* Effect.sleep(3_000)
        running = false
        yield* Fiber.joinAll(workers)
        const failures = outcomes.filter((o) => !o.ok)
        expect(failures.length).toBeGreaterThan(0) // the outage was real
        expect(outcomes.filter((o) => o.ok && o.at < down).length).toBeGreaterThan(0)
        // every failure happened during the outage or within 2 s of the server accepting again
        for (const f of failures) {
          expect(f.at).toBeGreaterThanOrEqual(down)
          expect(f.at).toBeLessThanOrEqual(up + 2_000)
          expect(["ConnectionError", "PoolTimeout", "QueryError"]).toContain(f.tag)
        }
        expect(outcomes.filter((o) => o.at > up + 2_000).every((o) => o.ok)).toBe(true)
        expect(outcomes.filter((o) => o.at > up + 2_000).length).toBeGreaterThan(10)
        yield* eventually(Effect.sync(() => db.poolStats().size >= 3), 3_000)
      }).pipe(Effect.provide(layer))
    }).pipe(Effect.scoped), 60_000)

  it.live("a blackholed network: every call fails within acquireTimeout with 'database unavailable', then recovers", () =>
    Effect.gen(function*() {
      const proxy = yield* FaultProxy.make({ host: "127.0.0.1", port: 5432 })
      const layer = PgDatabase.layer({
        host: proxy.host,
        port: proxy.port,
        database: "test",
        user: "postgres",
        alias: unique("blackhole"),
        connectTimeout: "500 millis",
        pool: { min: 2, max: 4, acquireTimeout: "1 second", validationWindow: "200 millis" }
      })
      yield* Effect.gen(function*() {
        yield* Effect.forEach(Array.from({ length: 2 }), () => Db.execute("SELECT 1"), { concurrency: 2 })
        yield* proxy.setMode(FaultProxy.blackhole)
        yield* Effect.sleep(300) // idle connections now need a ping, which goes unanswered
        const results = yield* Effect.forEach(
          Array.from({ length: 6 }),
          () =>
            Effect.gen(function*() {
              const start = Date.now()
              const error = yield* Effect.flip(Db.execute("SELECT 1"))
              return { error, elapsed: Date.now() - start }
            }),
          { concurrency: "unbounded" }
        )
        for (const { elapsed, error } of results) {
          expect(error).toMatchObject({ _tag: "PoolTimeout", reason: "unavailable" })
          expect(elapsed).toBeLessThan(1_000 + 400)
        }
        yield* proxy.setMode(FaultProxy.pass)
        yield* eventually(Effect.map(Effect.exit(Db.execute("SELECT 1")), Exit.isSuccess), 5_000)
        expect(yield* Db.execute("SELECT 2 AS two")).toEqual([{ two: 2 }])
      }).pipe(Effect.provide(layer))
    }).pipe(Effect.scoped), 30_000)

  it.live("a leak is logged with the alias, tags, time held and acquisition stack, and counted", () => {
    const alias = unique("leak")
    const { layer: logLayer, logs } = captureLogs()
    return Effect.gen(function*() {
      const db = yield* Db
      yield* Effect.scoped(Effect.zipRight(Db.transaction, Effect.sleep(600))).pipe(
        Db.withTags({ operation: "hold_forever" })
      )
      const leak = logs.find((l) => l.message.includes("connection leak suspected"))
      expect(leak).toBeDefined()
      expect(leak!.annotations["alias"]).toBe(alias)
      expect(leak!.annotations["tags"]).toEqual({ operation: "hold_forever" })
      expect(Number(leak!.annotations["heldMillis"])).toBeGreaterThanOrEqual(200)
      expect(String(leak!.annotations["acquiredAt"])).toContain("connection acquired here")
      expect(db.poolStats().leaks).toBe(1)
      expect(db.poolStats().active).toBe(0)
    }).pipe(
      Effect.provide(PgDatabase.layer({
        url: PG_URL,
        alias,
        pool: { min: 0, max: 2, leakDetectionThreshold: "200 millis", leakDetection: { captureStack: true } }
      })),
      Effect.provide(logLayer)
    )
  })

  it.live("leakAction 'reclaim' interrupts the holder and the pool gets the connection back", () => {
    const alias = unique("reclaim")
    const { layer: logLayer, logs } = captureLogs()
    return Effect.gen(function*() {
      const db = yield* Db
      const started = yield* Deferred.make<void>()
      const holder = yield* Effect.fork(
        Effect.scoped(Effect.zipRight(Db.transaction, Effect.zipRight(Deferred.succeed(started, undefined), Effect.never)))
      )
      yield* Deferred.await(started)
      const exit = yield* Fiber.await(holder)
      expect(Exit.isInterrupted(exit)).toBe(true)
      expect(logs.some((l) => l.message.includes("reclaiming"))).toBe(true)
      expect(db.poolStats()).toMatchObject({ active: 0, leaks: 1 })
      // the reclaimed connection was destroyed; the pool serves a new one, and no transaction stayed open
      expect(yield* Db.execute("SELECT 1 AS ok")).toEqual([{ ok: 1 }])
      const states = (yield* backends(alias)).map((b) => b.state ?? "")
      expect(states.filter((s) => s.includes("transaction"))).toEqual([])
    }).pipe(
      Effect.provide(PgDatabase.layer({
        url: PG_URL,
        alias,
        pool: { min: 0, max: 1, leakDetectionThreshold: "200 millis", leakAction: "reclaim" }
      })),
      Effect.provide(logLayer)
    )
  })

  it.live("a burst grows the pool to max; after the burst and idleTimeout it shrinks back to min", () => {
    const alias = unique("size")
    return Effect.gen(function*() {
      const db = yield* Db
      yield* eventually(Effect.sync(() => db.poolStats().size === 1))
      yield* Effect.forEach(Array.from({ length: 20 }), () => Db.execute("SELECT pg_sleep(0.05)"), { concurrency: 20 })
      expect(db.poolStats().size).toBe(5)
      expect((yield* backends(alias)).length).toBe(5)
      yield* eventually(Effect.sync(() => db.poolStats().size === 1), 3_000)
      yield* eventually(Effect.map(backends(alias), (rows) => rows.length === 1), 3_000)
    }).pipe(Effect.provide(PgDatabase.layer({ url: PG_URL, alias, pool: { min: 1, max: 5, idleTimeout: "300 millis" } })))
  })

  it.live("session state does not leak to the next borrower: a changed session is closed, not reused", () => {
    const alias = unique("session")
    return Effect.gen(function*() {
      const [first] = yield* Db.execute<{ pid: number }>("SELECT pg_backend_pid() AS pid")
      yield* Db.execute("SET statement_timeout = 1234")
      yield* Db.execute("CREATE TEMP TABLE dal_scratch (id int)")
      const [timeout] = yield* Db.execute<{ statement_timeout: string }>("SHOW statement_timeout")
      expect(timeout!.statement_timeout).toBe("0")
      const temp = yield* Effect.flip(Db.execute("SELECT * FROM dal_scratch"))
      expect(temp).toMatchObject({ code: "42P01" })
      const [after] = yield* Db.execute<{ pid: number }>("SELECT pg_backend_pid() AS pid")
      expect(after!.pid).not.toBe(first!.pid)
      // SET LOCAL ends with its transaction, so that connection is kept
      const [a] = yield* Db.withTransaction(Effect.zipRight(
        Db.execute("SET LOCAL statement_timeout = 999"),
        Db.execute<{ pid: number }>("SELECT pg_backend_pid() AS pid")
      ))
      const [b] = yield* Db.execute<{ pid: number }>("SELECT pg_backend_pid() AS pid")
      expect(b!.pid).toBe(a!.pid)
    }).pipe(Effect.provide(PgDatabase.layer({ url: PG_URL, alias, pool: { min: 0, max: 1 } })))
  })
})

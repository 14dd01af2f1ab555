import { describe, expect, it } from "@effect/vitest"
import { Db } from "@effect-dal/core"
import { PgDatabase } from "@effect-dal/pg"
import { Bank, FaultProxy } from "@effect-dal/testkit"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Schedule from "effect/Schedule"
import { admin, backends, PG_URL, unique } from "./helpers.js"

const CHAOS_MILLIS = Number(process.env["CHAOS_SECONDS"] ?? 20) * 1_000

const terminateOne = (alias: string, onlyActive = false) =>
  admin((c) =>
    c.query(
      `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 ${
        onlyActive ? "AND state = 'active'" : ""
      } ORDER BY random() LIMIT 1`,
      [alias]
    )
  )

describe("resilience: PostgreSQL", () => {
  it.live("a hard timeout cancels the statement on the server: gone from pg_stat_activity within 1 s", () => {
    const alias = unique("cancel")
    return Effect.gen(function*() {
      const start = Date.now()
      const error = yield* Effect.flip(Db.execute("SELECT pg_sleep(10)", [], { timeout: "200 millis" }))
      expect(error).toMatchObject({ _tag: "StatementTimeout", kind: "statement", timeoutMillis: 200 })
      expect(Date.now() - start).toBeLessThan(500)
      yield* Bank.eventually(
        Effect.map(backends(alias), (rows) => rows.every((r) => !r.query.includes("pg_sleep(10)") || r.state !== "active")),
        1_000
      )
      // interrupting the caller cancels the statement in the same way
      const fiber = yield* Effect.fork(Db.execute("SELECT pg_sleep(10) AS interrupted"))
      yield* Bank.eventually(Effect.map(backends(alias), (rows) => rows.some((r) => r.state === "active")))
      yield* Fiber.interrupt(fiber)
      yield* Bank.eventually(Effect.map(backends(alias), (rows) => rows.every((r) => r.state !== "active")), 1_000)
      expect(yield* Db.execute("SELECT 1 AS ok")).toEqual([{ ok: 1 }])
    }).pipe(Effect.provide(PgDatabase.layer({ url: PG_URL, alias, pool: { min: 1, max: 1 } })))
  })

  it.live("a transaction timeout rolls the whole transaction back", () => {
    const alias = unique("txto")
    const table = unique("txto_t")
    return Effect.gen(function*() {
      yield* Db.execute(`CREATE TABLE [${table}] (id int)`)
      const error = yield* Effect.flip(Db.withTransaction(
        Effect.zipRight(Db.execute(`INSERT INTO [${table}] VALUES (?)`, [1]), Db.execute("SELECT pg_sleep(5)")),
        { timeout: "300 millis" }
      ))
      expect(error).toMatchObject({ _tag: "StatementTimeout", kind: "transaction" })
      expect(yield* Db.execute(`SELECT * FROM [${table}]`)).toEqual([])
      yield* Bank.eventually(
        Effect.map(backends(alias), (rows) => rows.every((r) => !(r.state ?? "").includes("transaction"))),
        1_000
      )
      yield* Db.execute(`DROP TABLE [${table}]`)
    }).pipe(Effect.provide(PgDatabase.layer({ url: PG_URL, alias })))
  })

  it.live("a read killed mid-query is retried; a write lost with its connection is 'outcome unknown', unless idempotent", () => {
    const alias = unique("retry")
    const table = unique("retry_t")
    return Effect.gen(function*() {
      const db = yield* Db
      yield* Db.execute(`CREATE TABLE [${table}] (id int)`)
      const read = yield* Effect.fork(Db.execute<{ v: number }>("SELECT 42 AS v FROM pg_sleep(0.5)"))
      yield* Bank.eventually(Effect.map(backends(alias), (rows) => rows.some((r) => r.state === "active")))
      yield* terminateOne(alias, true)
      expect(yield* Fiber.join(read)).toEqual([{ v: 42 }])
      expect(db.resilienceStats().retries).toBeGreaterThanOrEqual(1)

      const write = yield* Effect.fork(Db.execute(`INSERT INTO [${table}] SELECT 1 FROM pg_sleep(0.5)`))
      yield* Bank.eventually(Effect.map(backends(alias), (rows) => rows.some((r) => r.state === "active")))
      yield* terminateOne(alias, true)
      const lost = yield* Effect.flip(Fiber.join(write))
      expect(lost).toMatchObject({ _tag: "OutcomeUnknown", phase: "write", category: "outcomeUnknown" })
      expect(lost.message).toContain("may or may not have been applied")

      const idem = yield* Effect.fork(
        Db.execute(`INSERT INTO [${table}] SELECT 2 FROM pg_sleep(0.5)`, [], { idempotent: true })
      )
      yield* Bank.eventually(Effect.map(backends(alias), (rows) => rows.some((r) => r.state === "active")))
      yield* terminateOne(alias, true)
      yield* Fiber.join(idem)
      expect(yield* Db.execute(`SELECT id FROM [${table}] WHERE id = 2`)).toEqual([{ id: 2 }])
      yield* Db.execute(`DROP TABLE [${table}]`)
    }).pipe(Effect.provide(PgDatabase.layer({ url: PG_URL, alias, pool: { min: 1, max: 2 } })))
  })

  it.live("a COMMIT lost with its connection is reported as 'outcome unknown', never as success or a plain failure", () => {
    const alias = unique("commit")
    const table = unique("commit_t")
    return Effect.gen(function*() {
      // a deferred constraint trigger makes COMMIT itself take a while
      yield* Db.execute(`CREATE TABLE [${table}] (id int)`)
      yield* Db.execute(
        `CREATE FUNCTION "${table}_slow"() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.5); RETURN NULL; END $$`
      )
      yield* Db.execute(
        `CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON [${table}] DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION "${table}_slow"()`
      )
      const started = yield* Deferred.make<void>()
      const tx = yield* Effect.fork(Db.withTransaction(
        Effect.zipRight(Db.execute(`INSERT INTO [${table}] VALUES (?)`, [1]), Deferred.succeed(started, undefined)),
        { retry: true }
      ))
      yield* Deferred.await(started)
      yield* Bank.eventually(Effect.map(backends(alias), (rows) => rows.some((r) => r.query === "COMMIT" && r.state === "active")))
      yield* terminateOne(alias, true)
      const error = yield* Effect.flip(Fiber.join(tx))
      expect(error).toMatchObject({ _tag: "OutcomeUnknown", phase: "commit" })
      yield* Db.execute(`DROP TABLE [${table}]`)
      yield* Db.execute(`DROP FUNCTION "${table}_slow"()`)
    }).pipe(Effect.provide(PgDatabase.layer({ url: PG_URL, alias })))
  })

  it.live("the breaker opens on infrastructure failures, fails fast while open, and closes through half-open probes", () =>
    Effect.gen(function*() {
      const proxy = yield* FaultProxy.make({ host: "127.0.0.1", port: 5432 })
      const alias = unique("breaker")
      const layer = PgDatabase.layer({
        host: proxy.host,
        port: proxy.port,
        database: "test",
        user: "postgres",
        alias,
        retry: false,
        connectTimeout: "300 millis",
        pool: { min: 1, max: 2, acquireTimeout: "400 millis" },
        circuitBreaker: {
          minimumCalls: 4,
          failureRateThreshold: 0.5,
          waitInOpen: Schedule.spaced("600 millis"),
          permittedCallsInHalfOpen: 2
        }
      })
      yield* Effect.gen(function*() {
        const db = yield* Db
        yield* Db.execute("SELECT 1")
        yield* proxy.setMode(FaultProxy.blackhole)
        yield* proxy.resetAll
        while (db.breaker!.state() === "closed") {
          const error = yield* Effect.flip(Db.execute("SELECT 1"))
          expect(["PoolTimeout", "ConnectionError"]).toContain(error._tag)
        }
        expect(db.breaker!.state()).toBe("open")
        const connectionsBefore = proxy.connections()
        const start = Date.now()
        for (let i = 0; i < 20; i++) {
          const error = yield* Effect.flip(Db.execute("SELECT 1"))
          expect(error).toMatchObject({ _tag: "CircuitOpen", alias, category: "circuitOpen" })
        }
        expect(Date.now() - start).toBeLessThan(50) // fast: no pool wait, no network
        expect(proxy.connections()).toBe(connectionsBefore)
        yield* proxy.setMode(FaultProxy.pass)
        yield* Effect.sleep(650)
        yield* Bank.eventually(
          Effect.map(Effect.exit(Db.execute("SELECT 1")), () => db.breaker!.state() === "closed"),
          5_000
        )
        expect(yield* Db.execute("SELECT 1 AS ok")).toEqual([{ ok: 1 }])
        expect(db.breaker!.stats().transitions).toBeGreaterThanOrEqual(3) // open, half-open, closed
      }).pipe(Effect.provide(layer))
    }).pipe(Effect.scoped), 30_000)

  it.live("an exhausted pool never counts against the breaker; an unavailable database counts once per call, statement or transaction", () =>
    Effect.gen(function*() {
      yield* Effect.gen(function*() {
        const db = yield* Db
        const release = yield* Deferred.make<void>()
        const holder = yield* Effect.fork(Effect.scoped(Effect.zipRight(Db.transaction, Deferred.await(release))))
        yield* Effect.sleep(50)
        expect(yield* Effect.flip(Db.execute("SELECT 1"))).toMatchObject({ _tag: "PoolTimeout", reason: "exhausted" })
        expect(yield* Effect.flip(Db.withTransaction(Db.execute("SELECT 1")))).toMatchObject({ _tag: "PoolTimeout" })
        expect(db.breaker!.stats().failures).toBe(0)
        yield* Deferred.succeed(release, undefined)
        yield* Fiber.join(holder)
        expect(yield* Db.execute("SELECT 1 AS ok")).toEqual([{ ok: 1 }])
      }).pipe(Effect.provide(PgDatabase.layer({
        url: PG_URL,
        alias: unique("exhausted"),
        retry: false,
        pool: { min: 1, max: 1, acquireTimeout: "150 millis" }
      })))
      // a database that never answers: connecting hangs, so the wait is for the database
      const proxy = yield* FaultProxy.make({ host: "127.0.0.1", port: 5432 })
      yield* proxy.setMode(FaultProxy.blackhole)
      yield* Effect.gen(function*() {
        const db = yield* Db
        expect(yield* Effect.flip(Db.execute("SELECT 1"))).toMatchObject({ _tag: "PoolTimeout", reason: "unavailable" })
        expect(db.breaker!.stats().failures).toBe(1)
        expect(yield* Effect.flip(Db.withTransaction(Db.execute("SELECT 1")))).toMatchObject({
          _tag: "PoolTimeout",
          reason: "unavailable"
        })
        expect(db.breaker!.stats().failures).toBe(2)
      }).pipe(Effect.provide(PgDatabase.layer({
        host: proxy.host,
        port: proxy.port,
        database: "test",
        user: "postgres",
        alias: unique("unavailable"),
        retry: false,
        connectTimeout: "2 seconds",
        pool: { min: 0, max: 1, acquireTimeout: "150 millis" }
      })))
    }).pipe(Effect.scoped), 15_000)

  it.live("1000 unique violations do not open the breaker", () => {
    const alias = unique("uniq")
    const table = unique("uniq_t")
    return Effect.gen(function*() {
      const db = yield* Db
      yield* Db.execute(`CREATE TABLE [${table}] (id int PRIMARY KEY)`)
      yield* Db.execute(`INSERT INTO [${table}] VALUES (1)`)
      for (let i = 0; i < 1000; i++) {
        const error = yield* Effect.flip(Db.execute(`INSERT INTO [${table}] VALUES (?)`, [1]))
        expect(error._tag).toBe("ConstraintViolation")
      }
      expect(db.breaker!.state()).toBe("closed")
      expect(db.breaker!.stats().failures).toBe(0)
      yield* Db.execute(`DROP TABLE [${table}]`)
    }).pipe(Effect.provide(PgDatabase.layer({
      url: PG_URL,
      alias,
      circuitBreaker: { minimumCalls: 5, failureRateThreshold: 0.1 }
    })))
  })

  it.live("the bank invariant holds under chaos", () =>
    Effect.gen(function*() {
      const proxy = yield* FaultProxy.make({ host: "127.0.0.1", port: 5432 })
      const alias = unique("bank")
      const layer = PgDatabase.layer({
        host: proxy.host,
        port: proxy.port,
        database: "test",
        user: "postgres",
        alias,
        connectTimeout: "1 second",
        transactionTimeout: "5 seconds",
        pool: { min: 4, max: 10, acquireTimeout: "2 seconds" },
        circuitBreaker: { minimumCalls: 50, failureRateThreshold: 0.9, waitInOpen: Schedule.spaced("200 millis") }
      })
      const report = yield* Bank.run(unique("bank").slice(0, 40), {
        accounts: 50,
        workers: 16,
        durationMillis: CHAOS_MILLIS,
        callBoundMillis: 8_000,
        chaosEveryMillis: 300,
        chaos: {
          terminateBackend: Effect.asVoid(terminateOne(alias)),
          cancelQuery: Effect.asVoid(admin((c) =>
            c.query(
              "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND state = 'active' ORDER BY random() LIMIT 1",
              [alias]
            )
          )),
          latency: Effect.zipRight(proxy.setMode(FaultProxy.latency(30)), Effect.delay(proxy.setMode(FaultProxy.pass), 500)),
          resetConnections: proxy.resetAll
        },
        heal: proxy.setMode(FaultProxy.pass),
        openTransactions: Effect.map(backends(alias), (rows) => rows.filter((r) => (r.state ?? "").includes("transaction")).length)
      }).pipe(Effect.provide(layer))
      console.log(`bank under chaos (PostgreSQL, ${CHAOS_MILLIS / 1000} s): ${JSON.stringify(report)}`)
      expect(report.committed).toBeGreaterThan(100)
      expect(Object.values(report.chaosActions).reduce((a, b) => a + b, 0)).toBeGreaterThan(10)
    }).pipe(Effect.scoped), CHAOS_MILLIS + 60_000)
})

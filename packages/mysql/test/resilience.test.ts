import { describe, expect, it } from "@effect/vitest"
import { Db } from "@effect-dal/core"
import { MysqlDatabase } from "@effect-dal/mysql"
import { Bank, FaultProxy } from "@effect-dal/testkit"
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import { admin, MYSQL_URL, scopedDatabase, threads, unique } from "./helpers.js"

const CHAOS_MILLIS = Number(process.env["CHAOS_SECONDS"] ?? 20) * 1_000

const randomThread = (database: string, onlyQuerying: boolean) =>
  Effect.map(threads(database), (rows) => {
    const candidates = rows.filter((r) => !onlyQuerying || r.command === "Query")
    return candidates[Math.floor(Math.random() * candidates.length)]?.id
  })

const kill = (database: string, what: "CONNECTION" | "QUERY") =>
  Effect.flatMap(randomThread(database, what === "QUERY"), (id) =>
    id === undefined ? Effect.void : Effect.asVoid(admin((c) => c.query(`KILL ${what} ${Number(id)}`).catch(() => undefined))))

const openTransactions = (database: string) =>
  admin(async (c) => {
    const [rows] = await c.query(
      "SELECT count(*) AS n FROM information_schema.INNODB_TRX t JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id WHERE p.DB = ?",
      [database]
    )
    return Number((rows as Array<{ n: number }>)[0]!.n)
  })

describe("resilience: MariaDB", () => {
  it.live("a hard timeout kills the statement on the server (KILL QUERY): gone within 1 s", () => {
    const database = unique("dal_cancel")
    return Effect.gen(function*() {
      yield* scopedDatabase(database)
      yield* Effect.gen(function*() {
        const start = Date.now()
        const error = yield* Effect.flip(Db.execute("SELECT SLEEP(10)", [], { timeout: "200 millis" }))
        expect(error).toMatchObject({ _tag: "StatementTimeout", timeoutMillis: 200 })
        expect(Date.now() - start).toBeLessThan(500)
        yield* Bank.eventually(Effect.map(threads(database), (rows) => rows.every((r) => r.command !== "Query")), 1_000)
        expect(yield* Db.execute("SELECT 1 AS ok")).toEqual([{ ok: 1 }])
      }).pipe(Effect.provide(MysqlDatabase.layer({ url: MYSQL_URL, database, pool: { max: 1 } })))
      // the layer closed: no connection of ours is left on the server
      expect(yield* threads(database)).toEqual([])
    }).pipe(Effect.scoped)
  })

  it.live("1000 duplicate keys do not open the breaker", () => {
    const table = unique("uniq")
    return Effect.gen(function*() {
      const db = yield* Db
      yield* Db.execute(`CREATE TABLE [${table}] (id int PRIMARY KEY)`)
      yield* Db.execute(`INSERT INTO [${table}] VALUES (1)`)
      for (let i = 0; i < 1000; i++) {
        expect((yield* Effect.flip(Db.execute(`INSERT INTO [${table}] VALUES (?)`, [1])))._tag).toBe("ConstraintViolation")
      }
      expect(db.breaker!.stats()).toMatchObject({ state: "closed", failures: 0 })
      yield* Db.execute(`DROP TABLE [${table}]`)
    }).pipe(Effect.provide(MysqlDatabase.layer({
      url: MYSQL_URL,
      alias: unique("uniq"),
      circuitBreaker: { minimumCalls: 5, failureRateThreshold: 0.1 }
    })))
  })

  it.live("the bank invariant holds under chaos", () => {
    const database = unique("dal_bank")
    return Effect.gen(function*() {
      yield* scopedDatabase(database)
      const proxy = yield* FaultProxy.make({ host: "127.0.0.1", port: 3306 })
      const layer = MysqlDatabase.layer({
        host: proxy.host,
        port: proxy.port,
        user: "root",
        database,
        connectTimeout: "1 second",
        transactionTimeout: "5 seconds",
        pool: { min: 4, max: 10, acquireTimeout: "2 seconds" },
        circuitBreaker: { minimumCalls: 50, failureRateThreshold: 0.9, waitInOpen: Schedule.spaced("200 millis") }
      })
      const report = yield* Bank.run("bank", {
        accounts: 50,
        workers: 16,
        durationMillis: CHAOS_MILLIS,
        callBoundMillis: 8_000,
        chaosEveryMillis: 300,
        chaos: {
          killConnection: kill(database, "CONNECTION"),
          killQuery: kill(database, "QUERY"),
          latency: Effect.zipRight(proxy.setMode(FaultProxy.latency(30)), Effect.delay(proxy.setMode(FaultProxy.pass), 500)),
          resetConnections: proxy.resetAll
        },
        heal: proxy.setMode(FaultProxy.pass),
        openTransactions: openTransactions(database)
      }).pipe(Effect.provide(layer))
      console.log(`bank under chaos (MariaDB, ${CHAOS_MILLIS / 1000} s): ${JSON.stringify(report)}`)
      expect(report.committed).toBeGreaterThan(100)
      expect(Object.values(report.chaosActions).reduce((a, b) => a + b, 0)).toBeGreaterThan(10)
    }).pipe(Effect.scoped)
  }, CHAOS_MILLIS + 60_000)
})

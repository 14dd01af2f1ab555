/**
 * Two replica routers in one program, over different databases: each
 * router's statements run on its own database, whatever transaction of the
 * other router the fiber is in.
 */
import { Db, Metrics, Replication } from "@effect-dal/core"
import type { DbService } from "@effect-dal/core"
import { PgDatabase } from "@effect-dal/pg"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as Schedule from "effect/Schedule"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { admin, PG_URL, schemaFor, unique } from "./helpers.js"

const OTHER_URL = PG_URL.replace(/\/[^/?]+(\?|$)/, "/postgres$1")
const schema = unique("dal_routers")
const { create, drop } = schemaFor(schema)
beforeAll(() => Effect.runPromise(Effect.zipRight(create, admin((c) => c.query(`CREATE SCHEMA "${schema}"`), OTHER_URL))))
afterAll(() => Effect.runPromise(Effect.zipRight(drop, admin((c) => c.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`), OTHER_URL))))

/** A router whose one replica is its primary's own server: reads and writes both reach `url`'s database. */
const router = (url: string) =>
  Effect.map(
    Layer.build(PgDatabase.layer({ url: Redacted.make(url), alias: unique("r"), pool: { max: 3 }, replicas: [{ url: Redacted.make(url), alias: unique("rr") }] })),
    (context) => Context.get(context, Db) as DbService
  )

const database = (db: DbService) => Effect.map(db.execute<{ name: string }>("SELECT current_database() AS name"), (rows) => rows[0]!.name)

describe("PostgreSQL: two replica routers over different databases", () => {
  it("inside one router's transaction, the other's reads and writes run on its own database, outside that transaction", async () => {
    const table = `${schema}.${unique("t")}`
    const result = await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const a = yield* router(PG_URL)
      const b = yield* router(OTHER_URL)
      yield* b.execute(`CREATE TABLE [${table}] (id int PRIMARY KEY)`)
      const seen = yield* Effect.flip(a.withTransaction(Effect.gen(function*() {
        const inA = yield* database(a)
        const inB = yield* database(b)
        // a write through the other router: its own database, committed on its own
        yield* b.execute(`INSERT INTO [${table}] VALUES (?)`, [1])
        return yield* Effect.fail({ inA, inB })
      })))
      const kept = yield* b.execute<{ n: number }>(`SELECT count(*)::int AS n FROM [${table}]`)
      // and the other way round, with `Db.transaction` (scoped)
      const scoped = yield* Effect.scoped(Effect.flatMap(b.transaction, () => Effect.all([database(a), database(b)])))
      return { seen, kept: kept[0]!.n, scoped }
    })))
    expect(result.seen).toEqual({ inA: "test", inB: "postgres" })
    expect(result.kept).toBe(1)
    expect(result.scoped).toEqual(["test", "postgres"])
  })
})

/** Statements the primary of `db` has observed (every duration sample). */
const observed = (db: DbService) =>
  Effect.map(Metrics.samples(db.metricLabels), (samples) =>
    samples
      .filter((s) => s.name === "db.client.operation.duration")
      .reduce((n, s) => n + (s.value as { readonly count: number }).count, 0))

/** Writes each followed by a read that needs its position: the router learns that reads follow writes. */
const readsAfterWrites = (db: DbService, table: string) =>
  Effect.forEach([101, 102, 103, 104], (id) =>
    Effect.zipRight(
      db.execute(`INSERT INTO [${table}] VALUES (?)`, [id]),
      db.execute(`SELECT count(*) AS n FROM [${table}]`)
    ), { discard: true })

/** The fiber's read-your-writes mark for `db`. */
const markOf = (db: DbService) => Effect.map(FiberRef.get(Replication.currentWrites), (writes) => writes.get(db.alias))

const value = (lsn: string) => lsn.split("/").reduce((n, part) => n * 2n ** 32n + BigInt(`0x${part}`), 0n)

describe("PostgreSQL: the commit position of read-your-writes comes back with the COMMIT", () => {
  it("where reads follow writes, a routed transaction's COMMIT brings its position back: the fiber's token needs no round trip; where none do, it is read when needed", async () => {
    const table = `${schema}.${unique("p")}`
    const result = await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const db = yield* router(PG_URL)
      yield* db.execute(`CREATE TABLE [${table}] (id int PRIMARY KEY)`)
      const lsn = () => Effect.map(db.execute<{ l: string }>("SELECT pg_current_wal_insert_lsn()::text AS l"), (r) => r[0]!.l)
      const mark = markOf(db)
      // writes no read has followed yet: the COMMIT goes alone, and the position stays to be read
      yield* db.withTransaction(db.execute(`INSERT INTO [${table}] VALUES (?)`, [1]))
      const lazy = yield* mark
      yield* readsAfterWrites(db, table)
      const before = yield* Replication.primary(lsn())
      let reported: string | undefined
      yield* db.withTransaction(db.execute(`INSERT INTO [${table}] VALUES (?)`, [2]), { onCommitPosition: (p) => (reported = p) })
      const pipelined = yield* mark
      const afterCommit = yield* observed(db)
      const token = yield* db.commitToken
      const afterToken = yield* observed(db)
      // read-your-writes: this read sees the insert
      const rows = yield* db.execute<{ n: number }>(`SELECT count(*)::int AS n FROM [${table}] WHERE id = ?`, [2])
      const after = yield* Replication.primary(lsn())
      return { lazy, before, reported, after, token, pipelined, seen: rows[0]!.n, statementsForTheToken: afterToken - afterCommit }
    })))
    expect(result.lazy?.pending).toBe(true)
    expect(result.seen).toBe(1)
    expect(result.statementsForTheToken).toBe(0)
    expect(result.pipelined).toEqual({ pending: false, position: result.reported })
    expect(result.token).toBe(Replication.encodeToken(result.reported!))
    expect(result.reported).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/)
    expect(value(result.reported!)).toBeGreaterThan(value(result.before))
    expect(value(result.reported!)).toBeLessThanOrEqual(value(result.after))
  })

  it("a COMMIT that fails fails the transaction with its own error; no position is reported, and the pool stays whole", async () => {
    const table = `${schema}.${unique("d")}`
    const result = await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const db = yield* router(PG_URL)
      yield* db.execute(`CREATE TABLE [${table}] (id int, CONSTRAINT u UNIQUE (id) DEFERRABLE INITIALLY DEFERRED)`)
      yield* readsAfterWrites(db, table)
      let reported = false
      const failed = yield* Effect.flip(db.withTransaction(
        Effect.zipRight(db.execute(`INSERT INTO [${table}] VALUES (?)`, [1]), db.execute(`INSERT INTO [${table}] VALUES (?)`, [1])),
        { onCommitPosition: () => (reported = true) }
      ))
      const rows = yield* db.execute<{ n: number }>(`SELECT count(*)::int AS n FROM [${table}] WHERE id = ?`, [1])
      // the connections are still good: a transaction after it commits, its position read with the COMMIT
      let position: string | undefined
      yield* db.withTransaction(db.execute(`INSERT INTO [${table}] VALUES (?)`, [2]), { onCommitPosition: (p) => (position = p) })
      const later = yield* Replication.primary(db.execute<{ n: number }>(`SELECT count(*)::int AS n FROM [${table}] WHERE id = ?`, [2]))
      return { tag: failed._tag, code: "code" in failed ? failed.code : undefined, reported, n: rows[0]!.n, later: later[0]!.n, position }
    })))
    expect(result).toMatchObject({ tag: "ConstraintViolation", code: "23505", reported: false, n: 0, later: 1 })
    expect(result.position).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/)
  })
})

describe("PostgreSQL: a routed read that is interrupted", () => {
  it("stays in flight on its replica until its cancelled statement has freed the connection, then is counted out", async () => {
    const result = await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const db = yield* router(PG_URL)
      const replica = () => db.replicationStats().find((n) => n.role === "replica")!
      const usable = replica().usable
      // each one interrupted while the server sleeps; the statements are cancelled in the background
      yield* Effect.forEach(
        Array.from({ length: 6 }, () => Effect.timeout(db.execute("SELECT pg_sleep(2)"), "100 millis")),
        (read) => Effect.flip(read),
        { concurrency: 3, discard: true }
      )
      const afterInterrupted = replica()
      // well before the sleeps would have ended: the cancellations free the connections
      const settled = yield* Effect.either(Effect.retry(
        Effect.suspend(() => replica().readsInFlight === 0 ? Effect.void : Effect.fail("in flight")),
        Schedule.spaced("20 millis").pipe(Schedule.upTo("1500 millis"))
      ))
      const finished = yield* db.execute<{ one: number }>("SELECT 1 AS one")
      return { usable, afterInterrupted, settled: settled._tag, after: replica(), one: finished[0]!.one }
    })))
    expect(result.usable).toBe(true)
    expect(result.afterInterrupted.reads).toBe(6)
    expect(result.settled).toBe("Right")
    expect(result.after).toMatchObject({ reads: 7, readsInFlight: 0 })
    expect(result.one).toBe(1)
  })
})

describe("PostgreSQL: the read-your-writes mark of writes in a row", () => {
  it("stays pending over writes with no read between them, and the read after them waits for a position past the last", async () => {
    const table = `${schema}.${unique("m")}`
    const result = await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const db = yield* router(PG_URL)
      yield* db.execute(`CREATE TABLE [${table}] (id int PRIMARY KEY)`)
      const mark = markOf(db)
      const lsn = Effect.map(Replication.primary(db.execute<{ l: string }>("SELECT pg_current_wal_insert_lsn()::text AS l")), (r) => r[0]!.l)
      const count = Effect.map(db.execute<{ n: number }>(`SELECT count(*)::int AS n FROM [${table}]`), (r) => r[0]!.n)
      yield* db.execute(`INSERT INTO [${table}] VALUES (?)`, [1])
      yield* count
      const resolved = yield* mark
      yield* db.execute(`INSERT INTO [${table}] VALUES (?)`, [2])
      const afterOne = yield* mark
      yield* db.execute(`INSERT INTO [${table}] VALUES (?)`, [3])
      const afterTwo = yield* mark
      const last = yield* lsn
      const seen = yield* count
      return { resolved, afterOne, afterTwo, last, seen, final: yield* mark }
    })))
    expect(result.resolved?.pending).toBe(false)
    expect(result.afterOne?.pending).toBe(true)
    expect(result.afterTwo?.pending).toBe(true)
    expect(result.seen).toBe(3)
    expect(result.final?.pending).toBe(false)
    expect(value(result.final!.position!)).toBeGreaterThan(value(result.resolved!.position!))
    expect(value(result.final!.position!)).toBeGreaterThanOrEqual(value(result.last))
  })
})

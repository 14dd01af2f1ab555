/**
 * `createPgPool` against node-postgres' documented pool behaviour: `query`
 * with a callback and a promise, `connect`/`release`, `release(err)`, `end`,
 * the events, the counts, errors with pg's fields, and a pool that stays
 * usable after errors.
 */
import { createPgPool } from "@effect-dal/pg"
import type { DalPgClient, DalPgPool } from "@effect-dal/pg/PgPool"
import * as Pg from "pg"
import Cursor from "pg-cursor"
import { afterAll, describe, expect, it } from "vitest"
import { Traffic } from "@effect-dal/testkit"
import * as Effect from "effect/Effect"
import { admin as adminEffect, backends, PG_URL, unique } from "./helpers.js"

// the suite is Promise code: the package's Effect helpers, run as promises
const admin = <A>(f: (c: Pg.Client) => Promise<A>) => Effect.runPromise(adminEffect(f))
const sessions = (alias: string) => Effect.runPromise(Effect.map(backends(alias), (rows) => rows.map((r) => r.pid)))

const pools: Array<DalPgPool> = []
const make = (options: Parameters<typeof createPgPool>[0] = {}) => {
  const alias = unique("pgpool")
  const pool = createPgPool({ connectionString: PG_URL, max: 4, alias, ...options })
  pools.push(pool)
  return { pool, alias }
}

afterAll(async () => {
  await Promise.all(pools.map((p) => (p.ending ? undefined : p.end())))
})

describe("createPgPool: node-postgres' pool interface", () => {
  it("is a pg.Pool", () => {
    const { pool } = make()
    expect(pool).toBeInstanceOf(Pg.Pool)
  })

  it("query with a promise returns pg's result shape", async () => {
    const { pool } = make()
    const result = await pool.query("SELECT $1::int AS n, $2::text AS s", [7, "x"])
    expect(result.rows).toEqual([{ n: 7, s: "x" }])
    expect(result.rowCount).toBe(1)
    expect(result.command).toBe("SELECT")
    expect(result.fields.map((f: Pg.FieldDef) => [f.name, f.dataTypeID])).toEqual([["n", 23], ["s", 25]])
    const multi = await pool.query("SELECT 1 AS a; SELECT 2 AS b") as unknown as Array<Pg.QueryResult>
    expect(multi.map((r) => r.rows)).toEqual([[{ a: 1 }], [{ b: 2 }]])
  })

  it("query with a callback", async () => {
    const { pool } = make()
    const result = await new Promise<Pg.QueryResult>((resolve, reject) =>
      pool.query("SELECT $1::int AS n", [1], (err: Error | null, res: Pg.QueryResult) => (err ? reject(err) : resolve(res)))
    )
    expect(result.rows).toEqual([{ n: 1 }])
    const error = await new Promise<Error>((resolve) => pool.query("SELEC 1", (err: Error) => resolve(err)))
    expect((error as any).code).toBe("42601")
  })

  it("takes a query config: rowMode array and per-query type parsers; native SQL is not translated", async () => {
    const { pool } = make()
    const arrays = await pool.query({ text: "SELECT 1::int AS a, 'x' AS b", rowMode: "array" })
    expect(arrays.rows).toEqual([[1, "x"]])
    const raw = await pool.query({
      text: "SELECT now() AS t, 5::int8 AS big",
      types: { getTypeParser: () => (value: string) => `raw:${value}` }
    } as Pg.QueryConfig)
    expect(raw.rows[0].t).toMatch(/^raw:/)
    expect(raw.rows[0].big).toBe("raw:5")
    // `?` is jsonb's operator and `[1]` a subscript here, not portable SQL
    const native = await pool.query(`SELECT '{"a":1}'::jsonb ? 'a' AS has, (ARRAY[10,20])[1] AS first`)
    expect(native.rows).toEqual([{ has: true, first: 10 }])
  })

  it("a prepared statement's per-query type parsers apply each time, on the connection that described it without them", async () => {
    // one connection: every run below is the same prepared statement, described once
    const { pool } = make({ max: 1 })
    const text = "SELECT $1::int8 AS big"
    const raw = { getTypeParser: () => (value: string) => `raw:${value}` }
    expect((await pool.query(text, [5])).rows).toEqual([{ big: "5" }])
    expect((await pool.query({ text, values: [6], types: raw } as Pg.QueryConfig)).rows).toEqual([{ big: "raw:6" }])
    expect((await pool.query(text, [7])).rows).toEqual([{ big: "7" }])
    expect((await pool.query({ text, values: [8], types: raw } as Pg.QueryConfig)).rows).toEqual([{ big: "raw:8" }])
  })

  it("connect and release: the client is one of our pooled connections, BEGIN/COMMIT sent by the caller work", async () => {
    const { pool } = make()
    const table = unique("pgpool_tx")
    await pool.query(`CREATE TABLE ${table} (id int PRIMARY KEY)`)
    try {
      const client = await pool.connect()
      await client.query("BEGIN")
      await client.query(`INSERT INTO ${table} VALUES ($1)`, [1])
      expect((await pool.query(`SELECT * FROM ${table}`)).rows).toEqual([])
      await client.query("COMMIT")
      expect((await pool.query(`SELECT * FROM ${table}`)).rows).toEqual([{ id: 1 }])
      client.release()
      expect(() => client.release()).toThrow("already been released")

      // released inside an open transaction: rolled back before the connection is reused
      const open = await pool.connect()
      await open.query("BEGIN")
      await open.query(`INSERT INTO ${table} VALUES ($1)`, [2])
      open.release()
      const next = await pool.connect()
      expect((await next.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = pg_backend_pid() AND xact_start IS NOT NULL")).rows)
        .toEqual([{ n: 1 }])
      expect((await next.query(`SELECT * FROM ${table} ORDER BY id`)).rows).toEqual([{ id: 1 }])
      next.release()

      // the callback form gets (err, client, done)
      await new Promise<void>((resolve, reject) =>
        pool.connect((err: Error | undefined, c: Pg.PoolClient, done: (release?: any) => void) => {
          if (err) return reject(err)
          c.query("SELECT 1 AS one").then((r) => {
            expect(r.rows).toEqual([{ one: 1 }])
            done()
            resolve()
          }, reject)
        })
      )
    } finally {
      await pool.query(`DROP TABLE ${table}`)
    }
  })

  it("a client's BEGIN goes out with its first statement: nothing is sent for it alone, a cursor runs inside it, a refused one fails that statement", async () => {
    const { pool } = make()
    const table = unique("pgpool_begin")
    await pool.query(`CREATE TABLE ${table} (id int PRIMARY KEY)`)
    const state = async (pid: number) =>
      (await admin((c) => c.query("SELECT state FROM pg_stat_activity WHERE pid = $1", [pid]))).rows[0]?.state
    try {
      const client = await pool.connect()
      const pid = (client as unknown as DalPgClient).processID!
      const begun = await client.query("BEGIN")
      expect(begun.command).toBe("BEGIN")
      // held: the backend has not been asked anything
      expect(await state(pid)).toBe("idle")
      await client.query(`INSERT INTO ${table} VALUES ($1)`, [1])
      expect(await state(pid)).toBe("idle in transaction")
      await client.query("ROLLBACK")

      // a cursor after a held BEGIN: the BEGIN goes first, and the cursor reads inside the transaction
      await client.query("BEGIN ISOLATION LEVEL REPEATABLE READ")
      const cursor = client.query(new Cursor("SELECT current_setting('transaction_isolation') AS level"))
      const read = await cursor.read(10)
      await cursor.close()
      expect(read).toEqual([{ level: "repeatable read" }])
      expect(await state(pid)).toBe("idle in transaction")
      await client.query("COMMIT")

      // a BEGIN the server refuses fails the statement it went out with, which never ran
      await client.query("BEGIN ISOLATION LEVEL NONSENSE")
      const refused = await client.query(`INSERT INTO ${table} VALUES ($1)`, [2]).catch((e: any) => e)
      expect(refused.code).toBe("42601")
      expect((await client.query(`SELECT id FROM ${table}`)).rows).toEqual([])
      client.release()
    } finally {
      await pool.query(`DROP TABLE ${table}`)
    }
  })

  it("release(err) destroys the client: 'remove' is emitted and its backend goes away", async () => {
    const { alias, pool } = make({ min: 0 })
    const removed: Array<unknown> = []
    pool.on("remove", (client) => removed.push(client))
    const client = await pool.connect() as unknown as DalPgClient
    const pid = client.processID!
    expect(await sessions(alias)).toContain(pid)
    client.release(new Error("broken"))
    expect(await Traffic.until(() => removed.includes(client))).toBe(true)
    expect(await Traffic.until(async () => !(await sessions(alias)).includes(pid))).toBe(true)
    const another = await pool.connect() as unknown as DalPgClient
    expect(another.processID).not.toBe(pid)
    another.release(true)
    expect(await Traffic.until(() => removed.includes(another))).toBe(true)
  })

  it("emits connect, acquire and release, and error for an idle client whose backend dies", async () => {
    const { pool } = make({ min: 0, max: 2 })
    const events: Array<string> = []
    const errors: Array<[Error, unknown]> = []
    pool.on("connect", () => events.push("connect"))
    pool.on("acquire", () => events.push("acquire"))
    pool.on("release", (err) => events.push(err === undefined ? "release" : "release(err)"))
    pool.on("error", (err, client) => errors.push([err, client]))
    await pool.query("SELECT 1") // builds the pool and starts listening
    events.length = 0
    const client = await pool.connect() as unknown as DalPgClient
    const held = await pool.connect()
    client.release()
    held.release()
    expect(events.filter((e) => e === "connect").length).toBeGreaterThanOrEqual(1)
    expect(events.filter((e) => e === "acquire")).toHaveLength(2)
    expect(events.filter((e) => e === "release")).toHaveLength(2)
    // an idle client's backend is terminated: the pool reports it, and serves the next query on another
    await admin((c) => c.query("SELECT pg_terminate_backend($1)", [client.processID]))
    expect(await Traffic.until(() => errors.length > 0)).toBe(true)
    expect(errors[0]![1]).toBe(client)
    expect((await pool.query("SELECT 1 AS ok")).rows).toEqual([{ ok: 1 }])
  })

  it("counts: totalCount, idleCount and waitingCount", async () => {
    const { pool } = make({ min: 0, max: 2 })
    await pool.query("SELECT 1")
    const a = await pool.connect()
    const b = await pool.connect()
    expect(pool.totalCount).toBe(2)
    expect(pool.idleCount).toBe(0)
    const c = pool.connect()
    expect(await Traffic.until(() => pool.waitingCount === 1)).toBe(true)
    a.release()
    const third = await c
    expect(pool.waitingCount).toBe(0)
    b.release()
    third.release()
    expect(await Traffic.until(() => pool.idleCount === 2)).toBe(true)
    expect(pool.totalCount).toBe(2)
  })

  it("end waits for checked-out clients, then refuses new work", async () => {
    const { alias, pool } = make()
    const client = await pool.connect()
    let ended = false
    const ending = pool.end().then(() => {
      ended = true
    })
    await new Promise((r) => setTimeout(r, 300))
    expect(ended).toBe(false)
    expect(pool.ending).toBe(true)
    await client.query("SELECT 1") // the checked-out client still works while the pool drains
    client.release()
    await ending
    expect(pool.ended).toBe(true)
    await expect(pool.query("SELECT 1")).rejects.toThrow("Cannot use a pool after calling end on the pool")
    await expect(pool.connect()).rejects.toThrow("Cannot use a pool after calling end on the pool")
    expect(await Traffic.until(async () => (await sessions(alias)).length === 0)).toBe(true)
  })

  it("errors keep pg's fields (code, detail, constraint, table, position) and our classification; the pool stays usable", async () => {
    const { pool } = make({ max: 2 })
    const table = unique("pgpool_err")
    await pool.query(`CREATE TABLE ${table} (id int CONSTRAINT ${table}_pk PRIMARY KEY)`)
    try {
      await pool.query(`INSERT INTO ${table} VALUES (1)`)
      const dup = await pool.query(`INSERT INTO ${table} VALUES (1)`).catch((e: any) => e)
      expect(dup).toBeInstanceOf(Pg.DatabaseError)
      expect(dup).toMatchObject({ code: "23505", constraint: `${table}_pk`, table, detail: "Key (id)=(1) already exists." })
      expect(dup).toMatchObject({ _tag: "ConstraintViolation", category: "constraint", transient: false })
      const syntax = await pool.query("SELECT * FROM").catch((e: any) => e)
      expect(syntax).toMatchObject({ code: "42601", position: "14", _tag: "QueryError", category: "syntax" })
      for (let i = 0; i < 10; i++) await pool.query("SELEC 1").catch(() => {})
      expect((await pool.query("SELECT 1 AS ok")).rows).toEqual([{ ok: 1 }])
      expect(pool.totalCount).toBeLessThanOrEqual(2)
      const client = await pool.connect()
      await client.query("BEGIN")
      await client.query("SELEC 1").catch(() => {})
      const aborted = await client.query("SELECT 1").catch((e: any) => e)
      expect(aborted.code).toBe("25P02")
      await client.query("ROLLBACK")
      expect((await client.query("SELECT 2 AS two")).rows).toEqual([{ two: 2 }])
      client.release()
    } finally {
      await pool.query(`DROP TABLE ${table}`)
    }
  })

  it("runs on our pool: dead connections are replaced and reads retried, and metrics count the traffic", async () => {
    const { alias, pool } = make({ max: 3 })
    const before = await Traffic.statementsSeen(pool)
    await Promise.all([pool.query("SELECT 1"), pool.query("SELECT 2"), pool.query("SELECT 3")])
    await admin((c) => c.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", [alias]))
    const results = await Promise.all(Array.from({ length: 6 }, (_, i) => pool.query("SELECT $1::int AS i", [i])))
    expect(results.map((r) => r.rows[0].i)).toEqual([0, 1, 2, 3, 4, 5])
    expect(await Traffic.statementsSeen(pool) - before).toBeGreaterThanOrEqual(9)
  })
})

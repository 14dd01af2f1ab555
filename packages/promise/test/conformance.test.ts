/**
 * The Promise API's conformance run: the cases of the Effect conformance
 * suite that apply, on all three engines, through `connect`.
 */
import type { Database } from "@effect-dal/promise"
import { connect, ConstraintViolation, InvalidOptions, InvalidQuery, PoolClosed, PoolTimeout, QueryError } from "@effect-dal/promise"
import { Traffic } from "@effect-dal/testkit"
import * as Effect from "effect/Effect"
import * as Mysql from "mysql2/promise"
import * as Pg from "pg"
import { afterAll, beforeAll, describe, expect, it } from "vitest"

const PG_URL = process.env["TEST_PG_URL"] ?? "postgres://postgres@127.0.0.1:5432/test"
const MYSQL_URL = process.env["TEST_MYSQL_URL"] ?? "mysql://root@127.0.0.1:3306/test"

let counter = 0
const unique = (prefix: string) => `${prefix}_${process.pid}_${Date.now().toString(36)}_${(counter++).toString(36)}`

const pgAdmin = async <A>(f: (c: Pg.Client) => Promise<A>): Promise<A> => {
  const client = new Pg.Client({ connectionString: PG_URL, application_name: "effect-dal-test-admin" })
  await client.connect()
  try {
    return await f(client)
  } finally {
    await client.end()
  }
}

const mysqlAdmin = async <A>(f: (c: Mysql.Connection) => Promise<A>): Promise<A> => {
  const conn = await Mysql.createConnection(MYSQL_URL)
  try {
    return await f(conn)
  } finally {
    await conn.end()
  }
}

interface Engine {
  readonly name: string
  readonly connect: (alias: string, extra?: { max?: number; acquireTimeout?: number }) => Promise<Database>
  readonly types: { readonly bigint: string; readonly decimal: string; readonly bytes: string; readonly json: string; readonly ts: string }
  readonly codes: { readonly unique: string; readonly syntax: string }
  readonly sleep: (seconds: number) => string
  /** Our sessions on the server running a statement now; `undefined` for the embedded engine. */
  readonly running: ((alias: string) => Promise<number>) | undefined
  /** Our sessions on the server. */
  readonly sessions: ((alias: string) => Promise<number>) | undefined
  /** COMMIT can fail (a deferred constraint). */
  readonly deferredConstraints: boolean
  readonly setup?: (alias: string) => Promise<void>
  readonly teardown?: (alias: string) => Promise<void>
}

const pgCount = (alias: string, active: boolean) =>
  pgAdmin(async (c) =>
    Number(
      (await c.query(
        `SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = $1${active ? " AND state = 'active'" : ""}`,
        [alias]
      )).rows[0].n
    )
  )

// MariaDB here has no performance_schema: each suite gets a database of its own, and its sessions are found by it
const mysqlCount = (alias: string, active: boolean) =>
  mysqlAdmin(async (c) => {
    const [rows] = await c.query("SELECT COMMAND AS command FROM information_schema.PROCESSLIST WHERE DB = ?", [alias])
    return (rows as Array<{ command: string }>).filter((r) => !active || r.command === "Query" || r.command === "Execute")
      .length
  })

const engines: ReadonlyArray<Engine> = [
  {
    name: "pg",
    connect: (alias, extra) =>
      connect({ url: PG_URL, alias, pool: { min: 1, max: extra?.max ?? 4, acquireTimeout: extra?.acquireTimeout } }),
    types: { bigint: "bigint", decimal: "numeric(38, 9)", bytes: "bytea", json: "jsonb", ts: "timestamptz" },
    codes: { unique: "23505", syntax: "42601" },
    sleep: (s) => `SELECT pg_sleep(${s})`,
    running: (alias) => pgCount(alias, true),
    sessions: (alias) => pgCount(alias, false),
    deferredConstraints: true
  },
  {
    name: "mysql",
    connect: (alias, extra) =>
      connect({
        url: MYSQL_URL,
        database: alias,
        alias,
        pool: { min: 1, max: extra?.max ?? 4, acquireTimeout: extra?.acquireTimeout }
      }),
    types: { bigint: "bigint", decimal: "decimal(38, 9)", bytes: "longblob", json: "json", ts: "timestamp(3) NULL" },
    codes: { unique: "1062", syntax: "1064" },
    sleep: (s) => `SELECT SLEEP(${s})`,
    running: (alias) => mysqlCount(alias, true),
    sessions: (alias) => mysqlCount(alias, false),
    deferredConstraints: false,
    setup: (alias) => mysqlAdmin((c) => c.query(`CREATE DATABASE IF NOT EXISTS \`${alias}\``)).then(() => {}),
    teardown: (alias) => mysqlAdmin((c) => c.query(`DROP DATABASE IF EXISTS \`${alias}\``)).then(() => {})
  },
  {
    name: "pglite",
    connect: (alias, extra) => connect({ embedded: true, alias, pool: { acquireTimeout: extra?.acquireTimeout } }),
    types: { bigint: "bigint", decimal: "numeric(38, 9)", bytes: "bytea", json: "jsonb", ts: "timestamptz" },
    codes: { unique: "23505", syntax: "42601" },
    sleep: (s) => `SELECT pg_sleep(${s})`,
    running: undefined,
    sessions: undefined,
    deferredConstraints: true
  }
]


/** `it` where the case applies to the engine; nothing registered (rather than a skipped test) where it does not. */
const where = (applies: boolean): typeof it => (applies ? it : ((() => {}) as unknown as typeof it))

describe.each(engines)("Promise API conformance: $name", (engine) => {
  const alias = unique(`promise_${engine.name}`)
  let db: Database

  beforeAll(async () => {
    await engine.setup?.(alias)
    db = await engine.connect(alias)
  }, 60_000)
  afterAll(async () => {
    await db?.close()
    await engine.teardown?.(alias)
  }, 60_000)

  const withTable = async <A>(columns: string, f: (table: string) => Promise<A>): Promise<A> => {
    const table = unique("pconf")
    await db.execute(`CREATE TABLE [${table}] (${columns})`)
    try {
      return await f(table)
    } finally {
      await db.execute(`DROP TABLE IF EXISTS [${table}]`)
    }
  }

  it("translates ? placeholders and quotes [identifiers], leaving literals alone", () =>
    withTable("[id] int PRIMARY KEY, [select] int", async (table) => {
      await db.execute(`INSERT INTO [${table}] ([id], [select]) VALUES (?, ?)`, [1, 2])
      const rows = await db.execute(`SELECT [select], 'what? [no]' AS [q] FROM [${table}] WHERE [id] = ?`, [1])
      expect(rows).toEqual([{ select: 2, q: "what? [no]" }])
    }))

  it("returns the same values as the Effect API, bigint, decimal, bytes, json and timestamps exact", () =>
    withTable(
      `id int PRIMARY KEY, big ${engine.types.bigint}, d ${engine.types.decimal}, bin ${engine.types.bytes}, j ${engine.types.json}, ts ${engine.types.ts}, n int`,
      async (table) => {
        const ts = new Date("2024-02-29T12:34:56.789Z")
        const bin = Buffer.from([0, 1, 127, 128, 255])
        await db.execute(`INSERT INTO [${table}] VALUES (?, ?, ?, ?, ?, ?, ?)`, [
          1,
          "9007199254740993",
          "12345678901234567890.123456789",
          bin,
          JSON.stringify({ a: [1, null] }),
          ts,
          null
        ])
        const select = `SELECT * FROM [${table}]`
        const [row] = await db.execute<Record<string, any>>(select)
        expect(String(row!["big"])).toBe("9007199254740993")
        expect(String(row!["d"])).toBe("12345678901234567890.123456789")
        expect(Buffer.from(row!["bin"]).equals(bin)).toBe(true)
        expect(typeof row!["j"] === "string" ? JSON.parse(row!["j"]) : row!["j"]).toEqual({ a: [1, null] })
        expect(new Date(row!["ts"]).getTime()).toBe(ts.getTime())
        expect(row!["n"]).toBeNull()
        expect(await db.execute(select)).toEqual(await Effect.runPromise(db.db.execute(select)))
      }
    ))

  it("commits; a callback that throws rolls back and rejects with what it threw", () =>
    withTable("id int PRIMARY KEY", async (table) => {
      const result = await db.transaction(async (tx) => {
        await tx.execute(`INSERT INTO [${table}] VALUES (?)`, [1])
        return "done"
      })
      expect(result).toBe("done")
      const boom = new Error("boom")
      await expect(db.transaction(async (tx) => {
        await tx.execute(`INSERT INTO [${table}] VALUES (?)`, [2])
        throw boom
      })).rejects.toBe(boom)
      expect(await db.execute(`SELECT id FROM [${table}]`)).toEqual([{ id: 1 }])
    }))

  it("a nested transaction is a savepoint, rolled back alone", () =>
    withTable("id int PRIMARY KEY", async (table) => {
      await db.transaction(async (tx) => {
        await tx.execute(`INSERT INTO [${table}] VALUES (?)`, [1])
        await expect(tx.transaction(async (inner) => {
          expect(inner.depth).toBe(1)
          await inner.execute(`INSERT INTO [${table}] VALUES (?)`, [2])
          throw new Error("inner")
        })).rejects.toThrow("inner")
        await tx.transaction((inner) => inner.execute(`INSERT INTO [${table}] VALUES (?)`, [3]))
      })
      expect(await db.execute(`SELECT id FROM [${table}] ORDER BY id`)).toEqual([{ id: 1 }, { id: 3 }])
    }))

  it("a transaction handle used after its callback settled is refused, never run on a pooled connection", () =>
    withTable("id int PRIMARY KEY", async (table) => {
      let kept: Parameters<Parameters<Database["transaction"]>[0]>[0] | undefined
      await db.transaction(async (tx) => {
        kept = tx
      })
      await expect(kept!.execute(`INSERT INTO [${table}] VALUES (?)`, [1])).rejects.toBeInstanceOf(InvalidOptions)
      expect(await db.execute(`SELECT id FROM [${table}]`)).toEqual([])
    }))

  it("a callback's statements sent at once run one after another in the transaction, and one sent before it returned runs before COMMIT", () =>
    withTable("id int PRIMARY KEY", async (table) => {
      let unawaited: Promise<unknown> | undefined
      const counts = await db.transaction(async (tx) => {
        await Promise.all([1, 2, 3].map((id) => tx.execute(`INSERT INTO [${table}] VALUES (?)`, [id])))
        const seen = await Promise.all([tx.execute(`SELECT count(*) AS n FROM [${table}]`), tx.execute(`SELECT id FROM [${table}] WHERE id = ?`, [2])])
        unawaited = tx.execute(`INSERT INTO [${table}] VALUES (?)`, [4])
        return seen.map((rows) => rows.length)
      })
      expect(counts).toEqual([1, 1])
      // settled already: it ran inside the transaction, which committed after it
      let done = false
      void unawaited!.then(() => (done = true))
      await Promise.resolve()
      expect(done).toBe(true)
      expect(await db.execute(`SELECT id FROM [${table}] ORDER BY id`)).toEqual([{ id: 1 }, { id: 2 }, { id: 3 }, { id: 4 }])
    }))

  where(engine.deferredConstraints)("a COMMIT that fails rejects, and nothing is applied", () =>
    withTable("id int PRIMARY KEY, v int UNIQUE DEFERRABLE INITIALLY DEFERRED", async (table) => {
      const failed = db.transaction(async (tx) => {
        await tx.execute(`INSERT INTO [${table}] VALUES (?, ?)`, [1, 7])
        await tx.execute(`INSERT INTO [${table}] VALUES (?, ?)`, [2, 7])
      })
      await expect(failed).rejects.toBeInstanceOf(ConstraintViolation)
      expect(await db.execute(`SELECT id FROM [${table}]`)).toEqual([])
    }))

  it("applies read-only transactions", () =>
    withTable("id int PRIMARY KEY", async (table) => {
      const error = await db.transaction((tx) => tx.execute(`INSERT INTO [${table}] VALUES (?)`, [1]), { readOnly: true })
        .catch((e) => e)
      expect(error).toBeInstanceOf(QueryError)
      expect(error.category).toBe("permission")
    }))

  it("rejects with Error subclasses carrying _tag, category, code and transient; the pool stays usable", () =>
    withTable("id int PRIMARY KEY", async (table) => {
      await db.execute(`INSERT INTO [${table}] VALUES (?)`, [1])
      const dup = await db.execute(`INSERT INTO [${table}] VALUES (?)`, [1]).catch((e) => e)
      expect(dup).toBeInstanceOf(Error)
      expect(dup).toBeInstanceOf(ConstraintViolation)
      expect(dup).toMatchObject({ _tag: "ConstraintViolation", category: "constraint", code: engine.codes.unique, transient: false })
      const syntax = await db.execute("SELEC 1").catch((e) => e)
      expect(syntax).toBeInstanceOf(QueryError)
      expect(syntax).toMatchObject({ _tag: "QueryError", category: "syntax", code: engine.codes.syntax })
      const bad = await db.execute("SELECT ?", [undefined]).catch((e) => e)
      expect(bad).toBeInstanceOf(InvalidQuery)
      expect(bad.reason).toBe("invalidParameter")
      switch (dup._tag) {
        case "ConstraintViolation":
          expect(dup.kind).toBe("unique")
          break
        default:
          throw new Error("switch on _tag")
      }
      expect(await db.execute("SELECT 1 AS ok")).toEqual([{ ok: 1 }])
      expect(db.poolStats().active).toBe(0)
    }))

  it("executeMany and insertMany insert every row, all or nothing", () =>
    withTable("id int PRIMARY KEY, v varchar(10)", async (table) => {
      expect(await db.executeMany(`INSERT INTO [${table}] VALUES (?, ?)`, [[1, "a"], [2, "b"]])).toBe(2)
      const inserted = await db.insertMany(table, Array.from({ length: 500 }, (_, i) => ({ id: i + 10, v: `v${i}` })))
      expect(inserted.inserted).toBe(500)
      await expect(db.insertMany(table, [{ id: 1000, v: "x" }, { id: 1, v: "dup" }])).rejects.toBeInstanceOf(ConstraintViolation)
      const [count] = await db.execute<{ n: unknown }>(`SELECT count(*) AS n FROM [${table}]`)
      expect(Number(count!.n)).toBe(502)
    }))

  it("stream reads a large result with for await, and leaving the loop early frees the connection", () =>
    withTable("id int PRIMARY KEY", async (table) => {
      await db.insertMany(table, Array.from({ length: 1000 }, (_, i) => ({ id: i })))
      let seen = 0
      for await (const row of db.stream<{ id: number }>(`SELECT id FROM [${table}] ORDER BY id`, [], { chunkSize: 100 })) {
        expect(row.id).toBe(seen++)
      }
      expect(seen).toBe(1000)
      for await (const row of db.stream<{ id: number }>(`SELECT id FROM [${table}] ORDER BY id`)) {
        if (row.id === 5) break
      }
      expect(await Traffic.until(async () => db.poolStats().active === 0, 2_000)).toBe(true)
      await expect(async () => {
        for await (const _ of db.stream("SELECT * FROM [no_such_table_here]")) {
          // never reached
        }
      }).rejects.toBeInstanceOf(QueryError)
      expect(await db.execute("SELECT 1 AS ok")).toEqual([{ ok: 1 }])
    }))

  where(engine.running === undefined)("an AbortSignal frees a call waiting for the single session at once", async () => {
    let hold!: () => void
    const held = new Promise<void>((resolve) => (hold = resolve))
    let started!: () => void
    const inside = new Promise<void>((resolve) => (started = resolve))
    const holding = db.transaction(async () => {
      started()
      await held
    })
    await inside
    const controller = new AbortController()
    const waiting = db.execute("SELECT 1", [], { signal: controller.signal })
    await new Promise((r) => setTimeout(r, 50))
    controller.abort(new Error("stop"))
    await expect(waiting).rejects.toThrow("stop")
    expect(db.poolStats().pending).toBe(0)
    hold()
    await holding
    expect(await db.execute("SELECT 1 AS ok")).toEqual([{ ok: 1 }])
  })

  where(engine.running !== undefined)("an AbortSignal cancels the running statement on the server", async () => {
    const controller = new AbortController()
    const started = Date.now()
    const sleeping = db.execute(engine.sleep(5), [], { signal: controller.signal })
    expect(await Traffic.until(async () => (await engine.running!(alias)) === 1, 3_000)).toBe(true)
    controller.abort(new Error("stop"))
    await expect(sleeping).rejects.toThrow("stop")
    expect(Date.now() - started).toBeLessThan(4_000)
    expect(await Traffic.until(async () => (await engine.running!(alias)) === 0, 3_000)).toBe(true)
    // an aborted signal fails at once, and the pool is healthy afterwards
    await expect(db.execute("SELECT 1", [], { signal: controller.signal })).rejects.toThrow("stop")
    expect(await db.execute("SELECT 1 AS ok")).toEqual([{ ok: 1 }])
  })

  where(engine.running !== undefined)("a transaction aborted with a statement running and another queued rejects both: nothing is left waiting", async () => {
    const controller = new AbortController()
    let calls: Promise<Array<PromiseSettledResult<unknown>>> | undefined
    const transaction = db.transaction(async (tx) => {
      const running = tx.execute(engine.sleep(5))
      const queued = tx.execute("SELECT 1")
      calls = Promise.allSettled([running, queued])
      await running
    }, { signal: controller.signal })
    expect(await Traffic.until(async () => (await engine.running!(alias)) === 1, 3_000)).toBe(true)
    controller.abort(new Error("stop"))
    await expect(transaction).rejects.toThrow("stop")
    expect((await calls!).map((outcome) => outcome.status)).toEqual(["rejected", "rejected"])
    expect(await Traffic.until(async () => (await engine.running!(alias)) === 0, 3_000)).toBe(true)
    expect(await db.execute("SELECT 1 AS ok")).toEqual([{ ok: 1 }])
  })

  it("retries a transaction's callback only when retry is set", async () => {
    let runs = 0
    const flaky = async () => {
      runs++
      if (runs === 1) {
        // a serialization failure, as the engine would report it
        throw new QueryError({ category: "serialization", code: "40001", transient: true, sql: undefined, cause: undefined })
      }
      return runs
    }
    await expect(db.transaction(flaky)).rejects.toBeInstanceOf(QueryError)
    expect(runs).toBe(1)
    runs = 0
    expect(await db.transaction(flaky, { retry: { base: 1, maxRetries: 3 } })).toBe(2)
    runs = 0
    // the callback's own errors are never retried
    await expect(db.transaction(async () => {
      runs++
      throw new Error("mine")
    }, { retry: true })).rejects.toThrow("mine")
    expect(runs).toBe(1)
  })

  it("health, poolStats and metrics give the Effect API's data", async () => {
    await db.execute("SELECT 1")
    const report = await db.health()
    expect(report.capacity.poolMax).toBe(db.poolStats().max)
    const metrics = await db.metrics()
    const duration = metrics.find((m) => m.name === "db.client.operation.duration" && Object.keys(m.labels).length === 0)
    expect(duration?.type).toBe("histogram")
    expect((duration?.value as { count: number }).count).toBeGreaterThan(0)
    expect(metrics.some((m) => m.name === "db.client.connection.max" && m.value === db.poolStats().max)).toBe(true)
  })

  where(engine.sessions !== undefined)("a busy pool rejects with PoolTimeout, instanceof and by _tag", async () => {
    const small = await engine.connect(`${alias}`, { max: 1, acquireTimeout: 200 })
    try {
      const holding = small.execute(engine.sleep(1))
      const error = await small.execute("SELECT 1").catch((e) => e)
      expect(error).toBeInstanceOf(PoolTimeout)
      expect(error._tag).toBe("PoolTimeout")
      expect(error.transient).toBe(true)
      await holding
    } finally {
      await small.close()
    }
  })

  it("close() shuts the pool down: calls reject with PoolClosed, and no session is left", async () => {
    const other = unique(`promise_close_${engine.name}`)
    await engine.setup?.(other)
    const closing = await engine.connect(other)
    await closing.execute("SELECT 1")
    await closing.close()
    await expect(closing.execute("SELECT 1")).rejects.toBeInstanceOf(PoolClosed)
    if (engine.sessions !== undefined) expect(await Traffic.until(async () => (await engine.sessions!(other)) === 0, 3_000)).toBe(true)
    await engine.teardown?.(other)
  })
})

describe("connect", () => {
  it("rejects bad options with InvalidOptions", async () => {
    await expect(connect({ url: "oracle://x" })).rejects.toBeInstanceOf(InvalidOptions)
    const error = await connect({ url: PG_URL, pool: { max: -1 } }).catch((e) => e)
    expect(error).toBeInstanceOf(InvalidOptions)
    expect(error.message).toContain("pool.max")
  })
})

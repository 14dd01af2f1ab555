/**
 * The systems the benchmark compares: the raw drivers, the stock Effect
 * clients, and effect-dal with every resilience feature on. Each exposes the
 * same workloads, as a promise (raw drivers) or as an Effect (the rest), so
 * each runs in its own native style.
 */
import { Db } from "@effect-dal/core"
import { MysqlDatabase } from "@effect-dal/mysql"
import { createPgPool, PgDatabase } from "@effect-dal/pg"
import { connect } from "@effect-dal/promise"
import { DbCache, WriteQueue } from "@effect-dal/redis"
import { Sharding } from "@effect-dal/routing"
import * as MysqlClient from "@effect/sql-mysql2/MysqlClient"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Redacted from "effect/Redacted"
import type { Generated } from "kysely"
import { Kysely, PostgresDialect } from "kysely"
import * as Mysql from "mysql2/promise"
import * as Pg from "pg"
import postgres from "postgres"

export const PG_URL = process.env["BENCH_PG_URL"] ?? "postgres://postgres@127.0.0.1:5432/test"
export const MYSQL_URL = process.env["BENCH_MYSQL_URL"] ?? "mysql://root@127.0.0.1:3306/test"
export const POOL = 20
export const ACCOUNTS = 10_000

export type Engine = "pg" | "mysql"

/** One unit of work, in the system's own style. */
export type Op = { readonly _tag: "promise"; readonly run: () => Promise<unknown> } | {
  readonly _tag: "effect"
  readonly run: Effect.Effect<unknown, unknown>
}

/**
 * A row of a batch workload. Every system is given the same records, built
 * once, and turns them into what its API takes (raw pg: two arrays for
 * `unnest`; raw mysql2: nested arrays); the records go as they are where an
 * API takes records.
 */
export type EventRow = {
  readonly account_id: number
  readonly payload: string
}

export interface Workloads {
  readonly pointSelect: (id: number) => Op
  readonly insert: (accountId: number) => Op
  readonly transfer: (from: number, to: number, amount: number) => Op
  readonly sleep5ms: () => Op
  /** Inserts `rows` in one go (the system's batch API). */
  readonly batchInsert: (rows: ReadonlyArray<EventRow>) => Op
  /** Inserts `rows` one statement at a time. */
  readonly loopInsert?: (rows: ReadonlyArray<EventRow>) => Op
  /** A heavier read: an aggregate over 2,000 rows from `from`. */
  readonly aggregate?: (from: number) => Op
  /** The 100 accounts with the highest balance. */
  readonly top100?: () => Op
}

export interface System {
  readonly name: string
  readonly engine: Engine
  readonly kind: "raw" | "stock" | "effect-dal"
  readonly workloads: Workloads
  /** Runs an Effect op on the system's runtime (Effect systems only). */
  readonly runtime?: ManagedRuntime.ManagedRuntime<any, any>
  readonly close: () => Promise<void>
}

const promise = (run: () => Promise<unknown>): Op => ({ _tag: "promise", run })

/** 20 callers of `perCaller` ops each, on an Effect system's runtime: how the profiles drive effect-dal. */
export const runCallers = <R>(
  runtime: ManagedRuntime.ManagedRuntime<R, unknown>,
  perCaller: number,
  next: (i: number) => Op
): Promise<void> =>
  runtime.runPromise(Effect.all(
    Array.from({ length: 20 }, () =>
      Effect.gen(function*() {
        for (let i = 0; i < perCaller; i++) yield* (next(i) as Extract<Op, { _tag: "effect" }>).run
      })),
    { concurrency: "unbounded", discard: true }
  ).pipe(Effect.orDie))
const effect = (run: Effect.Effect<unknown, unknown, any>): Op => ({ _tag: "effect", run: run as Effect.Effect<unknown, unknown> })

// --- PostgreSQL -------------------------------------------------------------------------------

const pgSql = {
  point: "SELECT id, name, balance FROM bench_accounts WHERE id = $1",
  insert: "INSERT INTO bench_events (account_id, payload) VALUES ($1, $2)",
  debit: "UPDATE bench_accounts SET balance = balance - $1 WHERE id = $2",
  credit: "UPDATE bench_accounts SET balance = balance + $1 WHERE id = $2",
  sleep: "SELECT pg_sleep(0.005)"
}

/** The workloads written against node-postgres' pool API: run on `pg.Pool`, and on `createPgPool` unchanged. */
const pgPoolWorkloads = (pool: Pg.Pool): Workloads => ({
  pointSelect: (id) => promise(() => pool.query(pgSql.point, [id])),
  insert: (id) => promise(() => pool.query(pgSql.insert, [id, "x"])),
  transfer: (from, to, amount) =>
    promise(async () => {
      const client = await pool.connect()
      try {
        await client.query("BEGIN")
        await client.query(pgSql.debit, [amount, from])
        await client.query(pgSql.credit, [amount, to])
        await client.query("COMMIT")
      } catch (e) {
        await client.query("ROLLBACK")
        throw e
      } finally {
        client.release()
      }
    }),
  sleep5ms: () => promise(() => pool.query(pgSql.sleep)),
  batchInsert: (rows) =>
    promise(() =>
      pool.query(
        "INSERT INTO bench_events (account_id, payload) SELECT * FROM unnest($1::int[], $2::text[])",
        [rows.map((r) => r.account_id), rows.map((r) => r.payload)]
      )
    )
})

const rawPg = async (): Promise<System> => {
  const pool = new Pg.Pool({ connectionString: PG_URL, max: POOL })
  return { name: "pg.Pool (raw)", engine: "pg", kind: "raw", workloads: pgPoolWorkloads(pool), close: () => pool.end() }
}

const postgresJs = async (): Promise<System> => {
  const sql = postgres(PG_URL, { max: POOL })
  return {
    name: "postgres.js",
    engine: "pg",
    kind: "raw",
    workloads: {
      pointSelect: (id) => promise(() => sql.unsafe(pgSql.point, [id], { prepare: true })),
      insert: (id) => promise(() => sql.unsafe(pgSql.insert, [id, "x"], { prepare: true })),
      transfer: (from, to, amount) =>
        promise(() =>
          sql.begin(async (tx) => {
            await tx.unsafe(pgSql.debit, [amount, from], { prepare: true })
            await tx.unsafe(pgSql.credit, [amount, to], { prepare: true })
          })
        ),
      sleep5ms: () => promise(() => sql.unsafe(pgSql.sleep)),
      batchInsert: (rows) =>
        promise(() => sql`INSERT INTO bench_events ${sql(rows)}`)
    },
    close: () => sql.end()
  }
}

/** A stock `@effect/sql` client: the same templates on either engine. */
const stock = async (
  name: string,
  engine: Engine,
  layer: Layer.Layer<SqlClient.SqlClient, unknown>,
  sleep5ms: string
): Promise<System> => {
  const runtime = ManagedRuntime.make(layer)
  const sql = await runtime.runPromise(SqlClient.SqlClient)
  return {
    name,
    engine,
    kind: "stock",
    runtime,
    workloads: {
      pointSelect: (id) => effect(sql`SELECT id, name, balance FROM bench_accounts WHERE id = ${id}`),
      insert: (id) => effect(sql`INSERT INTO bench_events (account_id, payload) VALUES (${id}, ${"x"})`),
      transfer: (from, to, amount) =>
        effect(sql.withTransaction(Effect.zipRight(
          sql`UPDATE bench_accounts SET balance = balance - ${amount} WHERE id = ${from}`,
          sql`UPDATE bench_accounts SET balance = balance + ${amount} WHERE id = ${to}`
        ))),
      sleep5ms: () => effect(sql.unsafe(sleep5ms)),
      batchInsert: (rows) =>
        effect(sql`INSERT INTO bench_events ${sql.insert(rows)}`)
    },
    close: () => runtime.dispose()
  }
}

const stockPg = () =>
  stock(
    "@effect/sql-pg (stock)",
    "pg",
    PgClient.layer({ url: Redacted.make(PG_URL), maxConnections: POOL }) as Layer.Layer<SqlClient.SqlClient, unknown>,
    pgSql.sleep
  )

/** effect-dal as a user would deploy it: breaker, retries, timeouts, metrics and statement cache on. */
/** The aggregate read of the cache comparison. */
const AGGREGATE = "SELECT count(*) AS n, sum(balance) AS total, max(name) AS last FROM [bench_accounts] WHERE id BETWEEN ? AND ?"

const TOP_100 = "SELECT id, name, balance FROM [bench_accounts]"

/** effect-dal's workloads, through the `Db` API. */
export const dalWorkloads = (sleep5ms: string): Workloads => ({
  aggregate: (from) => effect(Db.execute(AGGREGATE, [from, from + 1_999])),
  top100: () => effect(Db.execute(`${TOP_100} ORDER BY balance DESC, id ASC LIMIT 100`)),
  pointSelect: (id) => effect(Db.execute("SELECT id, name, balance FROM [bench_accounts] WHERE id = ?", [id])),
  insert: (id) => effect(Db.execute("INSERT INTO [bench_events] (account_id, payload) VALUES (?, ?)", [id, "x"])),
  transfer: (from, to, amount) =>
    effect(Db.withTransaction(Effect.zipRight(
      Db.execute("UPDATE [bench_accounts] SET balance = balance - ? WHERE id = ?", [amount, from]),
      Db.execute("UPDATE [bench_accounts] SET balance = balance + ? WHERE id = ?", [amount, to])
    ))),
  sleep5ms: () => effect(Db.execute(sleep5ms)),
  batchInsert: (rows) =>
    effect(Db.insertMany("bench_events", rows)),
  loopInsert: (rows) =>
    effect(Effect.forEach(
      rows,
      (r) => Db.execute("INSERT INTO [bench_events] (account_id, payload) VALUES (?, ?)", [r.account_id, r.payload]),
      { discard: true }
    ))
})

const deployed = {
  statementTimeout: "10 seconds",
  transactionTimeout: "30 seconds",
  pool: { min: POOL, max: POOL, acquireTimeout: "10 seconds" }
} as const

/** effect-dal on either engine, deployed as above. */
const dal = async (name: string, engine: Engine, layer: Layer.Layer<Db, unknown>, sleep5ms: string): Promise<System> => {
  const runtime = ManagedRuntime.make(layer)
  await runtime.runPromise(Db)
  return { name, engine, kind: "effect-dal", runtime, workloads: dalWorkloads(sleep5ms), close: () => runtime.dispose() }
}

const dalPg = () =>
  dal(
    "effect-dal pg",
    "pg",
    PgDatabase.layer({ url: Redacted.make(PG_URL), alias: "bench_pg", ...deployed }) as Layer.Layer<Db, unknown>,
    pgSql.sleep
  )

/**
 * effect-dal pg behind the replica router, its one replica the same server
 * (so both sides of the comparison hit one database): what routing and
 * read-your-writes cost. Pools of 20 on each node, none kept warm.
 */
const dalPgRouted = () =>
  dal(
    "effect-dal pg, routed",
    "pg",
    PgDatabase.layer({
      url: Redacted.make(PG_URL),
      alias: "bench_pg_routed",
      ...deployed,
      pool: { ...deployed.pool, min: 0 },
      replicas: [{ url: Redacted.make(PG_URL), alias: "bench_pg_routed_replica" }]
    }) as Layer.Layer<Db, unknown>,
    pgSql.sleep
  )

/** effect-dal pg through the Promise API (`@effect-dal/promise`), deployed as above. */
const dalPromisePg = async (): Promise<System> => {
  const db = await connect({ url: PG_URL, alias: "bench_pg_promise", ...deployed })
  return {
    name: "effect-dal pg, Promise API",
    engine: "pg",
    kind: "effect-dal",
    workloads: {
      pointSelect: (id) => promise(() => db.execute("SELECT id, name, balance FROM [bench_accounts] WHERE id = ?", [id])),
      insert: (id) => promise(() => db.execute("INSERT INTO [bench_events] (account_id, payload) VALUES (?, ?)", [id, "x"])),
      transfer: (from, to, amount) =>
        promise(() =>
          db.transaction(async (tx) => {
            await tx.execute("UPDATE [bench_accounts] SET balance = balance - ? WHERE id = ?", [amount, from])
            await tx.execute("UPDATE [bench_accounts] SET balance = balance + ? WHERE id = ?", [amount, to])
          })
        ),
      sleep5ms: () => promise(() => db.execute(pgSql.sleep)),
      batchInsert: (rows) => promise(() => db.insertMany("bench_events", rows))
    },
    close: () => db.close()
  }
}

interface KyselyBench {
  readonly bench_accounts: { id: number; name: string; balance: string }
  readonly bench_events: { id: Generated<string>; account_id: number; payload: string }
}

/** Kysely on a node-postgres pool: raw `pg.Pool`, or effect-dal's `createPgPool` in its place. */
const kyselyOn = (name: string, kind: System["kind"], pool: Pg.Pool): System => {
  const db = new Kysely<KyselyBench>({ dialect: new PostgresDialect({ pool }) })
  return {
    name,
    engine: "pg",
    kind,
    workloads: {
      pointSelect: (id) => promise(() => db.selectFrom("bench_accounts").select(["id", "name", "balance"]).where("id", "=", id).execute()),
      insert: (id) => promise(() => db.insertInto("bench_events").values({ account_id: id, payload: "x" }).execute()),
      transfer: (from, to, amount) =>
        promise(() =>
          db.transaction().execute(async (trx) => {
            await trx.updateTable("bench_accounts").set((eb) => ({ balance: eb("balance", "-", String(amount)) })).where("id", "=", from).execute()
            await trx.updateTable("bench_accounts").set((eb) => ({ balance: eb("balance", "+", String(amount)) })).where("id", "=", to).execute()
          })
        ),
      sleep5ms: () => promise(() => pool.query(pgSql.sleep)),
      batchInsert: (rows) => promise(() => db.insertInto("bench_events").values(rows).execute())
    },
    close: () => db.destroy()
  }
}

/** Kysely on raw `pg.Pool`, pool 20. */
const kyselyRaw = async (): Promise<System> => kyselyOn("Kysely on pg.Pool (raw)", "raw", new Pg.Pool({ connectionString: PG_URL, max: POOL }))

/** The same Kysely code on `createPgPool`, deployed as above. */
const kyselyDal = async (): Promise<System> =>
  kyselyOn("Kysely on effect-dal createPgPool", "effect-dal", createPgPool({ connectionString: PG_URL, alias: "bench_pg_kysely", ...deployed }))

/** node-postgres code unchanged on `createPgPool`, deployed as above. */
const dalPgPool = async (): Promise<System> => {
  const pool = createPgPool({ connectionString: PG_URL, alias: "bench_pg_pool", ...deployed })
  return { name: "effect-dal createPgPool", engine: "pg", kind: "effect-dal", workloads: pgPoolWorkloads(pool), close: () => pool.end() }
}

// --- MySQL ------------------------------------------------------------------------------------

const mySql = {
  point: "SELECT id, name, balance FROM bench_accounts WHERE id = ?",
  insert: "INSERT INTO bench_events (account_id, payload) VALUES (?, ?)",
  debit: "UPDATE bench_accounts SET balance = balance - ? WHERE id = ?",
  credit: "UPDATE bench_accounts SET balance = balance + ? WHERE id = ?",
  sleep: "SELECT SLEEP(0.005)"
}

const rawMysql = async (): Promise<System> => {
  const pool = Mysql.createPool({ uri: MYSQL_URL, connectionLimit: POOL, supportBigNumbers: true })
  return {
    name: "mysql2 pool (raw)",
    engine: "mysql",
    kind: "raw",
    workloads: {
      pointSelect: (id) => promise(() => pool.execute(mySql.point, [id])),
      insert: (id) => promise(() => pool.execute(mySql.insert, [id, "x"])),
      transfer: (from, to, amount) =>
        promise(async () => {
          const conn = await pool.getConnection()
          try {
            await conn.query("START TRANSACTION")
            await conn.execute(mySql.debit, [amount, from])
            await conn.execute(mySql.credit, [amount, to])
            await conn.query("COMMIT")
          } catch (e) {
            await conn.query("ROLLBACK")
            throw e
          } finally {
            conn.release()
          }
        }),
      sleep5ms: () => promise(() => pool.query(mySql.sleep)),
      batchInsert: (rows) => promise(() => pool.query("INSERT INTO bench_events (account_id, payload) VALUES ?", [rows.map((r) => [r.account_id, r.payload])]))
    },
    close: () => pool.end()
  }
}

const stockMysql = () =>
  stock(
    "@effect/sql-mysql2 (stock)",
    "mysql",
    MysqlClient.layer({ url: Redacted.make(MYSQL_URL), maxConnections: POOL }) as Layer.Layer<SqlClient.SqlClient, unknown>,
    mySql.sleep
  )

const dalMysql = () =>
  dal(
    "effect-dal mysql",
    "mysql",
    MysqlDatabase.layer({ url: Redacted.make(MYSQL_URL), alias: "bench_mysql", ...deployed }) as Layer.Layer<Db, unknown>,
    mySql.sleep
  )

export const makers: Record<Engine, ReadonlyArray<() => Promise<System>>> = {
  pg: [rawPg, postgresJs, stockPg, dalPg],
  mysql: [rawMysql, stockMysql, dalMysql]
}

// --- Caching and async writes (PostgreSQL, Redis) -------------------------------------------------

const REDIS_URL = process.env["BENCH_REDIS_URL"] ?? "redis://127.0.0.1:6379"

/** effect-dal pg with its reads through `DbCache` (`localTtl` 0: every read asks Redis). */
const dalPgCached = (name: string, localTtl: Duration.DurationInput) => async (): Promise<System> => {
  const layer = DbCache.layer({ redis: REDIS_URL, prefix: `bench:${name}:`, localTtl }).pipe(
    Layer.provideMerge(PgDatabase.layer({ url: Redacted.make(PG_URL), alias: "bench_pg_cached", ...deployed }))
  )
  const runtime = ManagedRuntime.make(layer as Layer.Layer<Db | DbCache, unknown>)
  await runtime.runPromise(DbCache)
  return {
    name,
    engine: "pg",
    kind: "effect-dal",
    runtime,
    workloads: {
      ...dalWorkloads(pgSql.sleep),
      pointSelect: (id) =>
        effect(DbCache.cached("SELECT id, name, balance FROM [bench_accounts] WHERE id = ?", [id], { keys: { bench_accounts: [id] } })),
      aggregate: (from) => effect(DbCache.cached(AGGREGATE, [from, from + 1_999], { keys: ["bench_accounts"] }))
    },
    close: () => runtime.dispose()
  }
}

class BenchQueue extends Context.Tag("bench/BenchQueue")<BenchQueue, WriteQueue.WriteQueue>() {}
let queuedIds = 1_000_000_000

/** effect-dal pg with its inserts through a `WriteQueue` (offers acknowledged by Redis, flushed in batches). */
const dalPgQueued = async (): Promise<System> => {
  const layer = Layer.scoped(
    BenchQueue,
    WriteQueue.make({ table: "bench_events", redis: REDIS_URL, stream: `bench:queue:${process.pid}`, flushInterval: "50 millis" })
  ).pipe(Layer.provideMerge(PgDatabase.layer({ url: Redacted.make(PG_URL), alias: "bench_pg_queued", ...deployed })))
  const runtime = ManagedRuntime.make(layer as Layer.Layer<Db | BenchQueue, unknown>)
  await runtime.runPromise(BenchQueue)
  return {
    name: "effect-dal pg, write-behind (WriteQueue.offer)",
    engine: "pg",
    kind: "effect-dal",
    runtime,
    workloads: {
      ...dalWorkloads(pgSql.sleep),
      insert: (id) => effect(Effect.flatMap(BenchQueue, (q) => q.offer({ id: queuedIds++, account_id: id, payload: "x" })))
    },
    close: () => runtime.dispose()
  }
}

/** The cache comparison: uncached reads, through Redis, and through the local tier too. */
export const cacheMakers: ReadonlyArray<() => Promise<System>> = [
  dalPg,
  dalPgCached("effect-dal pg, DbCache (Redis only)", "0 millis"),
  dalPgCached("effect-dal pg, DbCache (+ local tier)", "1 second")
]

/** The write-behind comparison: direct single-row inserts against offers to a `WriteQueue`. */
export const queueMakers: ReadonlyArray<() => Promise<System>> = [dalPg, dalPgQueued]

// --- Sharding (PostgreSQL: 3 databases on the same server) -------------------------------------

const SHARDS = 3
const shardDatabase = (i: number) => `bench_shard_${i + 1}`
const shardUrl = (i: number) => PG_URL.replace(/\/[^/]*$/, `/${shardDatabase(i)}`)

/** The three shard nodes, each a pool of 7 (21 connections against the direct system's 20). */
const shardNodes = () =>
  Object.fromEntries(Array.from({ length: SHARDS }, (_, i) => [
    `s${i + 1}`,
    PgDatabase.layer({ url: Redacted.make(shardUrl(i)), alias: `bench_${shardDatabase(i)}`, ...deployed, pool: { min: 7, max: 7, acquireTimeout: "10 seconds" } })
  ]))

/** The node an account lives on, as `prepare` placed it. */
const shardNodeOf = (id: number) => `s${Either.getOrThrow(Sharding.shardOf(id, { keyType: "bigint" })) % SHARDS + 1}`

const TOP_100_PER_NODE = `${TOP_100} ORDER BY balance DESC, id ASC LIMIT 100`

/**
 * effect-dal pg sharded by account id over 3 databases: routed point selects, and a fan-out top 100.
 * `movable`: the map in a table and the tables declared, so that shards can move: every routed call is
 * then counted for a move's freeze. `byHand`: the same nodes and pools, the application picking the node
 * itself and merging the fan-out itself, so that the router's own cost is what the two differ by.
 */
const dalPgSharded = (movable: boolean, byHand = false) => async (): Promise<System> => {
  const layer = Sharding.layer({
    nodes: shardNodes(),
    keyType: "bigint",
    ...(movable ? { map: { node: "s1", table: "bench_shard_map" }, tables: { bench_accounts: "id" } } : {})
  })
  const runtime = ManagedRuntime.make(layer as Layer.Layer<Sharding.Sharding, unknown>)
  const { nodes } = await (runtime.runPromise(Sharding.Sharding) as Promise<Sharding.Sharded>)
  const names = Object.keys(nodes)
  const routed: Partial<Workloads> = byHand
    ? {
      pointSelect: (id) => effect(nodes[shardNodeOf(id)]!.execute("SELECT id, name, balance FROM [bench_accounts] WHERE id = ?", [id])),
      top100: () =>
        effect(Effect.map(
          Effect.forEach(names, (n) => nodes[n]!.execute<{ id: number; balance: string }>(TOP_100_PER_NODE), { concurrency: "unbounded" }),
          (perNode) =>
            // the balances fit in a double
            perNode.flat().sort((a, b) => Number(b.balance) - Number(a.balance) || a.id - b.id).slice(0, 100)
        ))
    }
    : {
      pointSelect: (id) => effect(Sharding.Sharding.execute(id, "SELECT id, name, balance FROM [bench_accounts] WHERE id = ?", [id])),
      top100: () => effect(Sharding.Sharding.fanOut(TOP_100, [], { orderBy: [["balance", "desc"], ["id", "asc"]], limit: 100 }))
    }
  return {
    name: byHand
      ? "effect-dal pg, the same 3 nodes, routed by hand"
      : `effect-dal pg, sharded over 3 nodes${movable ? ", movable (map in a table)" : ""}`,
    engine: "pg",
    kind: "effect-dal",
    runtime,
    workloads: { ...dalWorkloads(pgSql.sleep), ...routed },
    close: () => runtime.dispose()
  }
}

/** The sharding comparison: direct on one database holding every account; over 3 nodes by hand, and through the router. */
export const shardMakers: ReadonlyArray<() => Promise<System>> = [dalPg, dalPgSharded(false, true), dalPgSharded(false), dalPgSharded(true)]

/** The comparison without Effect: raw `pg.Pool`, effect-dal's Effect API, its Promise API and `createPgPool`. */
export const promiseMakers: ReadonlyArray<() => Promise<System>> = [rawPg, dalPg, dalPromisePg, dalPgPool]

/** Kysely on either pool, compared on their own (each system holds a pool of 20). */
export const kyselyMakers: ReadonlyArray<() => Promise<System>> = [kyselyRaw, kyselyDal]

/** The routing comparison: effect-dal pg direct, and behind the replica router. */
export const routingMakers: ReadonlyArray<() => Promise<System>> = [dalPg, dalPgRouted]

/** Creates and fills the tables of both engines. */
export const prepare = async (): Promise<void> => {
  const pg = new Pg.Client({ connectionString: PG_URL })
  await pg.connect()
  await pg.query("DROP TABLE IF EXISTS bench_events, bench_accounts")
  // vacuumed before every turn (see settle) rather than by autovacuum, in whichever turn it comes
  await pg.query("CREATE TABLE bench_accounts (id int PRIMARY KEY, name text NOT NULL, balance bigint NOT NULL) WITH (autovacuum_enabled = off)")
  await pg.query("CREATE TABLE bench_events (id bigserial PRIMARY KEY, account_id int NOT NULL, payload text NOT NULL) WITH (autovacuum_enabled = off)")
  await pg.query(
    `INSERT INTO bench_accounts SELECT g, 'account ' || g, 1000000 FROM generate_series(1, ${ACCOUNTS}) g`
  )
  // hint bits and the visibility map set now: otherwise the first reads of every page write it, in whichever turn comes first
  await pg.query("VACUUM (FREEZE, ANALYZE) bench_accounts")
  // the shards: each account in the database its id hashes to
  const accounts = (await pg.query<{ id: number; name: string; balance: string }>("SELECT id, name, balance FROM bench_accounts")).rows
  for (let i = 0; i < SHARDS; i++) {
    await pg.query(`DROP DATABASE IF EXISTS ${shardDatabase(i)} WITH (FORCE)`)
    await pg.query(`CREATE DATABASE ${shardDatabase(i)}`)
    const shard = new Pg.Client({ connectionString: shardUrl(i) })
    await shard.connect()
    await shard.query("CREATE TABLE bench_accounts (id int PRIMARY KEY, name text NOT NULL, balance bigint NOT NULL)")
    await shard.query("CREATE TABLE bench_events (id bigserial PRIMARY KEY, account_id int NOT NULL, payload text NOT NULL)")
    const mine = accounts.filter((a) => Either.getOrThrow(Sharding.shardOf(a.id, { keyType: "bigint" })) % SHARDS === i)
    await shard.query("INSERT INTO bench_accounts SELECT * FROM unnest($1::int[], $2::text[], $3::bigint[])", [
      mine.map((a) => a.id),
      mine.map((a) => a.name),
      mine.map((a) => a.balance)
    ])
    await shard.query("VACUUM (FREEZE, ANALYZE) bench_accounts")
    await shard.end()
  }
  await pg.end()
  const my = await Mysql.createConnection({ uri: MYSQL_URL, multipleStatements: true })
  await my.query("DROP TABLE IF EXISTS bench_events, bench_accounts")
  await my.query("CREATE TABLE bench_accounts (id int PRIMARY KEY, name varchar(64) NOT NULL, balance bigint NOT NULL)")
  await my.query(
    "CREATE TABLE bench_events (id bigint AUTO_INCREMENT PRIMARY KEY, account_id int NOT NULL, payload varchar(64) NOT NULL)"
  )
  const rows = Array.from({ length: ACCOUNTS }, (_, i) => [i + 1, `account ${i + 1}`, 1_000_000])
  await my.query("INSERT INTO bench_accounts (id, name, balance) VALUES ?", [rows])
  await my.end()
}

/**
 * Puts the server in the same state before every turn, so that no system
 * pays for what ran before it: the events table emptied, the accounts
 * vacuumed and checkpointed on PostgreSQL, the purge caught up on MariaDB.
 * Without it the transfers' dead row versions piled up until autovacuum
 * came by, in whichever turn it came: the comparisons after the main
 * workloads ran at a third of the throughput they have on a fresh table
 * (2,000 against 4,900 transfers/s), and a turn that met autovacuum or a
 * checkpoint moved a ratio by 10%.
 */
export const settle = async (engine: Engine): Promise<void> => {
  if (engine === "pg") {
    const pg = new Pg.Client({ connectionString: PG_URL })
    await pg.connect()
    try {
      await pg.query("TRUNCATE bench_events RESTART IDENTITY")
      await pg.query("VACUUM bench_accounts")
      // superuser or pg_checkpoint only: elsewhere, turns run without
      await pg.query("CHECKPOINT").catch(() => undefined)
    } finally {
      await pg.end()
    }
    return
  }
  const my = await Mysql.createConnection({ uri: MYSQL_URL })
  try {
    await my.query("TRUNCATE TABLE bench_events")
    // the undo of the last turn's transactions purged, for at most 5 s
    for (let waited = 0; waited < 5_000; waited += 20) {
      const [rows] = await my.query<Array<Mysql.RowDataPacket>>(
        "SELECT count FROM information_schema.INNODB_METRICS WHERE name = 'trx_rseg_history_len'"
      )
      if (rows.length === 0 || Number(rows[0]!["count"]) < 100) break
      await new Promise((r) => setTimeout(r, 20))
    }
  } finally {
    await my.end()
  }
}

/** Drops the benchmark's tables. */
export const cleanup = async (): Promise<void> => {
  const pg = new Pg.Client({ connectionString: PG_URL })
  await pg.connect()
  await pg.query("DROP TABLE IF EXISTS bench_events, bench_accounts")
  for (let i = 0; i < SHARDS; i++) await pg.query(`DROP DATABASE IF EXISTS ${shardDatabase(i)} WITH (FORCE)`)
  await pg.end()
  const my = await Mysql.createConnection({ uri: MYSQL_URL })
  await my.query("DROP TABLE IF EXISTS bench_events, bench_accounts")
  await my.end()
}

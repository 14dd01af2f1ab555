/**
 * Routed work and fan-out over 3 PostgreSQL shards (databases on the shared
 * server), against an oracle: every fan-out result equals the same query on
 * one database holding the union of the data, over 200 random trials.
 */
import { Db } from "@effect-dal/core"
import type { DbService } from "@effect-dal/core"
import { PgDatabase } from "@effect-dal/pg"
import { Sharding } from "@effect-dal/routing"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { admin, PG_URL, unique } from "./helpers.js"

const names = ["s1", "s2", "s3"] as const
const databases = Object.fromEntries([...names, "oracle"].map((n) => [n, unique(`fan_${n}`)])) as Record<string, string>
const urlOf = (database: string) => PG_URL.replace(/\/[^/]*$/, `/${database}`)
const scope = Effect.runSync(Scope.make())
let nodes: Record<string, DbService>
let oracle: DbService
let sharded: Sharding.Sharded

const run = <A, E>(effect: Effect.Effect<A, E>) => Effect.runPromise(effect)

beforeAll(async () => {
  await run(admin(async (c) => {
    for (const database of Object.values(databases)) await c.query(`CREATE DATABASE "${database}"`)
  }))
  const make = (database: string) =>
    Effect.map(Scope.extend(PgDatabase.make({ url: urlOf(database), alias: database, pool: { min: 1, max: 5 } }), scope), (r) => r.db)
  nodes = Object.fromEntries(await Promise.all(names.map(async (n) => [n, await run(make(databases[n]!))] as const)))
  oracle = await run(make(databases["oracle"]!))
  sharded = Sharding.make({ nodes, keyType: "bigint" })
  const create = "CREATE TABLE accounts (id bigint PRIMARY KEY, owner text, balance int, opened date)"
  for (const db of [...Object.values(nodes), oracle]) await run(db.execute(create))
  // random data: each row on its shard, and all of them on the oracle
  const rows = Array.from({ length: 3_000 }, (_, i) => ({
    id: BigInt(i * 7919 + 13),
    owner: `owner ${Math.floor(Math.random() * 50)}`,
    balance: Math.random() < 0.05 ? null : Math.floor(Math.random() * 10_000) - 2_000,
    opened: new Date(Date.UTC(2020, 0, 1 + Math.floor(Math.random() * 1_500)))
  }))
  for (const name of names) {
    const mine = rows.filter((r) => Either.getOrThrow(sharded.nodeOf(r.id)) === name)
    expect(mine.length).toBeGreaterThan(500)
    await run(nodes[name]!.insertMany("accounts", mine))
  }
  await run(oracle.insertMany("accounts", rows))
}, 60_000)

afterAll(async () => {
  await run(Scope.close(scope, Exit.void))
  await run(admin(async (c) => {
    for (const database of Object.values(databases)) await c.query(`DROP DATABASE IF EXISTS "${database}" WITH (FORCE)`)
  }))
}, 60_000)

const columns = ["id", "owner", "balance", "opened"] as const

describe("Sharding over 3 PostgreSQL shards", () => {
  it("routes by key: forKey and execute run on the owning node, a transaction inside stays there", async () => {
    const id = 13n + 7919n * 5n
    const owner = Either.getOrThrow(sharded.nodeOf(id))
    const rows = await run(sharded.execute(id, "SELECT owner FROM accounts WHERE id = ?", [id]))
    expect(rows).toHaveLength(1)
    const inside = await run(sharded.forKey(id)(Db.withTransaction(Effect.gen(function*() {
      yield* Db.execute("UPDATE accounts SET owner = ? WHERE id = ?", ["moved", id])
      return yield* Db.execute<{ db: string }>("SELECT current_database() AS db")
    }))))
    expect(inside[0]!.db).toBe(databases[owner])
    const error = await run(Effect.flip(sharded.execute(undefined, "SELECT 1")))
    expect(error._tag).toBe("ShardKeyError")
    await run(oracle.execute("UPDATE accounts SET owner = ? WHERE id = ?", ["moved", id]))
  })

  it("fan-out results equal the oracle's over 200 random trials: concatenation, ordered and limited, and aggregates", async () => {
    for (let trial = 0; trial < 200; trial++) {
      const low = Math.floor(Math.random() * 8_000) - 2_000
      const where = "WHERE balance >= ? OR balance IS NULL"
      const kind = trial % 3
      if (kind === 0) {
        const sql = `SELECT id, owner FROM accounts WHERE balance BETWEEN ? AND ?`
        const result = await run(sharded.fanOut<{ id: string }>(sql, [low, low + 500]))
        const expected = await run(oracle.execute<{ id: string }>(sql, [low, low + 500]))
        expect([...result.rows].map((r) => r.id).sort()).toEqual(expected.map((r) => r.id).sort())
      } else if (kind === 1) {
        const first = columns[1 + Math.floor(Math.random() * 3)]!
        const direction = Math.random() < 0.5 ? "asc" : "desc"
        const limit = 1 + Math.floor(Math.random() * 200)
        const orderBy = [[first, direction], ["id", "asc"]] as const
        const sql = `SELECT id, owner, balance, opened FROM accounts ${where}`
        const result = await run(sharded.fanOut<Record<string, unknown>>(sql, [low], { orderBy, limit }))
        const expected = await run(oracle.execute<Record<string, unknown>>(
          `${sql} ORDER BY ${first} ${direction.toUpperCase()} NULLS LAST, id ASC LIMIT ${limit}`,
          [low]
        ))
        expect(result.rows).toEqual(expected)
      } else {
        const aggregate = { n: { count: "*" }, total: { sum: "balance" }, lowest: { min: "balance" }, highest: { max: "opened" }, mean: { avg: "balance" } } as const
        const result = await run(sharded.fanOut<Record<string, unknown>>(`SELECT * FROM accounts ${where}`, [low], { aggregate }))
        const [expected] = await run(oracle.execute<Record<string, any>>(
          `SELECT count(*) AS n, sum(balance) AS total, min(balance) AS lowest, max(opened) AS highest, avg(balance) AS mean FROM accounts ${where}`,
          [low]
        ))
        const row = result.rows[0]!
        expect(row["n"]).toBe(Number(expected!["n"]))
        expect(row["total"]).toBe(Number(expected!["total"]))
        expect(row["lowest"]).toBe(expected!["lowest"])
        expect(row["highest"]).toEqual(expected!["highest"])
        expect(row["mean"] as number).toBeCloseTo(Number(expected!["mean"]), 9)
      }
    }
  }, 120_000)

  it("a transaction on one node that reaches for another is refused before the second node is written", async () => {
    const ids = Array.from({ length: 50 }, (_, i) => BigInt(i * 7919 + 13))
    const a = ids[0]!
    const b = ids.find((id) => Either.getOrThrow(sharded.nodeOf(id)) !== Either.getOrThrow(sharded.nodeOf(a)))!
    const balance = (id: bigint) =>
      run(Effect.map(sharded.execute<{ balance: number | null }>(id, "SELECT balance FROM accounts WHERE id = ?", [id]), (r) => r[0]!.balance))
    const [beforeA, beforeB] = [await balance(a), await balance(b)]
    const error = await run(Effect.flip(sharded.forKey(a)(Db.withTransaction(Effect.gen(function*() {
      yield* Db.execute("UPDATE accounts SET balance = 1 WHERE id = ?", [a])
      yield* sharded.execute(b, "UPDATE accounts SET balance = 1 WHERE id = ?", [b])
    })))))
    expect(error._tag).toBe("CrossShardTransaction")
    expect(error.message).toContain("two-phase commit")
    expect([await balance(a), await balance(b)]).toEqual([beforeA, beforeB])
    // outside a transaction, work on several nodes is fine
    await run(sharded.forKey(a)(Effect.zipRight(Db.execute("SELECT 1"), sharded.execute(b, "SELECT 1"))))
  })

  it("Sharding.layer builds the nodes from engine layers and routes as make does", async () => {
    const layer = Sharding.layer({
      nodes: Object.fromEntries(names.map((n) => [n, PgDatabase.layer({ url: urlOf(databases[n]!), alias: `${databases[n]}_layer` })])),
      keyType: "bigint"
    })
    const id = 13n + 7919n * 9n
    const [viaLayer, direct] = await run(Effect.all([
      Effect.provide(Sharding.Sharding.execute(id, "SELECT id, owner FROM accounts WHERE id = ?", [id]), layer),
      sharded.execute(id, "SELECT id, owner FROM accounts WHERE id = ?", [id])
    ]))
    expect(viaLayer).toEqual(direct)
    const total = await run(Effect.provide(Sharding.Sharding.fanOut("SELECT id FROM accounts", [], { aggregate: { n: { count: "*" } } }), layer))
    expect(total.rows[0]).toEqual({ n: 3_000 })
  })

  it("a failing node fails the fan-out, or, with allowPartial, is reported while the others answer", async () => {
    await run(nodes["s2"]!.execute("ALTER TABLE accounts RENAME TO accounts_away"))
    try {
      const failed = await run(Effect.flip(sharded.fanOut("SELECT id FROM accounts")))
      expect(failed._tag).toBe("QueryError")
      const partial = await run(sharded.fanOut<{ id: string }>("SELECT id FROM accounts", [], { allowPartial: true }))
      expect(partial.failed.map((f) => f.node)).toEqual(["s2"])
      const [count] = await run(oracle.execute<{ n: string }>("SELECT count(*) AS n FROM accounts"))
      expect(partial.rows.length).toBeLessThan(Number(count!.n))
      expect(partial.rows.length).toBeGreaterThan(0)
    } finally {
      await run(nodes["s2"]!.execute("ALTER TABLE accounts_away RENAME TO accounts"))
    }
  })
})

/**
 * `Sharding.shardOf` agrees with PostgreSQL itself: 100,000 random keys of
 * each supported type land, in a table `PARTITION BY HASH` into 64
 * partitions, in the partition whose remainder `shardOf` computes.
 */
import { PgDatabase } from "@effect-dal/pg"
import { Sharding } from "@effect-dal/routing"
import { PgCluster } from "@effect-dal/testkit"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import { randomBytes, randomUUID } from "node:crypto"
import * as Pg from "pg"
import { describe, expect, it } from "vitest"
import { PG_URL, unique } from "./helpers.js"

const SHARDS = 64
const KEYS = 100_000

const randomText = () => {
  // lengths across the 12-byte blocks and every tail length; ASCII, accented, CJK and emoji (1–4 UTF-8 bytes)
  const alphabet = ["a", "Z", "0", " ", "é", "ß", "日", "本", "🌍", "\u0301", "-", "_"]
  const length = Math.floor(Math.random() * 40)
  let s = ""
  for (let i = 0; i < length; i++) s += alphabet[Math.floor(Math.random() * alphabet.length)]
  return s
}

const randomInt8 = () => BigInt.asIntN(64, BigInt("0x" + randomBytes(8).toString("hex")))

const cases: ReadonlyArray<readonly [Sharding.KeyType, string, () => Sharding.KeyValue]> = [
  ["bigint", "bigint", () => (Math.random() < 0.5 ? randomInt8() : BigInt(Math.floor(Math.random() * 2_000_000) - 1_000_000))],
  ["text", "text", randomText],
  ["uuid", "uuid", () => randomUUID()]
]

describe("Sharding.shardOf agrees with PostgreSQL's hash partitioning", () => {
  for (const [keyType, sqlType, random] of cases) {
    it(`over ${KEYS.toLocaleString("en-US")} random ${keyType} keys`, async () => {
      const table = unique(`shard_${keyType}`)
      const client = new Pg.Client({ connectionString: PG_URL })
      await client.connect()
      try {
        await client.query(`CREATE TABLE ${table} (k ${sqlType} NOT NULL) PARTITION BY HASH (k)`)
        for (let r = 0; r < SHARDS; r++) {
          await client.query(`CREATE TABLE ${table}_${r} PARTITION OF ${table} FOR VALUES WITH (MODULUS ${SHARDS}, REMAINDER ${r})`)
        }
        const keys = Array.from({ length: KEYS }, random)
        await client.query(`INSERT INTO ${table} SELECT unnest($1::${sqlType}[])`, [keys.map(String)])
        const { rows } = await client.query<{ k: string; part: string }>(`SELECT k::text AS k, tableoid::regclass::text AS part FROM ${table}`)
        expect(rows).toHaveLength(KEYS)
        const wrong = rows.filter((row) => {
          const key = keyType === "bigint" ? BigInt(row.k) : row.k
          const shard = Sharding.shardOf(key, { keyType, virtualShards: SHARDS })
          // a safe integer given as a number (hashed without BigInt) lands in the same partition
          const asNumber = Number(row.k)
          const numberShard = keyType === "bigint" && Number.isSafeInteger(asNumber)
            ? Sharding.shardOf(asNumber, { keyType, virtualShards: SHARDS })
            : shard
          return Either.isLeft(shard) || `${table}_${shard.right}` !== row.part ||
            Either.getOrUndefined(numberShard) !== shard.right
        })
        expect(wrong.slice(0, 5)).toEqual([])
        // the keys spread over every partition: the agreement is not a degenerate one
        expect(new Set(rows.map((r) => r.part)).size).toBe(SHARDS)
      } finally {
        await client.query(`DROP TABLE IF EXISTS ${table}`)
        await client.end()
      }
    }, 120_000)
  }

  it("a missing key, or one of the wrong type, is a typed ShardKeyError", () => {
    for (
      const [key, keyType] of [
        [undefined, "bigint"],
        [null, "text"],
        [1.5, "bigint"],
        ["12a", "bigint"],
        [2n ** 63n, "bigint"],
        [42, "text"],
        ["not-a-uuid", "uuid"]
      ] as const
    ) {
      const result = Sharding.shardOf(key, { keyType })
      expect(Either.isLeft(result)).toBe(true)
      if (Either.isLeft(result)) expect(result.left._tag).toBe("ShardKeyError")
    }
    // int4 and int8 values hash alike, and numbers, bigints and numeric strings are one key
    expect(Sharding.shardOf(7, { keyType: "bigint" })).toEqual(Sharding.shardOf(7n, { keyType: "bigint" }))
    expect(Sharding.shardOf("-7", { keyType: "bigint" })).toEqual(Sharding.shardOf(-7, { keyType: "bigint" }))
  })
})

describe("a shard that goes down", () => {
  it("fails its routed calls typed and, once its breaker opens, fast; the other shards are unaffected; fan-out reports it", async () => {
    const databases = [unique("down_s1"), unique("down_s2")]
    const urlOf = (database: string) => PG_URL.replace(/\/[^/]*$/, `/${database}`)
    const admin = new Pg.Client({ connectionString: PG_URL })
    await admin.connect()
    for (const database of databases) await admin.query(`CREATE DATABASE "${database}"`)
    try {
      await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
        // the third shard is a throwaway server, stopped mid-run
        const cluster = yield* PgCluster.make(21_600 + (process.pid % 300))
        const node = (url: string, alias: string) =>
          Effect.map(
            PgDatabase.make({
              url,
              alias,
              pool: { min: 1, max: 4, acquireTimeout: "300 millis" },
              connectTimeout: "300 millis",
              circuitBreaker: { minimumCalls: 5, window: { type: "count", size: 10 } }
            }),
            (r) => r.db
          )
        const nodes = {
          s1: yield* node(urlOf(databases[0]!), databases[0]!),
          s2: yield* node(urlOf(databases[1]!), databases[1]!),
          s3: yield* node(cluster.url, unique("down_s3"))
        }
        const sharded = Sharding.make({ nodes, keyType: "bigint" })
        for (const db of Object.values(nodes)) yield* db.execute("CREATE TABLE [t] ([id] bigint PRIMARY KEY)")
        const keyOn = (name: string) =>
          Array.from({ length: 100 }, (_, i) => BigInt(i)).find((k) => Either.getOrThrow(sharded.nodeOf(k)) === name)!
        for (const name of ["s1", "s2", "s3"]) {
          const k = keyOn(name)
          yield* sharded.execute(k, "INSERT INTO [t] VALUES (?)", [k])
        }
        yield* cluster.stop

        const down = keyOn("s3")
        const errors: Array<string> = []
        for (let i = 0; i < 10; i++) {
          const error = yield* Effect.flip(sharded.execute(down, "SELECT * FROM [t] WHERE [id] = ?", [down]))
          errors.push(error._tag)
        }
        expect(errors.every((t) => ["ConnectionError", "PoolTimeout", "CircuitOpen"].includes(t))).toBe(true)
        expect(errors).toContain("CircuitOpen")
        // open: refused at once
        const started = performance.now()
        const fast = yield* Effect.flip(sharded.execute(down, "SELECT 1"))
        expect(fast._tag).toBe("CircuitOpen")
        expect(performance.now() - started).toBeLessThan(100)
        // the others carry on
        for (const name of ["s1", "s2"]) {
          const k = keyOn(name)
          expect(yield* sharded.execute(k, "SELECT [id] FROM [t] WHERE [id] = ?", [k])).toHaveLength(1)
        }
        const partial = yield* sharded.fanOut("SELECT [id] FROM [t]", [], { allowPartial: true, timeout: "1 second" })
        expect(partial.failed.map((f) => f.node)).toEqual(["s3"])
        expect(partial.rows).toHaveLength(2)
        expect((yield* Effect.flip(sharded.fanOut("SELECT [id] FROM [t]")))._tag).toBe("CircuitOpen")
      })))
    } finally {
      for (const database of databases) await admin.query(`DROP DATABASE IF EXISTS "${database}" WITH (FORCE)`)
      await admin.end()
    }
  }, 60_000)
})

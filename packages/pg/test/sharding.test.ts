/**
 * `Sharding.shardOf` agrees with PostgreSQL itself: 100,000 random keys of
 * each supported type land, in a table `PARTITION BY HASH` into 64
 * partitions, in the partition whose remainder `shardOf` computes.
 */
import { Sharding } from "@effect-dal/routing"
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
          return Either.isLeft(shard) || `${table}_${shard.right}` !== row.part
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

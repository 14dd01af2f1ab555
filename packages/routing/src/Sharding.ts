/**
 * Sharding: keys map to a fixed number of virtual shards with PostgreSQL's
 * own hash-partition function, so that the mapping agrees with a table
 * `PARTITION BY HASH` into `virtualShards` partitions (and with PgDog's and
 * Citus-style layouts): moving to or from native partitioning needs no
 * rehash. A key that cannot be hashed is a typed error, never a broadcast.
 *
 * @since 0.3.0
 */
import * as Data from "effect/Data"
import * as Either from "effect/Either"
import { hashInt8, hashText, hashUuid } from "./internal/pgHash.js"

/**
 * The PostgreSQL type of the shard key column: `bigint` (also `int`,
 * `smallint`: their values hash alike), `text` (a deterministic collation;
 * `varchar` too) or `uuid`.
 *
 * @since 0.3.0
 */
export type KeyType = "bigint" | "text" | "uuid"

/**
 * A shard key value: an integer (`number` or `bigint`) for `bigint`, a
 * string for `text` and `uuid`.
 *
 * @since 0.3.0
 */
export type KeyValue = number | bigint | string

/**
 * The key could not be routed: missing, of the wrong type, or not a valid
 * value of the key's type. Nothing was sent anywhere.
 *
 * @since 0.3.0
 */
export class ShardKeyError extends Data.TaggedError("ShardKeyError")<{
  readonly keyType: KeyType
  readonly detail: string
}> {
  /** @since 0.3.0 */
  readonly category = "invalidInput" as const
  /** @since 0.3.0 */
  readonly transient = false
  override get message(): string {
    return `shard key (${this.keyType}): ${this.detail}`
  }
}

/** The default number of virtual shards. @since 0.3.0 */
export const DEFAULT_VIRTUAL_SHARDS = 64

const UUID = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i
const INT8_MIN = -(1n << 63n)
const INT8_MAX = (1n << 63n) - 1n

/**
 * PostgreSQL's partition hash of a one-column key (`hash_combine64(0,
 * extended_hash(key, HASH_PARTITION_SEED))`), as an unsigned 64-bit bigint.
 *
 * @since 0.3.0
 */
export const partitionHash = (key: unknown, keyType: KeyType): Either.Either<bigint, ShardKeyError> => {
  const fail = (detail: string) => Either.left(new ShardKeyError({ keyType, detail }))
  if (key === undefined || key === null) return fail("the key is missing")
  switch (keyType) {
    case "bigint": {
      let value: bigint
      if (typeof key === "bigint") value = key
      else if (typeof key === "number" && Number.isSafeInteger(key)) value = BigInt(key)
      else if (typeof key === "string" && /^-?\d+$/.test(key)) value = BigInt(key)
      else return fail(`${typeof key === "number" ? String(key) : typeof key} is not an integer`)
      if (value < INT8_MIN || value > INT8_MAX) return fail(`${value} is out of the bigint range`)
      return Either.right(hashInt8(value))
    }
    case "text":
      return typeof key === "string" ? Either.right(hashText(key)) : fail(`a ${typeof key} is not text`)
    case "uuid": {
      if (typeof key !== "string" || !UUID.test(key)) return fail(`${typeof key === "string" ? `"${key}"` : typeof key} is not a uuid`)
      return Either.right(hashUuid(Buffer.from(key.replace(/-/g, ""), "hex")))
    }
  }
}

/**
 * The virtual shard of `key`: its partition hash modulo `virtualShards`,
 * the remainder of the hash partition (`MODULUS virtualShards`) PostgreSQL
 * would put the row in.
 *
 * @since 0.3.0
 */
export const shardOf = (
  key: unknown,
  options: { readonly keyType: KeyType; readonly virtualShards?: number | undefined }
): Either.Either<number, ShardKeyError> => {
  const shards = options.virtualShards ?? DEFAULT_VIRTUAL_SHARDS
  return Either.map(partitionHash(key, options.keyType), (hash) => Number(hash % BigInt(shards)))
}

/**
 * PostgreSQL's hash-partition hashing, bit for bit: the extended hash
 * functions of `int8`/`int4` (`hashint8extended`), `text` (`hashtextextended`,
 * deterministic collations) and `uuid` (`uuid_hash_extended`), all built on
 * Bob Jenkins' lookup3 as `src/common/hashfn.c` has it, seeded with
 * `HASH_PARTITION_SEED` and combined with `hash_combine64`, as
 * `compute_partition_hash_value` does for a one-column partition key.
 *
 * @internal
 */

/** `HASH_PARTITION_SEED` (src/include/catalog/partition.h). */
const SEED_HI = 0x7a5b2236
const SEED_LO = 0x7996dcfd

const rot = (x: number, k: number) => ((x << k) | (x >>> (32 - k))) >>> 0

/** lookup3's state, mixed and finalized as hashfn.c does. */
class State {
  a: number
  b: number
  c: number
  constructor(length: number) {
    this.a = this.b = this.c = (0x9e3779b9 + length + 3923095) >>> 0
    // the seed, as if it were a 12-byte chunk of data padded with zeroes
    this.a = (this.a + SEED_HI) >>> 0
    this.b = (this.b + SEED_LO) >>> 0
    this.mix()
  }

  mix(): void {
    let { a, b, c } = this
    a = (a - c) >>> 0
    a = (a ^ rot(c, 4)) >>> 0
    c = (c + b) >>> 0
    b = (b - a) >>> 0
    b = (b ^ rot(a, 6)) >>> 0
    a = (a + c) >>> 0
    c = (c - b) >>> 0
    c = (c ^ rot(b, 8)) >>> 0
    b = (b + a) >>> 0
    a = (a - c) >>> 0
    a = (a ^ rot(c, 16)) >>> 0
    c = (c + b) >>> 0
    b = (b - a) >>> 0
    b = (b ^ rot(a, 19)) >>> 0
    a = (a + c) >>> 0
    c = (c - b) >>> 0
    c = (c ^ rot(b, 4)) >>> 0
    b = (b + a) >>> 0
    this.a = a
    this.b = b
    this.c = c
  }

  /** `final(a, b, c)`: the 64-bit result is `(b << 32) | c`. */
  final(): this {
    let { a, b, c } = this
    c = (c ^ b) >>> 0
    c = (c - rot(b, 14)) >>> 0
    a = (a ^ c) >>> 0
    a = (a - rot(c, 11)) >>> 0
    b = (b ^ a) >>> 0
    b = (b - rot(a, 25)) >>> 0
    c = (c ^ b) >>> 0
    c = (c - rot(b, 16)) >>> 0
    a = (a ^ c) >>> 0
    a = (a - rot(c, 4)) >>> 0
    b = (b ^ a) >>> 0
    b = (b - rot(a, 14)) >>> 0
    c = (c ^ b) >>> 0
    c = (c - rot(b, 24)) >>> 0
    this.a = a
    this.b = b
    this.c = c
    return this
  }
}

/** `hash_combine64(0, h)` adds this constant: a one-column key's row hash. */
const COMBINE_HI = 0x49a0f4dd
const COMBINE_LO = 0x15e5a8e3
const TWO_32 = 4294967296

/**
 * A finished hash, combined as a one-column partition key's is: as a bigint,
 * or straight to its remainder, in 32-bit halves (no BigInt on the routing path).
 *
 * @internal
 */
export interface PartitionHash {
  readonly value: () => bigint
  readonly remainder: (modulus: number) => number
}

const combined = (s: State): PartitionHash => {
  const low = s.c + COMBINE_LO
  const lo = low >>> 0
  const hi = (s.b + COMBINE_HI + (low >= TWO_32 ? 1 : 0)) >>> 0
  return {
    value: () => (BigInt(hi) << 32n) | BigInt(lo),
    // (hi * 2^32 + lo) mod m, exact while m * m < 2^53
    remainder: (m) => ((hi % m) * (TWO_32 % m) + (lo % m)) % m
  }
}

/** `hash_bytes_uint32_extended(k, HASH_PARTITION_SEED)`. */
const hashUint32 = (k: number): State => {
  const s = new State(4)
  s.a = (s.a + k) >>> 0
  return s.final()
}

/** `hash_bytes_extended(bytes, HASH_PARTITION_SEED)`, little-endian words. */
const hashBytes = (k: Uint8Array): State => {
  const s = new State(k.length)
  let i = 0
  let len = k.length
  const word = (j: number) => (k[j]! | (k[j + 1]! << 8) | (k[j + 2]! << 16) | (k[j + 3]! << 24)) >>> 0
  while (len >= 12) {
    s.a = (s.a + word(i)) >>> 0
    s.b = (s.b + word(i + 4)) >>> 0
    s.c = (s.c + word(i + 8)) >>> 0
    s.mix()
    i += 12
    len -= 12
  }
  // the last 11 bytes, as the switch with its fall-throughs adds them
  if (len >= 11) s.c = (s.c + (k[i + 10]! << 24)) >>> 0
  if (len >= 10) s.c = (s.c + (k[i + 9]! << 16)) >>> 0
  if (len >= 9) s.c = (s.c + (k[i + 8]! << 8)) >>> 0
  if (len >= 8) s.b = (s.b + (k[i + 7]! << 24)) >>> 0
  if (len >= 7) s.b = (s.b + (k[i + 6]! << 16)) >>> 0
  if (len >= 6) s.b = (s.b + (k[i + 5]! << 8)) >>> 0
  if (len >= 5) s.b = (s.b + k[i + 4]!) >>> 0
  if (len >= 4) s.a = (s.a + (k[i + 3]! << 24)) >>> 0
  if (len >= 3) s.a = (s.a + (k[i + 2]! << 16)) >>> 0
  if (len >= 2) s.a = (s.a + (k[i + 1]! << 8)) >>> 0
  if (len >= 1) s.a = (s.a + k[i]!) >>> 0
  return s.final()
}

/** `hashint8extended` of the 64-bit integer `hi * 2^32 + lo` (two's complement halves). */
const int8 = (hi: number, lo: number): PartitionHash => {
  const negative = (hi & 0x80000000) !== 0
  return combined(hashUint32((lo ^ (negative ? ~hi : hi)) >>> 0))
}

/** `hashint8extended`: an integer key (`int8`; `int4` values hash the same). @internal */
export const hashInt8 = (value: bigint): PartitionHash => {
  const v = BigInt.asUintN(64, value)
  return int8(Number(v >> 32n) >>> 0, Number(v & 0xffffffffn) >>> 0)
}

/** `hashInt8` of a safe integer, without BigInt. @internal */
export const hashSafeInteger = (value: number): PartitionHash => {
  const hi = Math.floor(value / TWO_32)
  return int8(hi >>> 0, (value - hi * TWO_32) >>> 0)
}

const utf8 = new TextEncoder()

/** `hashtextextended` under a deterministic collation: the UTF-8 bytes. @internal */
export const hashText = (value: string): PartitionHash => combined(hashBytes(utf8.encode(value)))

/** `uuid_hash_extended`: the 16 bytes. @internal */
export const hashUuid = (bytes: Uint8Array): PartitionHash => combined(hashBytes(bytes))

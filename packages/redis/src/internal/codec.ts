/**
 * A tagged JSON encoding for cached rows: exact round trips of `bigint`,
 * `Date`, `Buffer`/`Uint8Array`, numeric strings and plain JSON, where bare
 * `JSON.stringify` would lose types (a `Date` comes back a string, a
 * `bigint` throws, a `Buffer` becomes an object).
 *
 * @internal
 */

// one-key objects whose key starts with "$" carry a type; a real object shaped so is escaped with "$o"
const tagged = (key: string, value: unknown) => ({ [key]: value })

const encodeValue = (value: unknown): unknown => {
  if (value === null || typeof value !== "object") {
    if (typeof value === "bigint") return tagged("$n", value.toString())
    if (typeof value === "number" && !Number.isFinite(value)) return tagged("$f", String(value))
    if (value === undefined) return tagged("$u", 0)
    return value
  }
  if (value instanceof Date) return tagged("$d", value.getTime())
  if (value instanceof Uint8Array) {
    return tagged(Buffer.isBuffer(value) ? "$b" : "$a", Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString("base64"))
  }
  if (Array.isArray(value)) return value.map(encodeValue)
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(value)) out[k] = encodeValue(v)
  const keys = Object.keys(out)
  return keys.length === 1 && keys[0]!.startsWith("$") ? tagged("$o", out) : out
}

const decodeValue = (value: unknown): unknown => {
  if (value === null || typeof value !== "object") return value
  if (Array.isArray(value)) return value.map(decodeValue)
  const keys = Object.keys(value)
  if (keys.length === 1 && keys[0]!.startsWith("$")) {
    const v = (value as Record<string, unknown>)[keys[0]!]
    switch (keys[0]) {
      case "$n":
        return BigInt(v as string)
      case "$f":
        return Number(v)
      case "$u":
        return undefined
      case "$d":
        return new Date(v as number)
      case "$b":
        return Buffer.from(v as string, "base64")
      case "$a":
        return new Uint8Array(Buffer.from(v as string, "base64"))
      case "$o": {
        const out: Record<string, unknown> = {}
        for (const [k, inner] of Object.entries(v as Record<string, unknown>)) out[k] = decodeValue(inner)
        return out
      }
    }
  }
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(value)) out[k] = decodeValue(v)
  return out
}

/** Encodes rows as text. @internal */
export const encode = (value: unknown): string => JSON.stringify(encodeValue(value))

/** Decodes what `encode` made. @internal */
export const decode = (text: string): unknown => decodeValue(JSON.parse(text))

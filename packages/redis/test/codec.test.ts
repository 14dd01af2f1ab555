import { describe, expect, it } from "vitest"
import { decode, encode } from "../src/internal/codec.js"

describe("the cache's value encoding", () => {
  it("round-trips bigint, Date, Buffer, Uint8Array, numeric strings, nulls and lookalike objects exactly", () => {
    const rows = [
      {
        id: 1,
        big: 9007199254740993n,
        numeric: "12345678901234567890.123456789",
        at: new Date("2024-02-29T12:34:56.789Z"),
        bytes: Buffer.from([0, 1, 255]),
        raw: new Uint8Array([9, 8, 7]),
        json: { nested: [1, "2", null, { $d: 5 }], $o: true },
        lookalike: { $n: "1" },
        nothing: null,
        inf: Infinity
      }
    ]
    const back = decode(encode(rows)) as typeof rows
    expect(back).toEqual(rows)
    expect(typeof back[0]!.big).toBe("bigint")
    expect(back[0]!.at).toBeInstanceOf(Date)
    expect(Buffer.isBuffer(back[0]!.bytes)).toBe(true)
    expect(back[0]!.raw).toBeInstanceOf(Uint8Array)
    expect(Buffer.isBuffer(back[0]!.raw)).toBe(false)
    expect(back[0]!.lookalike).toEqual({ $n: "1" })
    expect(typeof back[0]!.numeric).toBe("string")
  })
})

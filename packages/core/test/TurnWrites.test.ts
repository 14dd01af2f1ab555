/**
 * `Driver.TurnWrites`: what one turn of the event loop writes goes out at its
 * end as one buffer, in order with the writes it does not hold.
 */
import { Driver } from "@effect-dal/core"
import { describe, expect, it } from "vitest"

const turnEnd = () => new Promise<void>((resolve) => setImmediate(resolve))

const socket = (options: { ok?: boolean } = {}) => {
  const sent: Array<string> = []
  let writable = true
  const writes = new Driver.TurnWrites((chunk) => {
    sent.push(Buffer.from(chunk).toString())
    return options.ok ?? true
  }, () => writable)
  return { sent, writes, end: () => (writable = false) }
}

describe("Driver.TurnWrites", () => {
  it("holds a turn's writes and sends them at its end as one buffer", async () => {
    const { sent, writes } = socket()
    expect(writes.hold(Buffer.from("a"))).toBe(true)
    writes.hold(Buffer.from("b"))
    await Promise.resolve()
    writes.hold(Buffer.from("c"))
    expect(sent).toEqual([])
    await turnEnd()
    expect(sent).toEqual(["abc"])
    writes.hold(Buffer.from("d"))
    await turnEnd()
    expect(sent).toEqual(["abc", "d"])
  })

  it("sends what is held first when a write it does not hold flushes it", async () => {
    const { sent, writes } = socket()
    writes.hold(Buffer.from("a"))
    writes.flush()
    sent.push("direct")
    writes.hold(Buffer.from("b"))
    await turnEnd()
    expect(sent).toEqual(["a", "direct", "b"])
  })

  it("sends at once what passes 64 KB, each buffer as it is, with the socket's answer", async () => {
    const { sent, writes } = socket({ ok: false })
    const big = Buffer.alloc(40 * 1024, "x")
    expect(writes.hold(Buffer.from("a"))).toBe(true)
    expect(writes.hold(big)).toBe(true)
    expect(writes.hold(big)).toBe(false)
    expect(sent.map((s) => s.length)).toEqual([1, big.length, big.length])
    await turnEnd()
    expect(sent).toHaveLength(3)
  })

  it("sends nothing to a socket that no longer takes writes", async () => {
    const { sent, writes, end } = socket()
    writes.hold(Buffer.from("a"))
    end()
    await turnEnd()
    expect(sent).toEqual([])
  })

  it("flushes each connection's writes separately at the same turn's end", async () => {
    const one = socket()
    const two = socket()
    one.writes.hold(Buffer.from("1a"))
    two.writes.hold(Buffer.from("2a"))
    one.writes.hold(Buffer.from("1b"))
    await turnEnd()
    expect([one.sent, two.sent]).toEqual([["1a1b"], ["2a"]])
  })
})

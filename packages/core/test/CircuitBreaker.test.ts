import { describe, expect, it } from "@effect/vitest"
import { CircuitBreaker, type DbError } from "@effect-dal/core"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Schedule from "effect/Schedule"
import * as TestClock from "effect/TestClock"

const make = (options: CircuitBreaker.CircuitBreakerOptions) => CircuitBreaker.make("test", options)

describe("CircuitBreaker", () => {
  it.effect("stays closed below minimumCalls, opens at the failure-rate threshold, and fails fast while open", () =>
    Effect.gen(function*() {
      const breaker = yield* make({ minimumCalls: 10, failureRateThreshold: 0.5, window: { type: "count", size: 10 } })
      for (let i = 0; i < 4; i++) breaker.record(true, 1)
      for (let i = 0; i < 5; i++) breaker.record(false, 1)
      expect(breaker.state()).toBe("closed") // 9 calls < minimumCalls
      breaker.record(true, 1) // 5 of 10 failed
      expect(breaker.state()).toBe("open")
      const denied = breaker.permit() as DbError.CircuitOpen
      expect(denied).toMatchObject({ _tag: "CircuitOpen", alias: "test", category: "circuitOpen" })
      expect(denied!.retryAfterMillis).toBeGreaterThan(0)
      expect(breaker.stats()).toMatchObject({ rejected: 1, transitions: 1 })
    }))

  it.effect("slides its count window: old failures fall out", () =>
    Effect.gen(function*() {
      const breaker = yield* make({ minimumCalls: 4, failureRateThreshold: 0.75, window: { type: "count", size: 4 } })
      breaker.record(true, 1)
      breaker.record(true, 1)
      breaker.record(false, 1)
      breaker.record(false, 1)
      for (let i = 0; i < 4; i++) breaker.record(false, 1)
      expect(breaker.stats()).toMatchObject({ calls: 4, failures: 0, state: "closed" })
    }))

  it.effect("opens on the slow-call rate", () =>
    Effect.gen(function*() {
      const breaker = yield* make({ minimumCalls: 4, slowCallRateThreshold: 0.5, slowCallDuration: "100 millis" })
      breaker.record(false, 150)
      breaker.record(false, 10)
      breaker.record(false, 120)
      expect(breaker.state()).toBe("closed")
      breaker.record(false, 10)
      expect(breaker.state()).toBe("open")
    }))

  it.live("lets a limited number of probes through when half-open, closes when they succeed, reopens when one fails", () =>
    Effect.gen(function*() {
      const breaker = yield* make({
        minimumCalls: 2,
        failureRateThreshold: 0.5,
        permittedCallsInHalfOpen: 2,
        waitInOpen: Schedule.exponential("50 millis")
      })
      breaker.record(true, 1)
      breaker.record(true, 1)
      expect(breaker.state()).toBe("open")
      yield* Effect.sleep(60)
      expect(breaker.permit()).toMatchObject({ _tag: "Probe" })
      expect(breaker.state()).toBe("halfOpen")
      expect(breaker.permit()).toMatchObject({ _tag: "Probe" })
      expect(breaker.permit()).toMatchObject({ _tag: "CircuitOpen" }) // only 2 probes
      breaker.record(true, 1) // a probe failed: open again, for longer (the schedule backs off)
      expect(breaker.state()).toBe("open")
      const second = breaker.permit() as DbError.CircuitOpen
      expect(second.retryAfterMillis).toBeGreaterThan(60)
      yield* Effect.sleep(second.retryAfterMillis + 10)
      expect(breaker.permit()).toMatchObject({ _tag: "Probe" })
      expect(breaker.permit()).toMatchObject({ _tag: "Probe" })
      breaker.record(false, 1)
      expect(breaker.state()).toBe("halfOpen")
      breaker.record(false, 1)
      expect(breaker.state()).toBe("closed")
      expect(breaker.stats()).toMatchObject({ calls: 0, failures: 0 }) // a fresh window
    }))

  it.live("a time-based window forgets calls older than its duration", () =>
    Effect.gen(function*() {
      const breaker = yield* make({ minimumCalls: 3, window: { type: "time", duration: "100 millis" } })
      breaker.record(true, 1)
      breaker.record(true, 1)
      yield* Effect.sleep(150)
      breaker.record(true, 1)
      expect(breaker.stats()).toMatchObject({ calls: 1, state: "closed" })
    }))

  it.effect("notifies subscribers of every state change", () =>
    Effect.gen(function*() {
      const breaker = yield* make({ minimumCalls: 1 })
      const seen: Array<string> = []
      breaker.subscribe((from, to) => seen.push(`${from}->${to}`))
      breaker.record(true, 1)
      expect(seen).toEqual(["closed->open"])
    }))

  it.effect("an interrupted or crashed probe gives its permit back: the breaker closes once the database answers", () =>
    Effect.gen(function*() {
      const breaker = yield* make({ minimumCalls: 1, permittedCallsInHalfOpen: 2, waitInOpen: Schedule.spaced("1 second") })
      breaker.record(true, 1)
      yield* TestClock.adjust("2 seconds")
      // two probes that never finish, then are interrupted; one that dies
      const hung = yield* Effect.fork(breaker.guard(Effect.never))
      const hung2 = yield* Effect.fork(breaker.guard(Effect.never))
      yield* Effect.yieldNow()
      expect(breaker.stats()).toMatchObject({ state: "halfOpen", probesInFlight: 2 })
      expect(yield* Effect.flip(breaker.guard(Effect.void))).toMatchObject({ _tag: "CircuitOpen" })
      yield* Fiber.interrupt(hung)
      yield* Effect.exit(breaker.guard(Effect.die("boom")))
      yield* Fiber.interrupt(hung2)
      expect(breaker.stats().probesInFlight).toBe(0)
      for (let i = 0; i < 2; i++) {
        yield* breaker.guard(Effect.sync(() => breaker.record(false, 1)))
      }
      expect(breaker.state()).toBe("closed")
    }))

  it.effect("a permit of an earlier half-open period is ignored when given back late", () =>
    Effect.gen(function*() {
      const breaker = yield* make({ minimumCalls: 1, permittedCallsInHalfOpen: 1, waitInOpen: Schedule.spaced("1 second") })
      breaker.record(true, 1)
      yield* TestClock.adjust("2 seconds")
      const old = breaker.permit() as CircuitBreaker.Probe
      breaker.record(true, 1) // open again
      yield* TestClock.adjust("2 seconds")
      const current = breaker.permit()
      expect(current).toMatchObject({ _tag: "Probe" })
      breaker.release(old)
      expect(breaker.stats().probesInFlight).toBe(1)
      expect(breaker.permit()).toMatchObject({ _tag: "CircuitOpen" })
    }))
})

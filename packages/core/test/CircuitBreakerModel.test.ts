/**
 * A model-based test of the breaker: random interleavings of calls that
 * succeed, fail, run slow, are interrupted or die, with time passing (on
 * TestClock), checked against the breaker's invariants after every step.
 */
import { describe, expect, it } from "@effect/vitest"
import { CircuitBreaker } from "@effect-dal/core"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as FastCheck from "effect/FastCheck"
import * as Fiber from "effect/Fiber"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Schedule from "effect/Schedule"
import * as TestClock from "effect/TestClock"
import * as TestContext from "effect/TestContext"

type Outcome = "success" | "failure" | "slow" | "defect"

type Command =
  | { readonly _tag: "start" }
  | { readonly _tag: "end"; readonly call: number; readonly outcome: Outcome }
  | { readonly _tag: "interrupt"; readonly call: number }
  | { readonly _tag: "stray"; readonly failed: boolean }
  | { readonly _tag: "wait"; readonly millis: number }

const command: FastCheck.Arbitrary<Command> = FastCheck.oneof(
  { arbitrary: FastCheck.constant({ _tag: "start" as const }), weight: 4 },
  {
    arbitrary: FastCheck.record({
      _tag: FastCheck.constant("end" as const),
      call: FastCheck.nat(20),
      outcome: FastCheck.constantFrom<Array<Outcome>>("success", "failure", "slow", "defect")
    }),
    weight: 4
  },
  { arbitrary: FastCheck.record({ _tag: FastCheck.constant("interrupt" as const), call: FastCheck.nat(20) }), weight: 2 },
  { arbitrary: FastCheck.record({ _tag: FastCheck.constant("stray" as const), failed: FastCheck.boolean() }), weight: 1 },
  { arbitrary: FastCheck.record({ _tag: FastCheck.constant("wait" as const), millis: FastCheck.nat(3_000) }), weight: 2 }
)

const settings = FastCheck.record({
  permitted: FastCheck.integer({ min: 1, max: 4 }),
  minimumCalls: FastCheck.integer({ min: 1, max: 6 }),
  windowSize: FastCheck.integer({ min: 1, max: 10 }),
  failureRate: FastCheck.double({ min: 0.1, max: 1, noNaN: true }),
  slowRate: FastCheck.double({ min: 0.1, max: 1, noNaN: true }),
  baseWaitMillis: FastCheck.integer({ min: 10, max: 1_000 })
})

const SLOW_MILLIS = 100
/** The wait in open never exceeds this (the schedule is capped by a union with it). */
const MAX_WAIT_MILLIS = 2_000

interface Call {
  readonly gate: Deferred.Deferred<Outcome>
  readonly fiber: Fiber.RuntimeFiber<void, unknown>
  /** Set once the breaker let the call through: the state then, and the half-open period it ran in. */
  admitted: { readonly halfOpen: boolean; readonly period: number } | undefined
  ended: boolean
}

const run = (s: typeof settings extends FastCheck.Arbitrary<infer A> ? A : never, commands: ReadonlyArray<Command>) =>
  Effect.gen(function*() {
    const breaker = yield* CircuitBreaker.make("model", {
      window: { type: "count", size: s.windowSize },
      minimumCalls: s.minimumCalls,
      failureRateThreshold: s.failureRate,
      slowCallRateThreshold: s.slowRate,
      slowCallDuration: `${SLOW_MILLIS} millis`,
      permittedCallsInHalfOpen: s.permitted,
      waitInOpen: Schedule.exponential(`${s.baseWaitMillis} millis`).pipe(
        Schedule.union(Schedule.spaced(`${MAX_WAIT_MILLIS} millis`))
      )
    })
    // the model's own count of half-open periods, from the transitions it is told of
    let period = 0
    breaker.subscribe((_, to) => {
      if (to === "halfOpen") period++
    })
    const calls: Array<Call> = []
    const live = () => calls.filter((c) => !c.ended)

    const start = Effect.gen(function*() {
      const gate = yield* Deferred.make<Outcome>()
      const call: Call = { gate, fiber: undefined as never, admitted: undefined, ended: false }
      const body = Effect.suspend(() => {
        call.admitted = { halfOpen: breaker.state() === "halfOpen", period }
        return Effect.flatMap(Deferred.await(gate), (outcome) => {
          switch (outcome) {
            case "success":
              return Effect.sync(() => breaker.record(false, 1))
            case "slow":
              return Effect.sync(() => breaker.record(false, SLOW_MILLIS * 2))
            case "failure":
              return Effect.zipRight(Effect.sync(() => breaker.record(true, 1)), Effect.fail("failed"))
            case "defect":
              return Effect.die("defect")
          }
        })
      })
      const fiber = yield* Effect.fork(Effect.ensuring(breaker.guard(body), Effect.sync(() => (call.ended = true))))
      ;(call as { fiber: Fiber.RuntimeFiber<void, unknown> }).fiber = fiber
      calls.push(call)
    })

    const settle = Effect.repeatN(Effect.yieldNow(), 3)

    const check = (step: string) => {
      const stats = breaker.stats()
      expect(["closed", "open", "halfOpen"], step).toContain(stats.state)
      // the calls actually running as probes of the current half-open period
      const probes = live().filter((c) => c.admitted?.halfOpen === true && c.admitted.period === period).length
      if (stats.state === "halfOpen") {
        expect(probes, `${step}: probes running`).toBeLessThanOrEqual(s.permitted)
        expect(stats.probesInFlight, `${step}: permits held`).toBeLessThanOrEqual(s.permitted)
        expect(stats.probesInFlight, `${step}: permits held vs probes running`).toBe(probes)
      }
    }

    for (const [i, c] of commands.entries()) {
      const step = `step ${i}: ${JSON.stringify(c)}`
      switch (c._tag) {
        case "start":
          yield* start
          break
        case "end": {
          const call = live()[c.call]
          if (call !== undefined) yield* Deferred.succeed(call.gate, c.outcome)
          break
        }
        case "interrupt": {
          const call = live()[c.call]
          if (call !== undefined) yield* Fiber.interrupt(call.fiber)
          break
        }
        case "stray":
          breaker.record(c.failed, 1)
          break
        case "wait":
          yield* TestClock.adjust(c.millis)
          break
      }
      yield* settle
      check(step)
    }

    // whatever was left running is interrupted, as a server does with requests that time out
    for (const call of live()) yield* Fiber.interrupt(call.fiber)
    yield* TestClock.adjust(MAX_WAIT_MILLIS + 1)
    // liveness: with a healthy database, `permitted` calls in a row close the breaker
    for (let n = 0; n < s.permitted && breaker.state() !== "closed"; n++) {
      yield* Effect.exit(breaker.guard(Effect.sync(() => breaker.record(false, 1))))
    }
    expect(breaker.state(), "closed after the wait in open and healthy calls").toBe("closed")
  })

describe("CircuitBreaker model", () => {
  it("keeps its invariants over random interleavings, and always closes again on a healthy database", async () => {
    await FastCheck.assert(
      FastCheck.asyncProperty(settings, FastCheck.array(command, { maxLength: 60 }), (s, commands) =>
        Effect.runPromise(run(s, commands).pipe(
          Effect.provide(TestContext.TestContext),
          Logger.withMinimumLogLevel(LogLevel.None)
        ))),
      { numRuns: 500 }
    )
  })
})

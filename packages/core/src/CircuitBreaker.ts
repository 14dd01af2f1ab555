/**
 * A circuit breaker per database alias: closed, open and half-open, over a
 * count- or time-based sliding window, in the manner of resilience4j. Only
 * infrastructure failures count (connections, timeouts, an unavailable
 * database, exhausted resources); a constraint or syntax error means the
 * database answered, and counts as a success.
 *
 * `permit`, `release` and `record` are synchronous: the breaker sits on every
 * call. Half-open probe permits are tokens that every holder gives back,
 * however its call ends (`guard` does it for an effect), so that an
 * interrupted or crashed probe can never leave the breaker stuck half-open.
 *
 * @since 0.1.0
 */
import type * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Runtime from "effect/Runtime"
import * as Schedule from "effect/Schedule"
import * as ScheduleDecision from "effect/ScheduleDecision"
import * as ScheduleIntervals from "effect/ScheduleIntervals"
import { CircuitOpen } from "./DbError.js"

/**
 * The sliding window: the last `size` calls, or the calls of the last `duration`.
 *
 * @since 0.1.0
 */
export type Window =
  | { readonly type: "count"; readonly size: number }
  | { readonly type: "time"; readonly duration: Duration.DurationInput }

/**
 * Breaker settings; every one has a default.
 *
 * @since 0.1.0
 */
export interface CircuitBreakerOptions {
  /** Default: the last 100 calls. */
  readonly window?: Window | undefined
  /** Open when this share of the window's calls failed (0–1); default 0.5. */
  readonly failureRateThreshold?: number | undefined
  /** Open when this share of the window's calls were slow (0–1); default 1 (only if every call was slow). */
  readonly slowCallRateThreshold?: number | undefined
  /** A call slower than this is slow; default 5 seconds. */
  readonly slowCallDuration?: Duration.DurationInput | undefined
  /** No decision before the window holds this many calls; default 20. */
  readonly minimumCalls?: number | undefined
  /** How long to stay open, per consecutive opening; default exponential from 1 s, capped at 30 s. */
  readonly waitInOpen?: Schedule.Schedule<unknown> | undefined
  /** Probe calls in flight at once while half-open; default 3. This many successes in a row close it. */
  readonly permittedCallsInHalfOpen?: number | undefined
}

/**
 * The breaker's state.
 *
 * @since 0.1.0
 */
export type State = "closed" | "open" | "halfOpen"

/**
 * A snapshot of the breaker.
 *
 * @since 0.1.0
 */
export interface Stats {
  readonly state: State
  /** Calls, failed calls and slow calls in the window. */
  readonly calls: number
  readonly failures: number
  readonly slow: number
  /** How many times the state changed. */
  readonly transitions: number
  /** Calls refused while open. */
  readonly rejected: number
  /** Half-open probe permits taken and not yet given back. */
  readonly probesInFlight: number
}

/**
 * A half-open probe permit: whoever took it gives it back with `release`,
 * once, when its call has ended (whatever the outcome).
 *
 * @since 0.2.0
 */
export interface Probe {
  readonly _tag: "Probe"
  /** The half-open period it belongs to; a permit of an earlier one is ignored. */
  readonly period: number
  released: boolean
}

/**
 * A circuit breaker.
 *
 * @since 0.1.0
 */
export interface CircuitBreaker {
  readonly alias: string
  readonly state: () => State
  readonly stats: () => Stats
  /**
   * `undefined` when closed (the call may go ahead, nothing to give back), a
   * `Probe` to give back with `release` when half-open, or the error to fail with.
   */
  readonly permit: () => CircuitOpen | Probe | undefined
  /** Gives a probe permit back; a second release of the same permit does nothing. */
  readonly release: (probe: Probe) => void
  /**
   * Runs `effect` under a permit: fails fast with `CircuitOpen`, and gives a
   * probe permit back however the effect ends (success, failure, defect or
   * interruption). The outcome itself is reported with `record`.
   */
  readonly guard: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E | CircuitOpen, R>
  /** Records a call's outcome: `failed` only for infrastructure failures. */
  readonly record: (failed: boolean, durationMillis: number) => void
  /** Calls `listener` on every state change; returns the unsubscribe function. */
  readonly subscribe: (listener: (from: State, to: State) => void) => () => void
}

const defaultWait: Schedule.Schedule<unknown> = Schedule.exponential("1 second").pipe(
  Schedule.union(Schedule.spaced("30 seconds"))
)

/**
 * Makes a breaker. State changes are logged.
 *
 * @since 0.1.0
 */
export const make = (alias: string, options: CircuitBreakerOptions = {}): Effect.Effect<CircuitBreaker> =>
  Effect.zipWith(
    Effect.interruptible(Effect.runtime<never>()),
    Effect.clock,
    (runtime, clock) => makeWith(alias, options, runtime, clock)
  )

const makeWith = (
  alias: string,
  options: CircuitBreakerOptions,
  runtime: Runtime.Runtime<never>,
  clock: Clock.Clock
): CircuitBreaker => {
  // the fiber's clock, so that tests can drive the breaker with TestClock
  const nowMillis = () => clock.unsafeCurrentTimeMillis()
  const window = options.window ?? { type: "count", size: 100 }
  const failureRate = options.failureRateThreshold ?? 0.5
  const slowRate = options.slowCallRateThreshold ?? 1
  const slowMillis = Duration.toMillis(options.slowCallDuration ?? "5 seconds")
  const minimumCalls = options.minimumCalls ?? 20
  const probes = options.permittedCallsInHalfOpen ?? 3
  const waitSchedule = options.waitInOpen ?? defaultWait
  const windowMillis = window.type === "time" ? Duration.toMillis(window.duration) : 0
  const size = window.type === "count" ? Math.max(1, window.size) : 0

  // the window: a ring of outcome flags (bit 1: failed, bit 2: slow), or timestamped entries
  const ring = new Uint8Array(size)
  let ringNext = 0
  let ringCount = 0
  const timed: Array<{ at: number; flags: number }> = []
  let calls = 0
  let failures = 0
  let slow = 0

  let state: State = "closed"
  let openUntil = 0
  let scheduleState: unknown = waitSchedule.initial
  let period = 0
  let probesInFlight = 0
  let probesSucceeded = 0
  let transitions = 0
  let rejected = 0
  const listeners = new Set<(from: State, to: State) => void>()
  const runFork = Runtime.runFork(runtime)

  const resetWindow = () => {
    ringNext = 0
    ringCount = 0
    timed.length = 0
    calls = 0
    failures = 0
    slow = 0
  }

  const count = (flags: number, sign: 1 | -1) => {
    calls += sign
    if (flags & 1) failures += sign
    if (flags & 2) slow += sign
  }

  const push = (flags: number, now: number) => {
    if (window.type === "count") {
      if (ringCount === size) count(ring[ringNext]!, -1)
      else ringCount++
      ring[ringNext] = flags
      ringNext = (ringNext + 1) % size
    } else {
      prune(now)
      timed.push({ at: now, flags })
    }
    count(flags, 1)
  }

  const prune = (now: number) => {
    let drop = 0
    while (drop < timed.length && now - timed[drop]!.at > windowMillis) {
      count(timed[drop]!.flags, -1)
      drop++
    }
    if (drop > 0) timed.splice(0, drop)
  }

  /** The next wait in open, from the schedule; a finished schedule keeps its last delay. */
  let lastWait = 1_000
  const nextWait = (now: number): number => {
    const [next, , decision] = Effect.runSync(waitSchedule.step(now, undefined, scheduleState))
    scheduleState = next
    if (!ScheduleDecision.isDone(decision)) {
      lastWait = Math.max(0, ScheduleIntervals.start(decision.intervals) - now)
    }
    return lastWait
  }

  const transition = (to: State, now: number, reason: string) => {
    const from = state
    state = to
    transitions++
    if (to === "open") {
      openUntil = now + nextWait(now)
    } else if (to === "halfOpen") {
      // permits of an earlier half-open period no longer count
      period++
      probesInFlight = 0
      probesSucceeded = 0
    } else {
      scheduleState = waitSchedule.initial
      resetWindow()
    }
    const log = to === "closed" ? Effect.logInfo : Effect.logWarning
    runFork(log(`circuit breaker ${from} -> ${to}: ${reason}`).pipe(
      Effect.annotateLogs({ alias, from, to, ...(to === "open" ? { openForMillis: openUntil - now } : {}) })
    ))
    for (const listener of listeners) listener(from, to)
  }

  const permit = (): CircuitOpen | Probe | undefined => {
    if (state === "closed") return undefined
    const now = nowMillis()
    if (state === "open") {
      if (now < openUntil) {
        rejected++
        return new CircuitOpen({ alias, retryAfterMillis: openUntil - now })
      }
      transition("halfOpen", now, "wait in open elapsed; probing")
    }
    if (probesInFlight < probes) {
      probesInFlight++
      return { _tag: "Probe", period, released: false }
    }
    rejected++
    return new CircuitOpen({ alias, retryAfterMillis: 0 })
  }

  const release = (probe: Probe) => {
    if (probe.released) return
    probe.released = true
    if (state === "halfOpen" && probe.period === period) probesInFlight--
  }

  const guard = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | CircuitOpen, R> =>
    state === "closed" ? effect : Effect.uninterruptibleMask((restore) =>
      Effect.suspend((): Effect.Effect<A, E | CircuitOpen, R> => {
        const p = permit()
        if (p === undefined) return restore(effect)
        if (p._tag === "CircuitOpen") return Effect.fail(p)
        // taken and given back inside one uninterruptible region: no interruption can lose it
        return Effect.ensuring(restore(effect), Effect.sync(() => release(p)))
      })
    )

  const record = (failed: boolean, durationMillis: number) => {
    const isSlow = durationMillis >= slowMillis
    const now = nowMillis()
    if (state === "halfOpen") {
      if (failed || isSlow) {
        transition("open", now, failed ? "a probe call failed" : "a probe call was slow")
      } else if (++probesSucceeded >= probes) {
        transition("closed", now, `${probes} probe calls succeeded`)
      }
      return
    }
    if (state === "open") return
    push((failed ? 1 : 0) | (isSlow ? 2 : 0), now)
    if (calls < minimumCalls) return
    if (failures / calls >= failureRate) {
      transition("open", now, `failure rate ${Math.round((failures / calls) * 100)}% over ${calls} calls`)
    } else if (slow / calls >= slowRate) {
      transition("open", now, `slow-call rate ${Math.round((slow / calls) * 100)}% over ${calls} calls`)
    }
  }

  return {
    alias,
    state: () => {
      if (window.type === "time") prune(nowMillis())
      return state
    },
    stats: () => {
      if (window.type === "time") prune(nowMillis())
      return { state, calls, failures, slow, transitions, rejected, probesInFlight }
    },
    permit,
    release,
    guard,
    record,
    subscribe: (listener) => {
      listeners.add(listener)
      return () => listeners.delete(listener)
    }
  }
}

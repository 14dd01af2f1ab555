import { describe, expect, it } from "@effect/vitest"
import { ScalingAdvisor } from "@effect-dal/core"

describe("ScalingAdvisor", () => {
  it("maps timeout rates onto the table", () => {
    expect(ScalingAdvisor.verdict(0)).toEqual({ level: 0, meaning: "normal load", advice: "no action needed" })
    expect(ScalingAdvisor.verdict(0.0009).level).toBe(0)
    expect(ScalingAdvisor.verdict(0.001)).toEqual({ level: 1, meaning: "mild contention", advice: "review slow queries" })
    expect(ScalingAdvisor.verdict(0.01).level).toBe(1)
    expect(ScalingAdvisor.verdict(0.02)).toEqual({ level: 2, meaning: "high load", advice: "scale vertically" })
    expect(ScalingAdvisor.verdict(0.05).level).toBe(2)
    expect(ScalingAdvisor.verdict(0.051)).toEqual({ level: 3, meaning: "critical pressure", advice: "scale horizontally" })
  })

  it("computes the rate over its sliding window and the capacity arithmetic", () => {
    const w = new ScalingAdvisor.Window(10)
    const t0 = 1_000_000
    for (let i = 0; i < 980; i++) w.statement(10, false, t0)
    for (let i = 0; i < 10; i++) w.statement(10, true, t0 + 1_000)
    for (let i = 0; i < 10; i++) w.acquireFailed(true, t0 + 1_000)
    const report = w.report(20, 100, t0 + 1_500)
    expect(report.attempts).toBe(1_000)
    expect(report.timeouts).toBe(20)
    expect(report.timeoutRate).toBe(0.02)
    expect(report.level).toBe(2)
    expect(report.capacity.meanQueryMillis).toBe(10)
    expect(report.capacity.queriesPerSecondCapacity).toBe(2_000) // 20 connections / 10 ms
    expect(report.capacity.observedQueriesPerSecond).toBe(495) // 990 statements over 2 seconds
    expect(report.capacity.observedConcurrency).toBeCloseTo(4.95)
    expect(report.capacity.appServersAllowed).toBe(5) // 100 / 20
    // ten seconds later the window has forgotten all of it
    expect(w.report(20, 100, t0 + 12_000).attempts).toBe(0)
  })
})

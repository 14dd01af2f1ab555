/**
 * The timeout rate over a sliding window, turned into advice: the system
 * should tell you when to grow.
 *
 * | timeout rate | meaning | advice |
 * |---|---|---|
 * | < 0.1% | normal load | no action needed |
 * | 0.1–1% | mild contention | review slow queries |
 * | 1–5% | high load | scale vertically |
 * | > 5% | critical pressure | scale horizontally |
 *
 * @since 0.1.0
 */

/**
 * A verdict of the table above.
 *
 * @since 0.1.0
 */
export interface Verdict {
  /** 0 to 3, the row of the table. */
  readonly level: 0 | 1 | 2 | 3
  readonly meaning: "normal load" | "mild contention" | "high load" | "critical pressure"
  readonly advice: "no action needed" | "review slow queries" | "scale vertically" | "scale horizontally"
}

/**
 * The table's rows, for display.
 *
 * @since 0.1.0
 */
export const table: ReadonlyArray<Verdict & { readonly range: string }> = [
  { level: 0, range: "< 0.1%", meaning: "normal load", advice: "no action needed" },
  { level: 1, range: "0.1–1%", meaning: "mild contention", advice: "review slow queries" },
  { level: 2, range: "1–5%", meaning: "high load", advice: "scale vertically" },
  { level: 3, range: "> 5%", meaning: "critical pressure", advice: "scale horizontally" }
]

/**
 * The verdict for a timeout rate (0–1).
 *
 * @since 0.1.0
 */
export const verdict = (timeoutRate: number): Verdict => {
  const row = timeoutRate < 0.001 ? table[0]! : timeoutRate <= 0.01 ? table[1]! : timeoutRate <= 0.05 ? table[2]! : table[3]!
  return { level: row.level, meaning: row.meaning, advice: row.advice }
}

/**
 * What the advisor reports.
 *
 * @since 0.1.0
 */
export interface Report extends Verdict {
  /** Acquire and statement timeouts over attempts, in the window. */
  readonly timeoutRate: number
  readonly attempts: number
  readonly timeouts: number
  readonly windowSeconds: number
  readonly capacity: {
    readonly poolMax: number
    readonly meanQueryMillis: number
    /** pool max ÷ mean query time: what this app server can serve. */
    readonly queriesPerSecondCapacity: number
    readonly observedQueriesPerSecond: number
    /** throughput × mean latency (Little's law): connections busy on average. */
    readonly observedConcurrency: number
    /** The server's `max_connections`, when it could be read. */
    readonly serverMaxConnections: number | undefined
    /** How many app servers with this pool size the server admits. */
    readonly appServersAllowed: number | undefined
  }
}

interface Bucket {
  second: number
  attempts: number
  timeouts: number
  statements: number
  totalMillis: number
}

/**
 * The advisor's sliding window: per-second buckets over `windowSeconds`.
 *
 * @since 0.1.0
 */
export class Window {
  private readonly buckets: Array<Bucket>

  constructor(readonly windowSeconds = 60) {
    this.buckets = Array.from({ length: windowSeconds }, () => ({
      second: -1,
      attempts: 0,
      timeouts: 0,
      statements: 0,
      totalMillis: 0
    }))
  }

  private bucket(now: number): Bucket {
    const second = Math.floor(now / 1000)
    const b = this.buckets[second % this.windowSeconds]!
    if (b.second !== second) {
      b.second = second
      b.attempts = 0
      b.timeouts = 0
      b.statements = 0
      b.totalMillis = 0
    }
    return b
  }

  /** A statement ran (or timed out); `millis` is its duration. */
  statement(millis: number, timedOut: boolean, now = Date.now()): void {
    const b = this.bucket(now)
    b.attempts++
    b.statements++
    b.totalMillis += millis
    if (timedOut) b.timeouts++
  }

  /** An acquisition failed; a timeout counts toward the rate. */
  acquireFailed(timedOut: boolean, now = Date.now()): void {
    const b = this.bucket(now)
    b.attempts++
    if (timedOut) b.timeouts++
  }

  /** The totals of the window. */
  totals(now = Date.now()): { attempts: number; timeouts: number; statements: number; totalMillis: number; seconds: number } {
    const current = Math.floor(now / 1000)
    let attempts = 0
    let timeouts = 0
    let statements = 0
    let totalMillis = 0
    let oldest = current
    for (const b of this.buckets) {
      if (b.second < 0 || current - b.second >= this.windowSeconds) continue
      attempts += b.attempts
      timeouts += b.timeouts
      statements += b.statements
      totalMillis += b.totalMillis
      oldest = Math.min(oldest, b.second)
    }
    // a partly filled window spans only the seconds seen so far
    const seconds = Math.max(1, Math.min(this.windowSeconds, current - oldest + 1))
    return { attempts, timeouts, statements, totalMillis, seconds }
  }

  /** The report, with the server's `max_connections` if known. */
  report(poolMax: number, serverMaxConnections: number | undefined, now = Date.now()): Report {
    const t = this.totals(now)
    const timeoutRate = t.attempts === 0 ? 0 : t.timeouts / t.attempts
    const meanQueryMillis = t.statements === 0 ? 0 : t.totalMillis / t.statements
    const observedQueriesPerSecond = t.statements / t.seconds
    return {
      ...verdict(timeoutRate),
      timeoutRate,
      attempts: t.attempts,
      timeouts: t.timeouts,
      windowSeconds: this.windowSeconds,
      capacity: {
        poolMax,
        meanQueryMillis,
        queriesPerSecondCapacity: meanQueryMillis === 0 ? Infinity : poolMax / (meanQueryMillis / 1000),
        observedQueriesPerSecond,
        observedConcurrency: observedQueriesPerSecond * (meanQueryMillis / 1000),
        serverMaxConnections,
        appServersAllowed: serverMaxConnections === undefined ? undefined : Math.floor(serverMaxConnections / poolMax)
      }
    }
  }
}

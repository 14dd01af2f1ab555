import { describe, expect, it } from "@effect/vitest"
import { Db, Metrics } from "@effect-dal/core"
import { PgDatabase } from "@effect-dal/pg"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Metric from "effect/Metric"
import * as MetricLabel from "effect/MetricLabel"
import * as Tracer from "effect/Tracer"
import { PG_URL, unique } from "./helpers.js"

describe("metrics and advice: PostgreSQL", () => {
  it.live("after a known workload the metrics hold exact counts", () => {
    const alias = unique("metrics")
    // the OpenTelemetry attributes every metric carries
    const labels = [
      MetricLabel.make("db.client.connection.pool.name", alias),
      MetricLabel.make("db.system.name", "postgresql"),
      MetricLabel.make("db.namespace", "test"),
      MetricLabel.make("deployment.environment.name", "test")
    ]
    const value = <In, Out>(metric: Metric.Metric<any, In, Out>, extra: Record<string, string> = {}) =>
      Metric.value(Metric.taggedWithLabels(metric, [...labels, ...Object.entries(extra).map(([k, v]) => MetricLabel.make(k, v))]))
    return Effect.gen(function*() {
      const db = yield* Db
      expect(db.metricLabels).toEqual(labels)
      for (let i = 0; i < 5; i++) yield* Db.execute("SELECT 1")
      yield* Effect.flip(Db.execute("SELEC 1"))
      yield* Effect.flip(Db.execute("SELEC 2"))
      yield* Effect.flip(Db.execute("SELECT pg_sleep(1)", [], { timeout: "50 millis" }))
      yield* Db.execute("SELECT pg_sleep(0.12)")
      // hold the only connection, so that one caller times out waiting for it
      const hold = yield* Deferred.make<void>()
      const holder = yield* Effect.fork(Effect.scoped(Effect.zipRight(Db.transaction, Deferred.await(hold))))
      yield* Effect.sleep(50)
      yield* Effect.flip(Db.execute("SELECT 1"))
      yield* Deferred.succeed(hold, undefined)
      yield* Fiber.join(holder)
      yield* db.refreshMetrics

      const m = Metrics.metrics
      // 9 statements: 6 succeeded, 2 syntax errors, 1 statement timeout; the held transaction sent nothing
      // (its BEGIN waits for a first statement that never came, so there is no COMMIT either)
      expect((yield* value(m.operationDuration)).count).toBe(6)
      expect((yield* value(m.operationDuration, { "error.type": "syntax" })).count).toBe(2)
      expect((yield* value(m.operationDuration, { "error.type": "statementTimeout" })).count).toBe(1)
      const slowest = yield* value(m.operationDuration)
      expect(slowest.max).toBeGreaterThan(0.1) // seconds: pg_sleep(0.12)
      expect(slowest.max).toBeLessThan(1)
      expect((yield* value(m.errors, { category: "syntax" })).count).toBe(2)
      expect((yield* value(m.errors, { category: "statementTimeout" })).count).toBe(1)
      expect((yield* value(m.errors, { category: "poolTimeout" })).count).toBe(1)
      expect((yield* value(m.timeouts, { kind: "statement" })).count).toBe(1)
      expect((yield* value(m.connectionTimeouts)).count).toBe(1)
      expect((yield* value(m.slowQueries)).count).toBe(1)
      expect((yield* value(m.waitTime)).count).toBe(10)
      expect((yield* value(m.useTime)).count).toBe(10)
      expect((yield* value(m.useTime)).max).toBeGreaterThanOrEqual(0.05) // the held transaction
      expect((yield* value(m.retries)).count).toBe(0)
      expect((yield* value(m.connectionsCreated)).count).toBeGreaterThanOrEqual(1)
      expect((yield* value(m.createTime)).count).toBe((yield* value(m.connectionsCreated)).count)
      expect((yield* value(m.connectionMax)).value).toBe(1)
      expect((yield* value(m.connectionIdleMin)).value).toBe(0)
      expect((yield* value(m.connectionCount, { "db.client.connection.state": "used" })).value).toBe(0)
      expect((yield* value(m.connectionCount, { "db.client.connection.state": "idle" })).value).toBe(1)
      expect((yield* value(m.pendingRequests)).value).toBe(0)
      expect((yield* value(m.circuitState)).value).toBe(0)

      const slow = db.slowQueries(5)
      expect(slow.length).toBe(1)
      expect(slow[0]).toMatchObject({ sql: "SELECT pg_sleep(0.12)", count: 1 })
      expect(slow[0]!.maxMillis).toBeGreaterThanOrEqual(100)

      const health = yield* Db.health
      expect(health.attempts).toBe(11) // 9 statements, the failed acquisition and its own SHOW max_connections
      expect(health.timeouts).toBe(2)
      expect(health.level).toBe(3) // 2 of 10 timed out: critical
      expect(health.capacity.poolMax).toBe(1)
      expect(health.capacity.serverMaxConnections).toBeGreaterThan(0)
      expect(health.capacity.appServersAllowed).toBe(health.capacity.serverMaxConnections)
    }).pipe(Effect.provide(PgDatabase.layer({
      url: PG_URL,
      alias,
      env: "test",
      slowQueryThreshold: "100 millis",
      pool: { min: 0, max: 1, acquireTimeout: "100 millis" }
    })))
  })
})

describe("query tagging: PostgreSQL", () => {
  it.live("declared tag keys label the statement metrics; tags reach span attributes when a tracer is installed", () => {
    const alias = unique("tags")
    const spans: Array<{ name: string; attributes: Map<string, unknown> }> = []
    const tracer = Tracer.make({
      span: (name, parent, context, links, startTime, kind) => {
        const record = { name, attributes: new Map<string, unknown>() }
        spans.push(record)
        const span: Tracer.Span = {
          _tag: "Span",
          name,
          spanId: `span${spans.length}`,
          traceId: "trace",
          parent,
          context,
          status: { _tag: "Started", startTime },
          attributes: record.attributes,
          links,
          sampled: true,
          kind,
          attribute: (key, value) => void record.attributes.set(key, value),
          event: () => {},
          end: () => {},
          addLinks: () => {}
        }
        return span
      },
      context: (f) => f()
    })
    return Effect.gen(function*() {
      const db = yield* Db
      const labels = (operation: string) => [...db.metricLabels, MetricLabel.make("operation", operation)]
      yield* Db.withTags({ operation: "get_user" })(Db.execute("SELECT 1"))
      yield* Db.execute("SELECT 2", [], { tags: { operation: "get_user" } })
      yield* Db.execute("SELECT 3")
      const tagged = yield* Metric.value(Metric.taggedWithLabels(Metrics.metrics.operationDuration, labels("get_user")))
      const untagged = yield* Metric.value(Metric.taggedWithLabels(Metrics.metrics.operationDuration, labels("none")))
      expect(tagged.count).toBe(2)
      expect(untagged.count).toBe(1)
      // with a tracer of our own installed, statements get spans with db.* attributes and the tags
      yield* Db.withTags({ operation: "traced" })(Db.execute("SELECT 4")).pipe(Effect.withTracer(tracer))
      const span = spans.find((s) => s.name === "db.query")
      expect(span).toBeDefined()
      expect(span!.attributes.get("db.system.name")).toBe("postgresql")
      expect(span!.attributes.get("db.query.text")).toBe("SELECT 4")
      expect(span!.attributes.get("db.tag.operation")).toBe("traced")
    }).pipe(Effect.provide(PgDatabase.layer({ url: PG_URL, alias, metricTagKeys: ["operation"] })))
  })
})

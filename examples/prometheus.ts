/**
 * Serves effect-dal's metrics in the Prometheus text format, through
 * `@effect/opentelemetry` and the OpenTelemetry Prometheus exporter.
 *
 *   npx tsx examples/prometheus.ts     then: curl localhost:9464/metrics
 *
 * Runs a small workload on the embedded PGlite (or `DATABASE_URL`) so there
 * is something to see; `METRICS_PORT` and `RUN_SECONDS` change the defaults.
 */
import { Db } from "@effect-dal/core"
import { NodeSdk } from "@effect/opentelemetry"
import { PrometheusExporter } from "@opentelemetry/exporter-prometheus"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { DatabaseLive } from "./DatabaseLive.js"

const port = Number(process.env["METRICS_PORT"] ?? 9464)
const seconds = Number(process.env["RUN_SECONDS"] ?? 30)

const MetricsLive = NodeSdk.layer(() => ({
  resource: { serviceName: "effect-dal-example" },
  metricReader: new PrometheusExporter({ port })
}))

const program = Effect.gen(function*() {
  yield* Db.execute("CREATE TABLE IF NOT EXISTS [prom_items] (id int PRIMARY KEY, name varchar(50))")
  yield* Console.log(`metrics at http://localhost:${port}/metrics for ${seconds} s`)
  const deadline = Date.now() + seconds * 1000
  let i = 0
  while (Date.now() < deadline) {
    yield* Db.withTags({ operation: "upsert_item" })(
      Db.execute("DELETE FROM [prom_items] WHERE id = ?", [i % 100]).pipe(
        Effect.zipRight(Db.execute("INSERT INTO [prom_items] (id, name) VALUES (?, ?)", [i % 100, `item ${i}`]))
      )
    )
    yield* Db.execute("SELECT name FROM [prom_items] WHERE id = ?", [i % 100])
    i++
    yield* Effect.sleep(20)
  }
  yield* Db.execute("DROP TABLE [prom_items]")
})

Effect.runPromise(program.pipe(Effect.provide(Layer.merge(DatabaseLive({ alias: "prometheus_example" }), MetricsLive))))
  .catch((error) => {
    console.error(error)
    process.exit(1)
  })

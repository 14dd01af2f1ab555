import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"

const root = fileURLToPath(new URL("../..", import.meta.url))

describe("examples/prometheus.ts", () => {
  it("serves effect-dal's metrics in the Prometheus text format", async () => {
    const port = 19_464 + (process.pid % 1000)
    const env: Record<string, string | undefined> = { ...process.env, METRICS_PORT: String(port), RUN_SECONDS: "20" }
    delete env["DATABASE_URL"]
    const child = spawn("npx", ["tsx", "examples/prometheus.ts"], { cwd: root, env, stdio: ["ignore", "pipe", "inherit"] })
    try {
      await new Promise<void>((resolve, reject) => {
        child.stdout.on("data", (chunk: Buffer) => {
          if (chunk.toString().includes("metrics at")) resolve()
        })
        child.on("exit", (code) => reject(new Error(`example exited early (${code})`)))
      })
      let body = ""
      for (let attempt = 0; attempt < 40 && !body.includes("db_client_operation_duration"); attempt++) {
        await new Promise((r) => setTimeout(r, 500))
        body = await fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text()).catch(() => "")
      }
      // the OpenTelemetry database client metrics, and ours under dal_
      for (
        const name of [
          "db_client_operation_duration_bucket",
          "db_client_connection_count",
          "db_client_connection_max",
          "db_client_connection_pending_requests",
          "db_client_connection_create_time_bucket",
          "db_client_connection_wait_time_bucket",
          "db_client_connection_use_time_bucket",
          "dal_pool_utilization",
          "dal_circuit_state",
          "dal_connections_created"
        ]
      ) {
        expect(body, name).toContain(name)
      }
      expect(body).toContain('db_client_connection_pool_name="prometheus_example"')
      expect(body).toContain('db_client_connection_state="used"')
      expect(body).toContain('db_system_name="postgresql"')
    } finally {
      child.kill("SIGTERM")
    }
  })
})

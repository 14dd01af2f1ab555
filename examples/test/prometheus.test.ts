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
      for (let attempt = 0; attempt < 40 && !body.includes("dal_query_duration_ms"); attempt++) {
        await new Promise((r) => setTimeout(r, 500))
        body = await fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text()).catch(() => "")
      }
      for (
        const name of [
          "dal_query_duration_ms",
          "dal_connection_acquire_duration_ms",
          "dal_connection_acquisitions_total",
          "dal_pool_size",
          "dal_pool_utilization",
          "dal_circuit_state"
        ]
      ) {
        expect(body, name).toContain(name)
      }
      expect(body).toContain('alias="prometheus_example"')
    } finally {
      child.kill("SIGTERM")
    }
  })
})

import { execFile } from "node:child_process"
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"
import { PgCluster } from "@effect-dal/testkit"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import * as Pg from "pg"
import { afterAll, describe, expect, it } from "vitest"

const run = promisify(execFile)
const root = fileURLToPath(new URL("../../..", import.meta.url))
const dir = mkdtempSync(join(tmpdir(), "dal-capacity-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

const capacity = async (args: ReadonlyArray<string>, report: string) => {
  const env = { ...process.env }
  delete env["DATABASE_URL"]
  try {
    const { stdout } = await run("npx", ["tsx", "packages/cli/src/bin.ts", ...args, "--report", report], {
      cwd: root,
      timeout: 120_000,
      env
    })
    return stdout
  } catch (error) {
    // what the command said, so that a failure can be read from the test's report
    const e = error as { message: string; stdout?: string; stderr?: string }
    throw new Error(`${e.message}\n--- stdout ---\n${e.stdout?.slice(-2_000) ?? ""}\n--- stderr ---\n${e.stderr?.slice(-4_000) ?? ""}`)
  }
}

const chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].find(existsSync)

describe("npm start: the capacity check", () => {
  it("a normal workload on the embedded default gets the 'normal load' verdict and a report with its charts", async () => {
    const report = join(dir, "normal.html")
    const out = await capacity(["--users", "4", "--duration", "3", "--slow-ratio", "0"], report)
    expect(out).toContain("capacity check on pglite: 4 users, 3 s, pool 1 (one embedded session)")
    expect(out).not.toContain("max_connections")
    expect(out).toContain("an embedded database serves one process")
    expect(out).toContain("Verdict: NORMAL LOAD: no action needed")
    expect(out).toContain("> < 0.1%")
    expect(out).toMatch(/Report: .*normal\.html/)
    const html = readFileSync(report, "utf8")
    for (const id of ["chart-utilization", "chart-acquire", "chart-timeouts", "verdict", "advisor"]) {
      expect(html).toContain(`id="${id}"`)
    }
    // the report renders in a real browser, charts included
    expect(chromium, "Debian's chromium is installed (npm test's pretest brings it)").toBeDefined()
    const { stdout: dom } = await run(chromium!, [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--no-first-run",
      `--user-data-dir=${join(dir, "profile")}`,
      "--dump-dom",
      `file://${report}`
    ], { timeout: 60_000 })
    expect((dom.match(/<svg[^>]*class="chart"/g) ?? []).length).toBe(3)
    expect(dom).toContain("normal load")
  })

  it("a workload built to time out gets 'critical pressure: scale horizontally'", async () => {
    const report = join(dir, "critical.html")
    const out = await capacity(
      ["--users", "30", "--duration", "4", "--pool-max", "2", "--acquire-timeout", "20", "--slow-ratio", "0.5", "--ramp", "--url", "postgres://postgres@127.0.0.1:5432/test"],
      report
    )
    expect(out).toContain("capacity check on pg: 30 users, 4 s, pool max 2")
    expect(out).toMatch(/server max_connections: \d+ → \d+ app servers/)
    expect(out).toContain("Verdict: CRITICAL PRESSURE: scale horizontally")
    const rate = Number(/timeout rate ([\d.]+)%/.exec(out)![1])
    expect(rate).toBeGreaterThan(5)
    expect(readFileSync(report, "utf8")).toContain("dashed: virtual users")
  })

  it("with --replica-url, reads are routed over the replicas and each node's utilization and lag are shown", async () => {
    const port = 24_000 + (process.pid % 30) * 3
    const scope = Effect.runSync(Scope.make())
    try {
      const cluster = await Effect.runPromise(Scope.extend(PgCluster.makeReplicated(port, [port + 1, port + 2]), scope))
      const report = join(dir, "replicas.html")
      const out = await capacity(
        ["--users", "6", "--duration", "3", "--slow-ratio", "0", "--url", cluster.primary.url,
          ...cluster.replicas.flatMap((r) => ["--replica-url", r.url])],
        report
      )
      expect(out).toContain("capacity check on pg: 6 users, 3 s, pool max 5, 2 replica(s)")
      expect(out).toMatch(/\| primary \d+%, replica \d+% lag \d+ ms, replica \d+% lag \d+ ms/) // the live status line
      const nodes = out.slice(out.indexOf("Nodes:")).split("\n").filter((l) => l.includes(" | replica | "))
      expect(nodes).toHaveLength(2)
      for (const line of nodes) expect(Number(line.split(" | ")[6])).toBeGreaterThan(0) // reads routed to it
      const html = readFileSync(report, "utf8")
      expect(html).toContain('id="nodes"')
      expect(html).toContain('id="replica-lag"')
      // a multi-host URL: the roles are discovered, the standbys take the reads
      const hosts = [cluster.primary, ...cluster.replicas].map((s) => `127.0.0.1:${s.port}`).join(",")
      const discovered = await capacity(
        ["--users", "4", "--duration", "2", "--slow-ratio", "0", "--url",
          `postgres://postgres@${hosts}/postgres?target_session_attrs=read-write`],
        join(dir, "hosts.html")
      )
      const rows = discovered.slice(discovered.indexOf("Nodes:")).split("\n")
      expect(rows.find((l) => l.includes(" | primary | "))).toContain(`(127.0.0.1:${cluster.primary.port})`)
      const standbys = rows.filter((l) => l.includes(" | replica | ") && l.includes(" | yes | "))
      expect(standbys).toHaveLength(2) // the primary's own replica node is no standby: not usable
      for (const line of standbys) expect(Number(line.split(" | ")[6])).toBeGreaterThan(0)
    } finally {
      await Effect.runPromise(Scope.close(scope, Exit.void))
    }
  }, 120_000)

  it("with --shard-url (repeatable), the workload is sharded by account id and each shard's share is shown", async () => {
    const databases = [1, 2, 3].map((i) => `capacity_shard_${process.pid}_${i}`)
    const admin = new Pg.Client({ connectionString: "postgres://postgres@127.0.0.1:5432/postgres" })
    await admin.connect()
    try {
      for (const d of databases) await admin.query(`CREATE DATABASE "${d}"`)
      const out = await capacity(
        ["--users", "6", "--duration", "3", "--slow-ratio", "0",
          ...databases.flatMap((d) => ["--shard-url", `postgres://postgres@127.0.0.1:5432/${d}`])],
        join(dir, "shards.html")
      )
      expect(out).toContain("capacity check on pg: 6 users, 3 s, pool max 5, 3 shard(s)")
      expect(out).toMatch(/\| s1 \d+%, s2 \d+%, s3 \d+%/) // the live status line
      expect(out).toContain("Verdict: NORMAL LOAD")
      const rows = out.slice(out.indexOf("Nodes:")).split("\n").filter((l) => /^ {2}s\d \| /.test(l))
      expect(rows.map((l) => l.split(" | ")[0]!.trim())).toEqual(["s1", "s2", "s3"])
      // every shard took a share of the operations: the accounts are spread over them by id
      const routed = rows.map((l) => Number(l.split(" | ")[6]))
      for (const n of routed) expect(n).toBeGreaterThan(0)
      const operations = Number(/operations: (\d+)/.exec(out)![1])
      expect(routed.reduce((a, b) => a + b, 0)).toBe(operations)
    } finally {
      for (const d of databases) await admin.query(`DROP DATABASE IF EXISTS "${d}" WITH (FORCE)`)
      await admin.end()
    }
  }, 120_000)
})

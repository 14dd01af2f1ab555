/**
 * The capacity check's report: one self-contained HTML file (inline SVG, no
 * scripts, no network), and the text the terminal shows at the end.
 *
 * @since 0.1.0
 */
import { ScalingAdvisor } from "@effect-dal/core"
import type { Result, Sample } from "./CapacityCheck.js"

const escape = (s: string) => s.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;" })[c]!)

const W = 640
const H = 220
const PAD = { left: 56, right: 16, top: 16, bottom: 36 }

/** A line chart of `series` over the run's seconds; `users` is drawn dashed on a second axis. */
const chart = (
  id: string,
  title: string,
  unit: string,
  samples: ReadonlyArray<Sample>,
  y: (s: Sample) => number,
  withUsers: boolean
): string => {
  const xs = samples.map((s) => s.second)
  const ys = samples.map(y)
  const xMax = Math.max(1, ...xs)
  const yMax = Math.max(1e-9, ...ys) * 1.1
  const uMax = Math.max(1, ...samples.map((s) => s.users))
  const px = (x: number) => PAD.left + (x / xMax) * (W - PAD.left - PAD.right)
  const py = (v: number, max: number) => H - PAD.bottom - (v / max) * (H - PAD.top - PAD.bottom)
  const line = samples.map((s, i) => `${i === 0 ? "M" : "L"}${px(s.second).toFixed(1)},${py(ys[i]!, yMax).toFixed(1)}`).join(" ")
  const users = samples.map((s, i) => `${i === 0 ? "M" : "L"}${px(s.second).toFixed(1)},${py(s.users, uMax).toFixed(1)}`).join(" ")
  const ticks = [0, 0.5, 1].map((f) =>
    `<text x="${PAD.left - 6}" y="${py(yMax * f, yMax) + 4}" text-anchor="end">${(yMax * f).toFixed(yMax < 10 ? 2 : 0)}</text>`
  ).join("")
  return `<figure>
<figcaption>${escape(title)}</figcaption>
<svg id="${id}" class="chart" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${escape(title)}">
<rect x="${PAD.left}" y="${PAD.top}" width="${W - PAD.left - PAD.right}" height="${H - PAD.top - PAD.bottom}" class="frame"/>
${ticks}
<text x="${W / 2}" y="${H - 6}" text-anchor="middle">seconds (${escape(unit)})</text>
<path d="${line}" class="series"/>
${withUsers ? `<path d="${users}" class="users"/><text x="${W - PAD.right}" y="${PAD.top + 12}" text-anchor="end" class="legend">dashed: virtual users (max ${uMax})</text>` : ""}
</svg>
</figure>`
}

/**
 * The HTML report.
 *
 * @since 0.1.0
 */
export const html = (result: Result): string => {
  const a = result.advice
  const ramp = result.options.ramp
  const rows = ScalingAdvisor.table.map((row) =>
    `<tr class="${row.level === a.level ? "current" : ""}"><td>${row.range}</td><td>${row.meaning}</td><td>${row.advice}</td></tr>`
  ).join("")
  const metrics = result.metrics.map(([k, v]) => `<tr><td>${escape(k)}</td><td>${escape(v)}</td></tr>`).join("")
  const failures = Object.entries(result.failures).map(([k, v]) => `${escape(k)}: ${v}`).join(", ") || "none"
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>effect-dal capacity report</title>
<style>
body{font-family:system-ui,sans-serif;margin:2rem;max-width:60rem;color:#1d2330}
h1{font-size:1.5rem}.verdict{font-size:1.25rem;padding:.75rem 1rem;border-radius:.5rem;background:#eef3ff}
.level-2,.level-3{background:#fff1ef}table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccd;padding:.3rem .6rem;text-align:left}
tr.current{background:#ffe9a8;font-weight:600}figure{margin:1.5rem 0}figcaption{font-weight:600;margin-bottom:.3rem}
.chart text{font-size:11px;fill:#555}.frame{fill:#fafbff;stroke:#ccd}.series{fill:none;stroke:#2f6fdb;stroke-width:2}
.users{fill:none;stroke:#999;stroke-width:1.5;stroke-dasharray:5 4}.legend{fill:#777}
</style></head><body>
<h1>effect-dal capacity report</h1>
<p>${result.engine} · ${result.options.users} virtual users${ramp ? " (ramping up)" : ""} · ${result.options.durationSeconds} s · ${result.engine === "pglite" ? "pool 1 (one embedded session)" : `pool max ${result.options.poolMax}`} · ${result.operations} operations · failures: ${failures}</p>
<p class="verdict level-${a.level}" id="verdict"><strong>${a.meaning}</strong>: ${a.advice} (timeout rate ${(a.timeoutRate * 100).toFixed(2)}% over ${a.attempts} attempts)</p>
<table id="advisor"><thead><tr><th>timeout rate</th><th>meaning</th><th>advice</th></tr></thead><tbody>${rows}</tbody></table>
<h2>Capacity</h2>
<table><tbody>
<tr><td>mean statement time</td><td>${a.capacity.meanQueryMillis.toFixed(2)} ms</td></tr>
<tr><td>capacity of this app server (pool max ÷ mean time)</td><td>${Number.isFinite(a.capacity.queriesPerSecondCapacity) ? Math.round(a.capacity.queriesPerSecondCapacity) : "–"} queries/s</td></tr>
<tr><td>observed</td><td>${Math.round(a.capacity.observedQueriesPerSecond)} queries/s, ${a.capacity.observedConcurrency.toFixed(2)} connections busy on average</td></tr>
<tr><td>${scaleOut(result)[0]}</td><td>${scaleOut(result)[1]}</td></tr>
</tbody></table>
${nodesHtml(result)}
${chart("chart-utilization", "Pool utilization (active / max)", "ratio", result.samples, (s) => s.utilization, ramp)}
${chart("chart-acquire", "Acquire latency, p99 (ms)", "ms", result.samples, (s) => s.acquireP99Millis, ramp)}
${chart("chart-timeouts", "Timeout rate (%)", "%", result.samples, (s) => s.timeoutRate * 100, ramp)}
<h2>Metrics</h2>
<table id="metrics"><tbody>${metrics}</tbody></table>
</body></html>
`
}

/** A row per node, when reads were routed over replicas. */
const nodeRows = (result: Result): ReadonlyArray<ReadonlyArray<string>> =>
  result.nodes.map((n) => [
    n.host === undefined ? n.alias : `${n.alias} (${n.host})`,
    n.role,
    `${Math.round(n.utilization * 100)}%`,
    n.lagMillis === undefined ? "–" : `${Math.round(n.lagMillis)} ms`,
    n.lagBytes === undefined ? "–" : `${n.lagBytes} B`,
    n.usable ? "yes" : "no",
    String(n.reads),
    String(n.fallbacks)
  ])

const NODE_COLUMNS = ["node", "role", "utilization", "lag", "lag (bytes)", "usable", "reads", "fallbacks"]

const nodesHtml = (result: Result): string => {
  if (result.nodes.length === 0) return ""
  const lagChart = result.nodes.filter((n) => n.role === "replica").map((n) =>
    `${escape(n.alias)}: ${result.samples.map((s) => Math.round(s.nodes.find((x) => x.alias === n.alias)?.lagMillis ?? 0)).join(" ")} ms`
  ).join("<br>")
  return `<h2>Nodes</h2>
<table id="nodes"><thead><tr>${NODE_COLUMNS.map((c) => `<th>${c}</th>`).join("")}</tr></thead><tbody>${
    nodeRows(result).map((r) => `<tr>${r.map((c) => `<td>${escape(c)}</td>`).join("")}</tr>`).join("")
  }</tbody></table>
<p id="replica-lag">Replica lag per sample: ${lagChart}</p>`
}

/** How far the database lets the app scale out: server arithmetic, or what an embedded database is. */
const scaleOut = (result: Result): readonly [string, string] => {
  const a = result.advice
  return result.engine === "pglite"
    ? ["scaling out", "an embedded database serves one process through one session; to scale out, run on a PostgreSQL server (--url)"]
    : ["server max_connections", `${a.capacity.serverMaxConnections ?? "unknown"} → ${a.capacity.appServersAllowed ?? "?"} app servers at this pool size`]
}

/**
 * The verdict and summary, for the terminal.
 *
 * @since 0.1.0
 */
export const text = (result: Result): string => {
  const a = result.advice
  const lines = [
    "",
    `Verdict: ${a.meaning.toUpperCase()}: ${a.advice} (timeout rate ${(a.timeoutRate * 100).toFixed(2)}% of ${a.attempts} attempts)`,
    "",
    "  timeout rate   meaning             advice",
    ...ScalingAdvisor.table.map((row) =>
      `${row.level === a.level ? "> " : "  "}${row.range.padEnd(13)}  ${row.meaning.padEnd(18)}  ${row.advice}`
    ),
    "",
    `Capacity: ${Number.isFinite(a.capacity.queriesPerSecondCapacity) ? Math.round(a.capacity.queriesPerSecondCapacity) : "–"} queries/s per app server (pool ${a.capacity.poolMax} ÷ ${a.capacity.meanQueryMillis.toFixed(2)} ms); observed ${Math.round(a.capacity.observedQueriesPerSecond)} queries/s at ${a.capacity.observedConcurrency.toFixed(2)} busy connections; ${scaleOut(result).join(": ")}`,
    ...(result.nodes.length === 0 ? [] : [
      "",
      "Nodes:",
      `  ${NODE_COLUMNS.join(" | ")}`,
      ...nodeRows(result).map((r) => `  ${r.join(" | ")}`)
    ]),
    "",
    "Metrics:",
    ...result.metrics.map(([k, v]) => `  ${k}: ${v}`),
    `  operations: ${result.operations}; failures: ${Object.entries(result.failures).map(([k, v]) => `${k} ${v}`).join(", ") || "none"}`
  ]
  return lines.join("\n")
}

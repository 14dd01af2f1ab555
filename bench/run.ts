/**
 * `npm run bench`: every workload against every system, alternating them in
 * one run (see `turnOrder`) so that the machine's drift hits all alike; the
 * medians of the rounds are compared. Each engine runs in a Node process of
 * its own (see `main`). Writes bench/results/latest.{json,md}.
 *
 * Environment: BENCH_SECONDS (per system and round, default 1), BENCH_ROUNDS
 * (default 20), BENCH_BATCHES (per system and round of a batch workload,
 * default 3), BENCH_QUERIES (the memory run, default 1,000,000).
 *
 * Many short rounds rather than a few long ones: a ratio pairs the two
 * systems' turns of one round, and the closer in time they are, the less of
 * the machine's drift it carries; the median of twenty such pairs moves
 * less than that of ten (two runs of 2026-11-30 with the same MariaDB
 * code, ten rounds each, put its transfer at 1.08× and 0.88× of raw).
 */
import { Db, Pool } from "@effect-dal/core"
import { connect } from "@effect-dal/promise"
import { Sharding } from "@effect-dal/routing"
import * as Effect from "effect/Effect"
import { execFileSync } from "node:child_process"
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { cpus, tmpdir, totalmem } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import type { Sample } from "./drive.js"
import { drive, randomId, randomTransfer } from "./drive.js"
import type { Engine, EventRow, Op, System } from "./systems.js"
import { ACCOUNTS, cacheMakers, cleanup, kyselyMakers, makers, PG_URL, POOL, prepare, promiseMakers, queueMakers, routingMakers, runCallers, settle, shardMakers } from "./systems.js"

const SECONDS = Number(process.env["BENCH_SECONDS"] ?? 1)
/** Untimed, after each turn's collection and before its timed run. */
const WARM_SECONDS = 0.25
const ROUNDS = Number(process.env["BENCH_ROUNDS"] ?? 20)
const MEMORY_QUERIES = Number(process.env["BENCH_QUERIES"] ?? 1_000_000)
/** Batches per system and round, for the batch workloads; the round's figure is their median. */
const BATCHES = Number(process.env["BENCH_BATCHES"] ?? 3)
/** For quick looks while optimizing: only workloads whose name contains this, only these engines. */
const ONLY = process.env["BENCH_ONLY"]
const ENGINES = (process.env["BENCH_ENGINES"] ?? "pg,mysql").split(",") as Array<Engine>

const median = (xs: ReadonlyArray<number>) => {
  const s = [...xs].sort((a, b) => a - b)
  const mid = Math.floor(s.length / 2)
  // of an even count, the mean of the middle two: the upper one alone would lean every ratio up
  return s.length === 0 ? NaN : s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2
}
const gc = (globalThis as { gc?: (options?: { readonly type: "minor" | "major" }) => void }).gc
/** A full collection (mark-compact). */
const collectGarbage = () => gc?.()
/**
 * A scavenge of the young generation only. Before a timed turn, a full
 * collection threw away optimized code, and every system then ran slower for
 * about a second while it was compiled again: on MariaDB transfers, in 250 ms
 * steps after the collection, raw mysql2 1,476 → 2,600/s and effect-dal
 * 1,280 → 2,448/s, flat from the start after a scavenge (a throwaway script,
 * 2026-11-30). The 0.25 s warm-up covered only the start of that climb, so
 * the timed second measured how fast each system recompiles: MariaDB
 * transfers 0.92× of raw, 12 rounds, against 1.05× with a 1.5 s warm-up.
 */
const collectYoung = () => gc?.({ type: "minor" })

/**
 * The order of `n` systems' turns in `round`: a Williams design, so that over
 * every `n` rounds (`2n` for an odd `n`) each system turns up in each place
 * once and follows each other system equally often. A plain rotation
 * (A B C, B C A, …) always puts B after A: whatever A leaves behind (a
 * server's state, the client's heap) then weighs on B alone.
 */
const turnOrder = (n: number, round: number): ReadonlyArray<number> => {
  // 0, 1, n-1, 2, n-2, …
  const base = Array.from({ length: n }, (_, j) => (j % 2 === 1 ? (j + 1) / 2 : (n - j / 2) % n))
  const row = round % (n % 2 === 0 ? n : 2 * n)
  const order = base.map((b) => (b + row) % n)
  return row < n ? order : order.reverse()
}

const runOnce = async (system: System, op: Op): Promise<void> => {
  if (op._tag === "promise") await op.run()
  else await system.runtime!.runPromise(op.run)
}

interface Workload {
  readonly name: string
  readonly concurrency: number
  readonly next: (system: System) => Op
  /** Rows per op, for the batch workloads. */
  readonly rowsPerOp?: number
  /** Batches per system and round, where not BENCH_BATCHES. */
  readonly batches?: number
  readonly systems?: (system: System) => boolean
  /** Run only by a side comparison that names it. */
  readonly side?: boolean
}

const eventRows = (n: number): ReadonlyArray<EventRow> => Array.from({ length: n }, (_, i) => ({ account_id: 1 + (i % ACCOUNTS), payload: `batch ${i}` }))
const batchRows = eventRows(10_000)
const bigBatchRows = eventRows(100_000)

const workloads: ReadonlyArray<Workload> = [
  { name: "point select by primary key", concurrency: 20, next: (s) => s.workloads.pointSelect(randomId()) },
  { name: "single-row insert", concurrency: 20, next: (s) => s.workloads.insert(randomId()) },
  {
    name: "transfer transaction (two updates)",
    concurrency: 20,
    next: randomTransfer
  },
  {
    name: "batch insert of 10k rows",
    concurrency: 1,
    rowsPerOp: batchRows.length,
    next: (s) => s.workloads.batchInsert(batchRows)
  },
  {
    // past the COPY threshold; against the fastest raw way, two arrays through unnest (the stock clients
    // would need 200,000 parameters in one statement)
    name: "batch insert of 100k rows",
    concurrency: 1,
    rowsPerOp: bigBatchRows.length,
    next: (s) => s.workloads.batchInsert(bigBatchRows),
    systems: (s) => s.name === "pg.Pool (raw)" || s.name === "effect-dal pg"
  },
  {
    name: "loop of 10k single inserts",
    concurrency: 1,
    rowsPerOp: batchRows.length,
    next: (s) => s.workloads.loopInsert!(batchRows),
    // each takes seconds: one per round
    batches: 1,
    systems: (s) => s.workloads.loopInsert !== undefined
  },
  { name: "overload: 200 callers, pool 20, 5 ms queries", concurrency: 200, next: (s) => s.workloads.sleep5ms() },
  {
    name: "top 100 by balance (fan-out over the shards)",
    concurrency: 20,
    next: (s) => s.workloads.top100!(),
    systems: (s) => s.workloads.top100 !== undefined,
    side: true
  },
  {
    name: "aggregate over 2,000 rows (100 distinct)",
    concurrency: 20,
    // 100 distinct ranges: a cache holds them all after the warm-up
    next: (s) => s.workloads.aggregate!(1 + 50 * Math.floor(Math.random() * 100)),
    systems: (s) => s.workloads.aggregate !== undefined,
    side: true
  }
]

interface Result {
  readonly engine: Engine
  readonly workload: string
  readonly system: string
  readonly kind: System["kind"]
  readonly rounds: ReadonlyArray<Sample>
  readonly opsMedian: number
  readonly p50Median: number
  readonly p99Median: number
  readonly rowsPerSecond?: number
  readonly errors: number
}

const benchEngine = async (
  engine: Engine,
  systemMakers: ReadonlyArray<() => Promise<System>> = makers[engine],
  selected: ReadonlyArray<Workload> = workloads.filter((w) => !w.side && (ONLY === undefined || w.name.includes(ONLY)))
): Promise<Array<Result>> => {
  const results: Array<Result> = []
  if (selected.length === 0) return results
  const systems: Array<System> = []
  for (const make of systemMakers) systems.push(await make())
  try {
    for (const workload of selected) {
      const eligible = systems.filter((s) => workload.systems?.(s) ?? true)
      const samples = new Map<System, Array<Sample>>(eligible.map((s) => [s, []]))
      // warm up: prepare statements, fill the pools
      for (const s of eligible) await drive(s, () => workload.next(s), workload.concurrency, Math.min(0.5, SECONDS))
      for (let round = 0; round < ROUNDS; round++) {
        // each turn starts on a scavenged heap, so that none pays for the young garbage of the one before
        for (const k of turnOrder(eligible.length, round)) {
          const s = eligible[k]!
          // every turn on the same tables: the inserts' one empty, the transfers' vacuumed
          await settle(engine)
          if (workload.rowsPerOp !== undefined) {
            // once per turn, not before every batch: a full collection throws away optimized code
            // that holds closures which died in it, and the batch after it pays for compiling it
            // again (per 10k-row MariaDB batch, effect-dal's client CPU 9–19 ms without, 26–70 ms
            // with; raw mysql2's 6–14 and 10–24 ms). An application meets no full collection every 30 ms
            collectGarbage()
            const times: Array<number> = []
            for (let b = 0; b < (workload.batches ?? BATCHES); b++) {
              const start = performance.now()
              await runOnce(s, workload.next(s))
              times.push(performance.now() - start)
            }
            const ms = median(times)
            samples.get(s)!.push({ ops: 1000 / ms, p50: ms, p99: Math.max(...times), errors: 0 })
          } else {
            collectYoung()
            // untimed: the pools' connections back in use, the first callers' code on its optimized path
            await drive(s, () => workload.next(s), workload.concurrency, WARM_SECONDS)
            samples.get(s)!.push(await drive(s, () => workload.next(s), workload.concurrency, SECONDS))
          }
        }
        process.stdout.write(".")
      }
      for (const s of eligible) {
        const rounds = samples.get(s)!
        const opsMedian = median(rounds.map((r) => r.ops))
        results.push({
          engine,
          workload: workload.name,
          system: s.name,
          kind: s.kind,
          rounds,
          opsMedian,
          p50Median: median(rounds.map((r) => r.p50)),
          p99Median: median(rounds.map((r) => r.p99)),
          ...(workload.rowsPerOp === undefined ? {} : { rowsPerSecond: opsMedian * workload.rowsPerOp }),
          errors: rounds.reduce((n, r) => n + r.errors, 0)
        })
      }
      console.log(` ${engine}: ${workload.name}`)
    }
  } finally {
    for (const s of systems) await s.close()
  }
  return results
}

/** The pool alone, on an in-memory fake driver: acquire + release per cycle. */
const poolMicro = async (): Promise<{ medianMicros: number; rounds: Array<number> }> => {
  const cycles = 200_000
  const rounds: Array<number> = []
  await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const pool = yield* Effect.acquireRelease(
      Pool.make({
        alias: "micro",
        config: Pool.resolveOptions({ min: 20, max: 20, leakDetectionThreshold: 0 }),
        hooks: {
          create: Effect.succeed({}),
          destroy: () => Effect.void,
          validate: () => Effect.void,
          isBroken: () => false,
          recycle: () => undefined
        }
      }),
      (p) => p.close
    )
    yield* Effect.sleep(20)
    const cycle = pool.withConnection(() => Effect.void)
    for (let r = 0; r < ROUNDS; r++) {
      const start = performance.now()
      for (let i = 0; i < cycles; i++) yield* cycle
      rounds.push(((performance.now() - start) * 1000) / cycles)
    }
  })))
  return { medianMicros: median(rounds), rounds }
}

/** What the memory run drives: 20 callers of `perCaller` point queries each, and the connections still borrowed. */
interface MemoryTarget {
  readonly name: string
  readonly run: (perCaller: number) => Promise<void>
  readonly borrowed: () => Promise<number>
  readonly close: () => Promise<void>
}

interface MemoryResult {
  readonly name: string
  readonly queries: number
  readonly rssGrowthMb: number
  readonly heapGrowthMb: number
  readonly leakedConnections: number
  readonly seconds: number
}

const POINT = "SELECT id, name, balance FROM [bench_accounts] WHERE id = ?"

/** An Effect system's own point select, 20 callers at a time. */
const effectTarget = (name: string, system: System, borrowed: () => Promise<number>): MemoryTarget => ({
  name,
  run: (perCaller) => runCallers(system.runtime!, perCaller, () => system.workloads.pointSelect(randomId())),
  borrowed,
  close: () => system.close()
})

/** effect-dal pg through its Effect API, through the shard router, and through the Promise API. */
const memoryTargets: ReadonlyArray<() => Promise<MemoryTarget>> = [
  async () => {
    const system = await makers.pg[makers.pg.length - 1]!()
    return effectTarget("effect-dal pg", system, async () => (await system.runtime!.runPromise(Db)).poolStats().active)
  },
  async () => {
    const system = await shardMakers[1]!()
    return effectTarget("effect-dal pg through the shard router (3 nodes)", system, async () => {
      const sharded = await (system.runtime!.runPromise(Sharding.Sharding) as Promise<Sharding.Sharded>)
      return Object.values(sharded.nodes).reduce((n, db) => n + db.poolStats().active, 0)
    })
  },
  async () => {
    const db = await connect({ url: PG_URL, alias: "bench_pg_memory_promise", pool: { min: POOL, max: POOL } })
    return {
      name: "effect-dal pg through the Promise API",
      run: async (perCaller) => {
        await Promise.all(Array.from({ length: 20 }, async () => {
          for (let i = 0; i < perCaller; i++) await db.execute(POINT, [randomId()])
        }))
      },
      borrowed: async () => db.poolStats().active,
      close: () => db.close()
    }
  }
]

/** 1M point queries through each target: memory growth and leaked connections. */
const memoryRun = async (make: () => Promise<MemoryTarget>): Promise<MemoryResult> => {
  const target = await make()
  try {
    const settle = async () => {
      collectGarbage()
      await new Promise((r) => setTimeout(r, 100))
      collectGarbage()
    }
    // warm up, then measure from a settled baseline
    await target.run(500)
    await settle()
    const rss0 = process.memoryUsage().rss
    const heap0 = process.memoryUsage().heapUsed
    const start = performance.now()
    const perCaller = Math.ceil(MEMORY_QUERIES / 20)
    await target.run(perCaller)
    const seconds = (performance.now() - start) / 1000
    await settle()
    return {
      name: target.name,
      queries: perCaller * 20,
      rssGrowthMb: (process.memoryUsage().rss - rss0) / 1024 / 1024,
      heapGrowthMb: (process.memoryUsage().heapUsed - heap0) / 1024 / 1024,
      leakedConnections: await target.borrowed(),
      seconds
    }
  } finally {
    await target.close()
  }
}

const fmt = (n: number, digits = 0) => Number.isFinite(n) ? n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits }) : "–"

/** The workloads the routing comparison runs. */
const ROUTED_WORKLOADS = ["point select by primary key", "transfer transaction (two updates)"]
/** The workloads the comparison without Effect runs. */
const PROMISE_WORKLOADS = ROUTED_WORKLOADS

/** A side comparison on PostgreSQL (`only`: the BENCH_ONLY value that runs it alone). */
const sideComparison = (systems: ReadonlyArray<() => Promise<System>>, names: ReadonlyArray<string>, only: string) =>
  benchEngine(
    "pg",
    systems,
    workloads.filter((w) => names.includes(w.name) && (ONLY === undefined || w.name.includes(ONLY) || ONLY === only))
  )

/**
 * A side comparison's table: every system against effect-dal pg's direct calls, workload by workload,
 * and, with `against`, the systems after it against that one as well.
 */
const sideTable = (lines: Array<string>, title: string, results: ReadonlyArray<Result>, against?: { readonly system: string; readonly label: string }) => {
  if (results.length === 0) return
  lines.push(`**${title}**`)
  lines.push("")
  lines.push(`| workload | system | ops/s | p50 ms | p99 ms | vs direct |${against === undefined ? "" : ` ${against.label} |`}`)
  lines.push(`|---|---|---:|---:|---:|---:|${against === undefined ? "" : "---:|"}`)
  for (const name of [...new Set(results.map((r) => r.workload))]) {
    const rows = results.filter((r) => r.workload === name)
    const direct = rows.find((r) => r.system === "effect-dal pg")
    const base = against === undefined ? undefined : rows.findIndex((r) => r.system === against.system)
    rows.forEach((r, i) => {
      const vsBase = base === undefined ? "" : ` ${base >= 0 && i > base ? ratioCell(r, rows[base]) : ""} |`
      lines.push(`| ${name} | ${r.system} | ${fmt(r.opsMedian)} | ${fmt(r.p50Median, 2)} | ${fmt(r.p99Median, 2)} | ${ratioCell(r, direct)} |${vsBase}`)
    })
  }
  lines.push("")
}

/**
 * `r` against `base`, both of one workload: the median of their per-round ratios. A round runs the
 * systems back to back, while the machine drifts between rounds (the same system's point selects
 * ranged over 8.5–13.4k/s across one run's rounds here), so pairing within rounds cancels what the
 * ratio of the medians keeps.
 */
const ratio = (r: Result, base: Result): number =>
  median(r.rounds.map((round, i) => round.ops / base.rounds[i]!.ops))

/** `ratio` as a table cell: `1.04×`, or empty without a base or against itself. */
const ratioCell = (r: Result, base: Result | undefined): string =>
  base === undefined || base === r ? "" : fmt(ratio(r, base), 2) + "×"

const markdown = (
  results: ReadonlyArray<Result>,
  routing: ReadonlyArray<Result>,
  withoutEffect: ReadonlyArray<Result>,
  sharding: ReadonlyArray<Result>,
  caching: ReadonlyArray<Result>,
  micro: Awaited<ReturnType<typeof poolMicro>>,
  memory: ReadonlyArray<MemoryResult>,
  meta: Record<string, unknown>
) => {
  const lines: Array<string> = []
  lines.push(`Measured ${meta["date"]} with \`npm run bench\` on ${meta["machine"]}; ${ROUNDS} alternating rounds of ${SECONDS} s per system (batch workloads: the median of ${BATCHES} batches per round), every turn on settled tables (see \`settle\`), pool ${POOL}. Medians of the rounds; a ratio is the median of the two systems' ratios within each round.`)
  lines.push("")
  for (const engine of ["pg", "mysql"] as const) {
    lines.push(`**${engine === "pg" ? "PostgreSQL" : "MariaDB"}**`)
    lines.push("")
    // PostgreSQL has a second raw client, the fastest one outside Effect: its own column
    const peer = engine === "pg" ? "postgres.js" : undefined
    lines.push(`| workload | system | ops/s | p50 ms | p99 ms | vs stock | vs raw |${peer === undefined ? "" : ` vs ${peer} |`}`)
    lines.push(`|---|---|---:|---:|---:|---:|---:|${peer === undefined ? "" : "---:|"}`)
    for (const workload of workloads) {
      const rows = results.filter((r) => r.engine === engine && r.workload === workload.name)
      const stock = rows.find((r) => r.kind === "stock")
      const raw = rows.find((r) => r.kind === "raw")
      const peerRow = rows.find((r) => r.system === peer)
      for (const r of rows) {
        const ops = r.rowsPerSecond === undefined ? fmt(r.opsMedian) : `${fmt(r.rowsPerSecond)} rows/s`
        const vs = (base: Result | undefined) => (r.kind === "effect-dal" ? ratioCell(r, base) : "")
        lines.push(
          `| ${workload.name} | ${r.system} | ${ops} | ${fmt(r.p50Median, 2)} | ${fmt(r.p99Median, 2)} | ${vs(stock)} | ${vs(raw)} |${
            peer === undefined ? "" : ` ${vs(peerRow)} |`
          }`
        )
      }
    }
    const dalBatch = results.find((r) => r.engine === engine && r.kind === "effect-dal" && r.workload === "batch insert of 10k rows")
    const dalLoop = results.find((r) => r.engine === engine && r.kind === "effect-dal" && r.workload === "loop of 10k single inserts")
    if (dalBatch && dalLoop) {
      lines.push("")
      lines.push(`effect-dal \`insertMany\` vs a loop of single inserts: **${fmt(dalBatch.opsMedian / dalLoop.opsMedian, 1)}×**.`)
    }
    lines.push("")
  }
  if (routing.length > 0) {
    lines.push("**Replica routing** (PostgreSQL; the router's one replica is the same server, so both systems hit one database)")
    lines.push("")
    lines.push("| workload | direct ops/s | routed ops/s | routed vs direct |")
    lines.push("|---|---:|---:|---:|")
    for (const name of ROUTED_WORKLOADS) {
      const rows = routing.filter((r) => r.workload === name)
      const direct = rows.find((r) => !r.system.includes("routed"))
      const routed = rows.find((r) => r.system.includes("routed"))
      if (direct && routed) {
        lines.push(`| ${name} | ${fmt(direct.opsMedian)} | ${fmt(routed.opsMedian)} | ${ratioCell(routed, direct)} |`)
      }
    }
    lines.push("")
  }
  if (withoutEffect.length > 0) {
    lines.push("**Without Effect** (PostgreSQL: the Promise API and `createPgPool` on effect-dal, against raw `pg.Pool` and effect-dal's Effect API)")
    lines.push("")
    lines.push("| workload | system | ops/s | p50 ms | p99 ms | vs raw pg.Pool (Kysely: vs Kysely on it) | vs Effect API |")
    lines.push("|---|---|---:|---:|---:|---:|---:|")
    for (const name of PROMISE_WORKLOADS) {
      const rows = withoutEffect.filter((r) => r.workload === name)
      const raw = rows.find((r) => r.system === "pg.Pool (raw)")
      const kyselyRaw = rows.find((r) => r.system === "Kysely on pg.Pool (raw)")
      const effectApi = rows.find((r) => r.system === "effect-dal pg")
      for (const r of rows) {
        const vs = (base: Result | undefined) => ratioCell(r, base)
        // Kysely's rows compare with Kysely on raw pg.Pool: the same code on either pool
        const kysely = r.system.startsWith("Kysely")
        lines.push(`| ${name} | ${r.system} | ${fmt(r.opsMedian)} | ${fmt(r.p50Median, 2)} | ${fmt(r.p99Median, 2)} | ${vs(kysely ? kyselyRaw : raw)} | ${kysely ? "" : vs(effectApi)} |`)
      }
    }
    lines.push("")
  }
  sideTable(lines, "Sharding (PostgreSQL: 3 databases on this server, against one database holding every account, and against the same 3 nodes routed by the application)", sharding, {
    system: "effect-dal pg, the same 3 nodes, routed by hand",
    label: "vs by hand"
  })
  sideTable(lines, "Caching and async writes (PostgreSQL and Redis on this machine)", caching)
  lines.push(`Pool acquire + release on an in-memory fake driver: **${fmt(micro.medianMicros, 2)} µs** median per cycle (rounds: ${micro.rounds.map((r) => fmt(r, 2)).join(", ")}).`)
  lines.push("")
  for (const m of memory) {
    lines.push(`${fmt(m.queries)} point queries through ${m.name} in ${fmt(m.seconds, 1)} s: RSS growth **${fmt(m.rssGrowthMb, 1)} MB**, heap growth ${fmt(m.heapGrowthMb, 1)} MB, connections still borrowed afterwards: ${m.leakedConnections}.`)
    lines.push("")
  }
  return lines.join("\n")
}

/** What one engine's part of the run measured; the pool micro-benchmark is the parent's own. */
interface Part {
  readonly results: ReadonlyArray<Result>
  readonly routing: ReadonlyArray<Result>
  readonly withoutEffect: ReadonlyArray<Result>
  readonly sharding: ReadonlyArray<Result>
  readonly caching: ReadonlyArray<Result>
  readonly memory: ReadonlyArray<MemoryResult>
}

/** One engine's workloads, and for PostgreSQL the side comparisons and the memory run. */
const runPart = async (engine: Engine): Promise<Part> => {
  await prepare()
  try {
    const results = await benchEngine(engine)
    if (engine === "mysql") return { results, routing: [], withoutEffect: [], sharding: [], caching: [], memory: [] }
    // on their own, after the others closed: the routed system holds a second pool of 20
    const routing = await sideComparison(routingMakers, ROUTED_WORKLOADS, "routed")
    const withoutEffect = [
      ...await sideComparison(promiseMakers, PROMISE_WORKLOADS, "promise"),
      ...await sideComparison(kyselyMakers, PROMISE_WORKLOADS, "promise")
    ]
    const sharding = await sideComparison(shardMakers, ["point select by primary key", "top 100 by balance (fan-out over the shards)"], "shard")
    const caching = [
      ...await sideComparison(cacheMakers, ["point select by primary key", "aggregate over 2,000 rows (100 distinct)"], "cache"),
      ...await sideComparison(queueMakers, ["single-row insert"], "cache")
    ]
    console.log(`memory run: ${MEMORY_QUERIES} queries`)
    const memory: Array<MemoryResult> = []
    for (const target of memoryTargets) memory.push(await memoryRun(target))
    return { results, routing, withoutEffect, sharding, caching, memory }
  } finally {
    await cleanup()
  }
}

/**
 * Each engine's part runs in a Node process of its own, as an application
 * has one engine: in one process, whichever engine ran second found
 * effect-dal's shared core compiled for the other, and lost 10–15% on it
 * (the MariaDB point select 0.86× of raw after PostgreSQL's part, 1.04×
 * before it; PostgreSQL's 0.85× of postgres.js after MariaDB's part, 0.96×
 * before it). The raw drivers share no code, and lost nothing.
 */
const main = async () => {
  const part = process.env["BENCH_PART"] as Engine | undefined
  if (part !== undefined) {
    writeFileSync(process.env["BENCH_PART_OUT"]!, JSON.stringify(await runPart(part)))
    return
  }
  const out = fileURLToPath(new URL("./results/", import.meta.url))
  mkdirSync(out, { recursive: true })
  console.log(`bench: ${ROUNDS} rounds × ${SECONDS} s per system, each engine in a process of its own`)
  // first, while the servers are idle: after the engines' parts they still write out what the run
  // dirtied, and in one run the cycle went from 1.2 µs in its first rounds to 2.1 µs in its last
  console.log("pool micro-benchmark")
  const micro = await poolMicro()
  const parts: Array<Part> = []
  for (const engine of ENGINES) {
    const file = join(tmpdir(), `effect-dal-bench-${process.pid}-${engine}.json`)
    execFileSync(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url)], {
      stdio: "inherit",
      env: { ...process.env, BENCH_PART: engine, BENCH_PART_OUT: file }
    })
    parts.push(JSON.parse(readFileSync(file, "utf8")) as Part)
    rmSync(file)
  }
  const meta = {
    date: new Date().toISOString().slice(0, 10),
    machine: `${cpus().length} cores (${cpus()[0]?.model ?? "cpu"}), ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}, loopback`,
    seconds: SECONDS,
    rounds: ROUNDS
  }
  const results = parts.flatMap((p) => p.results)
  const routing = parts.flatMap((p) => p.routing)
  const withoutEffect = parts.flatMap((p) => p.withoutEffect)
  const sharding = parts.flatMap((p) => p.sharding)
  const caching = parts.flatMap((p) => p.caching)
  const memory = parts.flatMap((p) => p.memory)
  const md = markdown(results, routing, withoutEffect, sharding, caching, micro, memory, meta)
  writeFileSync(out + "latest.json", JSON.stringify({ meta, results, routing, withoutEffect, sharding, caching, micro, memory }, null, 2))
  writeFileSync(out + "latest.md", md + "\n")
  console.log("\n" + md)
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})

#!/usr/bin/env node
/**
 * `npm start`: the capacity check. Runs on the embedded PGlite by default, or
 * on `--url postgres://…|mysql://…` (or DATABASE_URL).
 */
import { Command, Options } from "@effect/cli"
import { NodeContext, NodeRuntime } from "@effect/platform-node"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Option from "effect/Option"
import { writeFileSync } from "node:fs"
import { resolve } from "node:path"
import * as CapacityCheck from "./CapacityCheck.js"
import * as Report from "./Report.js"

const users = Options.integer("users").pipe(Options.withDefault(10), Options.withDescription("virtual users"))
const duration = Options.integer("duration").pipe(Options.withDefault(8), Options.withDescription("seconds to run"))
const poolMax = Options.integer("pool-max").pipe(Options.withDefault(5), Options.withDescription("pool size"))
const url = Options.text("url").pipe(Options.optional, Options.withDescription("postgres://… or mysql://…; default: embedded PGlite"))
const replicaUrl = Options.text("replica-url").pipe(
  Options.withDescription("a read replica of --url (repeatable): reads are routed over the replicas"),
  Options.repeated
)
const shardUrl = Options.text("shard-url").pipe(
  Options.withDescription("a shard node (repeatable, instead of --url): the workload is sharded by account id"),
  Options.repeated
)
const ramp = Options.boolean("ramp").pipe(Options.withDescription("add users one by one to see the trend"))
const acquireTimeout = Options.integer("acquire-timeout").pipe(Options.withDefault(1_000), Options.withDescription("ms"))
const slowRatio = Options.float("slow-ratio").pipe(Options.withDefault(0.02), Options.withDescription("share of slow (50 ms) queries"))
const report = Options.text("report").pipe(Options.withDefault("capacity-report.html"))

const command = Command.make(
  "capacity",
  { users, duration, poolMax, url, replicaUrl, shardUrl, ramp, acquireTimeout, slowRatio, report },
  (o) =>
    Effect.gen(function*() {
      const target = Option.getOrUndefined(o.url) ?? process.env["DATABASE_URL"]
      const engine = CapacityCheck.engineOf(o.shardUrl[0] ?? target)
      // an embedded database is one session in this process: --pool-max does not apply to it
      const pool = engine === "pglite" ? "pool 1 (one embedded session)" : `pool max ${o.poolMax}`
      yield* Console.log(
        `effect-dal capacity check on ${engine}: ${o.users} users, ${o.duration} s, ${pool}${
          o.replicaUrl.length === 0 ? "" : `, ${o.replicaUrl.length} replica(s)`
        }${o.shardUrl.length === 0 ? "" : `, ${o.shardUrl.length} shard(s)`}${o.ramp ? ", ramping up" : ""}`
      )
      const result = yield* CapacityCheck.run({
        users: o.users,
        durationSeconds: o.duration,
        poolMax: o.poolMax,
        url: target,
        replicaUrls: o.replicaUrl,
        shardUrls: o.shardUrl,
        ramp: o.ramp,
        acquireTimeoutMillis: o.acquireTimeout,
        slowRatio: o.slowRatio,
        sampleMillis: 500,
        onStatus: (line) => void process.stdout.write(`\r${line}`)
      })
      const path = resolve(o.report)
      writeFileSync(path, Report.html(result))
      yield* Console.log(Report.text(result))
      yield* Console.log(`\nReport: ${path}`)
    })
)

const cli = Command.run(command, { name: "effect-dal capacity check", version: "0.1.0" })

// slow-query and breaker warnings would drown the status line: the report carries them instead
cli(process.argv).pipe(Logger.withMinimumLogLevel(LogLevel.Error), Effect.provide(NodeContext.layer), NodeRuntime.runMain)

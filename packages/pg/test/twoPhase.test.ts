/**
 * Two-phase commit over 3 PostgreSQL shards: databases on a throwaway
 * cluster with `max_prepared_transactions` set (the shared server keeps its
 * default, 0).
 */
import { AtomicSuite, PgCluster } from "@effect-dal/testkit"
import * as Effect from "effect/Effect"
import { fileURLToPath } from "node:url"
import { on, shardNodeLayer } from "./helpers.js"

AtomicSuite.suite({
  name: "PostgreSQL",
  shards: 3,
  server: Effect.map(
    PgCluster.make(28_000 + (process.pid % 500), ["max_prepared_transactions=40"]),
    (cluster) => ({ host: "127.0.0.1", port: cluster.port })
  ),
  createDatabase: (server, name) =>
    Effect.asVoid(on(`postgres://postgres@${server.host}:${server.port}/postgres`, `CREATE DATABASE "${name}"`)),
  layer: shardNodeLayer,
  blockInserts: (table) => `LOCK TABLE "${table}" IN SHARE MODE`,
  fixture: fileURLToPath(new URL("./fixtures/coordinator.ts", import.meta.url))
})

/**
 * Read replicas on real streaming replication: a throwaway primary with two
 * `pg_basebackup -R` replicas on free ports, removed afterwards.
 */
import { expect, layer } from "@effect/vitest"
import { Db } from "@effect-dal/core"
import type { DatabaseConfig, Replication } from "@effect-dal/core"
import { PgDatabase } from "@effect-dal/pg"
import { Bank, PgCluster, ReplicaChecks } from "@effect-dal/testkit"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Chunk from "effect/Chunk"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"
import { on, unique } from "./helpers.js"

const PORT = 22_000 + (process.pid % 200) * 3

class Cluster extends Context.Tag("test/Cluster")<Cluster, PgCluster.PgReplicatedCluster>() {}

/** Delays replay of commits on every replica (`recovery_min_apply_delay`). */
const delayReplay = (cluster: PgCluster.PgReplicatedCluster, millis: number) =>
  Effect.forEach(cluster.replicas, (r) =>
    Effect.zipRight(
      on(r.url, `ALTER SYSTEM SET recovery_min_apply_delay = '${millis}ms'`),
      on(r.url, "SELECT pg_reload_conf()")
    ), { discard: true })

const layerOn = (
  cluster: PgCluster.PgReplicatedCluster,
  alias: string,
  replication: Replication.ReplicationOptions = {},
  extra: Partial<DatabaseConfig.DatabaseOptions> = {}
) =>
  PgDatabase.layer({
    url: cluster.primary.url,
    alias,
    pool: { min: 0, max: 8, acquireTimeout: "2 seconds" },
    replicas: cluster.replicas.map((r) => ({ url: r.url })),
    replication: { lagCheckInterval: "200 millis", ...replication },
    ...extra
  })

/** Runs `effect` with a database on the cluster. */
const withDb = <A, E>(
  effect: Effect.Effect<A, E, Db | SqlClient.SqlClient | Cluster>,
  replication: Replication.ReplicationOptions = {},
  extra: Partial<DatabaseConfig.DatabaseOptions> = {}
) =>
  Effect.flatMap(Cluster, (cluster) =>
    Effect.provide(effect, layerOn(cluster, unique("rep"), replication, extra)))

const portOf = (rows: ReadonlyArray<{ port: number }>) => Number(rows[0]!.port)

layer(Layer.scoped(Cluster, PgCluster.makeReplicated(PORT, [PORT + 1, PORT + 2])), {
  timeout: 60_000,
  excludeTestServices: true
})(
  "replicas: PostgreSQL streaming replication",
  (it) => {
    it.effect("the cluster streams to both replicas; its setup time is measured", () =>
      Effect.gen(function*() {
        const cluster = yield* Cluster
        yield* Effect.logInfo(`primary and 2 replicas set up in ${cluster.setupMillis} ms`)
        expect(cluster.setupMillis).toBeGreaterThan(0)
        const streaming = yield* on(cluster.primary.url, "SELECT state FROM pg_stat_replication")
        expect(streaming.map((r) => r.state)).toEqual(["streaming", "streaming"])
      }))

    it.effect("reads go to replicas, writes, transactions and locking reads to the primary", () =>
      withDb(Effect.gen(function*() {
        const cluster = yield* Cluster
        const db = yield* Db
        const replicaPorts = cluster.replicas.map((r) => r.port)
        // no write yet in this fiber: any replica may serve its reads
        const seen = new Set<number>()
        for (let i = 0; i < 40; i++) {
          const port = portOf(yield* Db.execute<{ port: number }>("SELECT inet_server_port() AS port"))
          expect(replicaPorts).toContain(port)
          seen.add(port)
        }
        expect(seen.size, JSON.stringify(db.replicationStats())).toBe(2) // both replicas serve reads
        yield* Db.execute("CREATE TABLE IF NOT EXISTS [routing_t] (id int PRIMARY KEY, v int)")
        // sql templates follow the same rules
        const sql = yield* SqlClient.SqlClient
        const [viaSql] = yield* sql<{ port: number }>`SELECT inet_server_port() AS port`
        expect(replicaPorts).toContain(Number(viaSql!.port))
        // and so do streams
        const streamed = yield* Stream.runCollect(Db.stream<{ port: number }>("SELECT inet_server_port() AS port"))
        expect(replicaPorts).toContain(Number(Chunk.unsafeHead(streamed).port))
        // a write runs on the primary
        const written = yield* Db.execute<{ port: number }>(
          "INSERT INTO [routing_t] VALUES (?, inet_server_port()) ON CONFLICT (id) DO UPDATE SET v = excluded.v RETURNING v AS port",
          [1]
        )
        expect(portOf(written)).toBe(cluster.primary.port)
        // so do locking reads, reads in a transaction, and everything inside Db.primary
        expect(portOf(yield* Db.execute<{ port: number }>("SELECT inet_server_port() AS port FROM [routing_t] FOR UPDATE"))).toBe(
          cluster.primary.port
        )
        expect(portOf(yield* Db.withTransaction(Db.execute<{ port: number }>("SELECT inet_server_port() AS port")))).toBe(
          cluster.primary.port
        )
        expect(portOf(yield* Db.primary(Db.execute<{ port: number }>("SELECT inet_server_port() AS port")))).toBe(
          cluster.primary.port
        )
        // a read-only transaction inside Db.replica is a snapshot on a replica
        const inReplicaTx = yield* Db.replica(
          Db.withTransaction(Db.execute<{ port: number }>("SELECT inet_server_port() AS port"), { readOnly: true })
        )
        expect(replicaPorts).toContain(portOf(inReplicaTx))
        const stats = db.replicationStats()
        expect(stats.map((s) => s.role)).toEqual(["primary", "replica", "replica"])
        expect(stats[1]!.reads + stats[2]!.reads).toBeGreaterThanOrEqual(41)
        yield* Db.execute("DROP TABLE [routing_t]")
        // the reads after the CREATE TABLE wait for a replica to replay it: under the whole suite's
        // load that took longer than the default 50 ms, and the read went to the primary, as it should
      }), { waitForReplica: "5 seconds" }))

    it.effect("a replica refuses a write it was sent as a read: it runs on the primary and succeeds", () =>
      withDb(Effect.gen(function*() {
        const db = yield* Db
        yield* Db.execute("CREATE SEQUENCE IF NOT EXISTS [routing_seq]")
        yield* Effect.sleep(300) // the sequence reaches the replicas
        const before = db.replicationStats().reduce((n, s) => n + s.fallbacks, 0)
        const [row] = yield* Db.execute<{ n: string }>("SELECT nextval('routing_seq') AS n")
        expect(Number(row!.n)).toBeGreaterThan(0)
        expect(db.replicationStats().reduce((n, s) => n + s.fallbacks, 0)).toBe(before + 1)
        yield* Db.execute("DROP SEQUENCE [routing_seq]")
      })))

    const readYourWrites = (mode: Replication.ReplicationOptions["readYourWrites"]) =>
      withDb(Effect.gen(function*() {
        const db = yield* Db
        const sql = yield* SqlClient.SqlClient
        const table = unique("ryw")
        yield* Db.execute(`CREATE TABLE [${table}] (worker int PRIMARY KEY, v int NOT NULL)`)
        yield* Db.insertMany(table, Array.from({ length: 16 }, (_, worker) => ({ worker, v: 0 })))
        // both replicas have the rows before the workers start
        yield* Bank.eventually(
          Effect.map(
            Effect.forEach([0, 1, 2, 3], () =>
              Effect.either(Db.replica(Db.execute<{ n: string }>(`SELECT COUNT(*) AS n FROM [${table}]`)))),
            (results) => results.every((r) => r._tag === "Right" && Number(r.right[0]!.n) === 16)
          ),
          10_000
        )
        let stale = 0
        let reads = 0
        const replicaReadsBefore = db.replicationStats().slice(1).reduce((n, s) => n + s.reads, 0)
        yield* Effect.forEach(Array.from({ length: 16 }, (_, worker) => worker), (worker) =>
          Effect.gen(function*() {
            for (let v = 1; v <= 12; v++) {
              yield* Db.execute(`UPDATE [${table}] SET v = ? WHERE worker = ?`, [v, worker])
              // a read that cannot see the row at all is as stale as one that sees an old value
              const result = v % 2 === 0
                ? yield* Effect.either(Db.execute<{ v: number }>(`SELECT v FROM [${table}] WHERE worker = ?`, [worker]))
                : yield* Effect.either(sql<{ v: number }>`SELECT v FROM ${sql(table)} WHERE worker = ${worker}`)
              reads++
              if (result._tag === "Left" || result.right[0]?.v !== v) stale++
            }
          }), { concurrency: 16, discard: true })
        const replicaReads = db.replicationStats().slice(1).reduce((n, s) => n + s.reads, 0) - replicaReadsBefore
        yield* Db.execute(`DROP TABLE [${table}]`)
        return { stale, reads, replicaReads }
      }), { readYourWrites: mode, stickyDelay: "2 seconds" })

    it.effect("read-your-writes under delayed replay: 0 stale reads by position and by delay; stale reads without it", () =>
      Effect.gen(function*() {
        const cluster = yield* Cluster
        // replay 20 ms behind: within waitForReplica (50 ms), so replicas can still serve the reads
        yield* delayReplay(cluster, 20)
        const position = yield* readYourWrites("position")
        const delay = yield* readYourWrites("delay")
        const off = yield* readYourWrites(false)
        // replay 150 ms behind: past waitForReplica, reads after a write must go to the primary
        yield* delayReplay(cluster, 150)
        const far = yield* readYourWrites("position")
        yield* delayReplay(cluster, 0)
        yield* Effect.logInfo(
          `read-your-writes, 16 workers x 12 writes each read back at once: ` +
            `replay 20 ms behind: position ${position.stale}/${position.reads} stale (${position.replicaReads} served by replicas), ` +
            `delay ${delay.stale}/${delay.reads} stale, off ${off.stale}/${off.reads} stale; ` +
            `replay 150 ms behind: position ${far.stale}/${far.reads} stale (${far.replicaReads} served by replicas)`
        )
        expect(position.reads).toBe(16 * 12)
        expect(position.stale).toBe(0)
        expect(far.stale).toBe(0)
        expect(delay.stale).toBe(0)
        expect(off.stale).toBeGreaterThan(0) // the test can fail: without read-your-writes, replicas are behind
      }), 60_000)

    it.effect("a replica over maxLag stops getting reads within 2 lag checks, and gets them again once caught up", () =>
      withDb(Effect.gen(function*() {
        const cluster = yield* Cluster
        const db = yield* Db
        const paused = cluster.replicas[0]!
        const table = unique("lag")
        yield* Db.execute(`CREATE TABLE [${table}] (id int, pad text)`)
        yield* Effect.sleep(300)
        yield* on(paused.url, "SELECT pg_wal_replay_pause()")
        yield* Db.execute(`INSERT INTO [${table}] SELECT g, repeat('x', 1000) FROM generate_series(1, 2000) g`)
        const started = Date.now()
        yield* Bank.eventually(Effect.sync(() => db.replicationStats()[1]!.usable === false), 5_000)
        expect(Date.now() - started).toBeLessThan(2 * 200 + 300)
        expect(db.replicationStats()[1]!.lagBytes).toBeGreaterThan(64 * 1024)
        // no reads for it meanwhile
        const readsBefore = db.replicationStats()[1]!.reads
        for (let i = 0; i < 20; i++) {
          expect(portOf(yield* Db.execute<{ port: number }>("SELECT inet_server_port() AS port"))).toBe(cluster.replicas[1]!.port)
        }
        expect(db.replicationStats()[1]!.reads).toBe(readsBefore)
        yield* on(paused.url, "SELECT pg_wal_replay_resume()")
        yield* Bank.eventually(Effect.sync(() => db.replicationStats()[1]!.usable), 5_000)
        yield* Db.execute(`DROP TABLE [${table}]`)
      }), { maxLag: { bytes: 64 * 1024 } }), 30_000)

    it.effect("a replica killed under a read load costs no failed read, and rejoins after a restart", () =>
      withDb(
        Effect.flatMap(Cluster, (cluster) =>
          ReplicaChecks.killedUnderLoad({ index: 2, kill: cluster.replicas[1]!.kill, start: cluster.replicas[1]!.start })),
        {},
        { pool: { min: 0, max: 8, acquireTimeout: "1 second" }, retry: false }
      ), 60_000)

    it.effect("a commit token carries read-your-writes to another layer; a malformed one is a typed error", () =>
      Effect.gen(function*() {
        const cluster = yield* Cluster
        yield* delayReplay(cluster, 300)
        yield* ReplicaChecks.tokenRoundTrip({ table: unique("token"), layer: (alias) => layerOn(cluster, unique(alias)) })
        yield* delayReplay(cluster, 0)
      }), 30_000)
  }
)

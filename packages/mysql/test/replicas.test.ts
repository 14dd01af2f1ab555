/**
 * Read replicas on real MariaDB GTID replication: a throwaway primary and a
 * replica (`MASTER_USE_GTID=slave_pos`) on free ports, removed afterwards.
 */
import { expect, layer } from "@effect/vitest"
import { Db } from "@effect-dal/core"
import type { DatabaseConfig, Replication } from "@effect-dal/core"
import { MysqlDatabase } from "@effect-dal/mysql"
import { Bank, MariaCluster, ReplicaChecks } from "@effect-dal/testkit"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Mysql from "mysql2/promise"
import { unique } from "./helpers.js"

const PORT = 25_000 + (process.pid % 290) * 2

class Cluster extends Context.Tag("test/MariaCluster")<Cluster, MariaCluster.MariaReplicatedCluster>() {}

/** Runs `sql` on one server of the cluster, on a connection that is not ours. */
const on = (url: string, sql: string) =>
  Effect.promise(async () => {
    const conn = await Mysql.createConnection(url)
    try {
      return (await conn.query(sql))[0]
    } finally {
      await conn.end()
    }
  })

/** Delays the replica's replay by whole seconds (`MASTER_DELAY`); 0 for none. */
const delayReplay = (cluster: MariaCluster.MariaReplicatedCluster, seconds: number) =>
  Effect.forEach(cluster.replicas, (r) =>
    Effect.forEach(["STOP SLAVE", `CHANGE MASTER TO MASTER_DELAY = ${seconds}`, "START SLAVE"], (sql) => on(r.url, sql), {
      discard: true
    }), { discard: true })

const layerOn = (
  cluster: MariaCluster.MariaReplicatedCluster,
  alias: string,
  replication: Replication.ReplicationOptions = {},
  extra: Partial<DatabaseConfig.DatabaseOptions> = {}
) =>
  MysqlDatabase.layer({
    url: cluster.primary.url,
    alias,
    pool: { min: 0, max: 8, acquireTimeout: "2 seconds" },
    replicas: cluster.replicas.map((r) => ({ url: r.url })),
    replication: { lagCheckInterval: "200 millis", ...replication },
    ...extra
  })

const withDb = <A, E>(
  effect: Effect.Effect<A, E, Db | SqlClient.SqlClient | Cluster>,
  replication: Replication.ReplicationOptions = {},
  extra: Partial<DatabaseConfig.DatabaseOptions> = {}
) => Effect.flatMap(Cluster, (cluster) => Effect.provide(effect, layerOn(cluster, unique("rep"), replication, extra)))

const portOf = (rows: ReadonlyArray<{ port: unknown }>) => Number(rows[0]!.port)

layer(Layer.scoped(Cluster, MariaCluster.makeReplicated(PORT, [PORT + 1])), { timeout: 60_000, excludeTestServices: true })(
  "replicas: MariaDB GTID replication",
  (it) => {
    it.effect("reads go to the replica, writes and transactions to the primary; setup time is measured", () =>
      withDb(Effect.gen(function*() {
        const cluster = yield* Cluster
        yield* Effect.logInfo(`MariaDB primary and replica set up in ${cluster.setupMillis} ms`)
        for (let i = 0; i < 10; i++) {
          expect(portOf(yield* Db.execute<{ port: number }>("SELECT @@port AS port"))).toBe(cluster.replicas[0]!.port)
        }
        const sql = yield* SqlClient.SqlClient
        expect(portOf(yield* sql<{ port: number }>`SELECT @@port AS port`)).toBe(cluster.replicas[0]!.port)
        expect(portOf(yield* Db.withTransaction(Db.execute<{ port: number }>("SELECT @@port AS port")))).toBe(
          cluster.primary.port
        )
        expect(portOf(yield* Db.primary(Db.execute<{ port: number }>("SELECT @@port AS port")))).toBe(cluster.primary.port)
        const table = unique("routing")
        yield* Db.execute(`CREATE TABLE [${table}] (id int PRIMARY KEY, port int)`)
        yield* Db.execute(`INSERT INTO [${table}] VALUES (1, @@port)`)
        const [row] = yield* Db.execute<{ port: number }>(`SELECT port FROM [${table}] WHERE id = ?`, [1])
        expect(row!.port).toBe(cluster.primary.port) // written on the primary, read back from the replica
        yield* Db.execute(`DROP TABLE [${table}]`)
      })))

    const readYourWrites = (mode: Replication.ReplicationOptions["readYourWrites"]) =>
      withDb(Effect.gen(function*() {
        const db = yield* Db
        const sql = yield* SqlClient.SqlClient
        const table = unique("ryw")
        yield* Db.execute(`CREATE TABLE [${table}] (worker int PRIMARY KEY, v int NOT NULL)`)
        yield* Db.insertMany(table, Array.from({ length: 16 }, (_, worker) => ({ worker, v: 0 })))
        // the replica has the rows before the workers start (its replay may be 1 s behind)
        yield* Bank.eventually(
          Effect.map(
            Effect.either(Db.replica(Db.execute<{ n: number }>(`SELECT COUNT(*) AS n FROM [${table}]`))),
            (result) => result._tag === "Right" && Number(result.right[0]!.n) === 16
          ),
          10_000
        )
        let stale = 0
        let reads = 0
        const before = db.replicationStats()[1]!.reads
        yield* Effect.forEach(Array.from({ length: 16 }, (_, worker) => worker), (worker) =>
          Effect.gen(function*() {
            for (let v = 1; v <= 6; v++) {
              yield* Db.execute(`UPDATE [${table}] SET v = ? WHERE worker = ?`, [v, worker])
              // a read that cannot see the row at all is as stale as one that sees an old value
              const result = v % 2 === 0
                ? yield* Effect.either(Db.execute<{ v: number }>(`SELECT v FROM [${table}] WHERE worker = ?`, [worker]))
                : yield* Effect.either(sql<{ v: number }>`SELECT v FROM ${sql(table)} WHERE worker = ${worker}`)
              reads++
              if (result._tag === "Left" || result.right[0]?.v !== v) stale++
            }
          }), { concurrency: 16, discard: true })
        const replicaReads = db.replicationStats()[1]!.reads - before
        yield* Db.primary(Db.execute(`DROP TABLE [${table}]`))
        return { stale, reads, replicaReads }
      }), { readYourWrites: mode, stickyDelay: "3 seconds" })

    it.effect("read-your-writes by GTID: 0 stale reads by position and by delay; stale reads without it", () =>
      Effect.gen(function*() {
        const cluster = yield* Cluster
        const near = yield* readYourWrites("position")
        yield* delayReplay(cluster, 1)
        const position = yield* readYourWrites("position")
        const delay = yield* readYourWrites("delay")
        const off = yield* readYourWrites(false)
        yield* delayReplay(cluster, 0)
        yield* Effect.logInfo(
          `read-your-writes, 16 workers x 6 writes each read back at once: replay in step: position ` +
            `${near.stale}/${near.reads} stale (${near.replicaReads} served by the replica); replay 1 s behind: position ` +
            `${position.stale}/${position.reads} stale (${position.replicaReads} served by the replica), ` +
            `delay ${delay.stale}/${delay.reads} stale, off ${off.stale}/${off.reads} stale`
        )
        expect(near.stale).toBe(0)
        expect(position.reads).toBe(16 * 6)
        expect(position.stale).toBe(0)
        expect(delay.stale).toBe(0)
        expect(off.stale).toBeGreaterThan(0) // the test can fail: without read-your-writes, the replica is behind
      }), 60_000)

    it.effect("commits report their GTIDs: a read after a write reads no position on the primary, and sees the write", () =>
      withDb(Effect.gen(function*() {
        const cluster = yield* Cluster
        const db = yield* Db
        const table = unique("tracked")
        yield* Db.execute(`CREATE TABLE [${table}] (id int PRIMARY KEY, v int NOT NULL)`)
        yield* Db.execute(`INSERT INTO [${table}] VALUES (1, 0)`)
        const replicaReadsBefore = db.replicationStats()[1]!.reads
        // the primary's general log shows every statement it gets (the lag poll is an hour away)
        yield* on(cluster.primary.url, "SET GLOBAL log_output = 'TABLE', GLOBAL general_log = 1")
        yield* on(cluster.primary.url, "TRUNCATE mysql.general_log")
        for (let v = 1; v <= 10; v++) {
          // autocommit writes and transactions alike
          if (v % 2 === 0) yield* Db.execute(`UPDATE [${table}] SET v = ? WHERE id = 1`, [v])
          else yield* Db.withTransaction(Db.execute(`UPDATE [${table}] SET v = ? WHERE id = 1`, [v]))
          const [row] = yield* Db.execute<{ v: number }>(`SELECT v FROM [${table}] WHERE id = 1`)
          expect(row!.v).toBe(v)
        }
        // spelt in two halves, so that this count does not count itself
        const positionReads = yield* on(
          cluster.primary.url,
          "SELECT COUNT(*) AS n FROM mysql.general_log WHERE argument LIKE CONCAT('%gtid', '_binlog_pos%')"
        )
        yield* on(cluster.primary.url, "SET GLOBAL general_log = 0")
        expect(Number((positionReads as Array<{ n: number }>)[0]!.n)).toBe(0)
        // a read the replica could not serve within 50 ms falls back to the primary: on a loaded machine, not all 10 make it
        expect(db.replicationStats()[1]!.reads - replicaReadsBefore).toBeGreaterThan(0)
        yield* Db.execute(`DROP TABLE [${table}]`)
      }), { lagCheckInterval: "1 hour" }), 30_000)

    it.effect("a replica that stops replaying leaves the reads within 2 lag checks, and gets them back once caught up", () =>
      withDb(Effect.gen(function*() {
        const cluster = yield* Cluster
        const db = yield* Db
        const table = unique("lag")
        yield* Db.execute(`CREATE TABLE [${table}] (id int)`)
        yield* on(cluster.replicas[0]!.url, "STOP SLAVE SQL_THREAD")
        yield* Db.execute(`INSERT INTO [${table}] VALUES (1)`)
        // the lag is over 300 ms once the replica has stood still that long
        yield* Bank.eventually(Effect.sync(() => !db.replicationStats()[1]!.usable), 5_000)
        expect(db.replicationStats()[1]!.lagMillis).toBeGreaterThan(300)
        expect(portOf(yield* Db.execute<{ port: number }>("SELECT @@port AS port"))).toBe(cluster.primary.port)
        yield* on(cluster.replicas[0]!.url, "START SLAVE SQL_THREAD")
        yield* Bank.eventually(Effect.sync(() => db.replicationStats()[1]!.usable), 5_000)
        expect(portOf(yield* Db.replica(Db.execute<{ port: number }>("SELECT @@port AS port")))).toBe(
          cluster.replicas[0]!.port
        )
        yield* Db.execute(`DROP TABLE [${table}]`)
      }), { maxLag: { time: "300 millis" } }), 30_000)

    it.effect("the replica killed under a read load costs no failed read, and rejoins after a restart", () =>
      withDb(
        Effect.flatMap(Cluster, (cluster) =>
          ReplicaChecks.killedUnderLoad({ index: 1, kill: cluster.replicas[0]!.kill, start: cluster.replicas[0]!.start })),
        {},
        { pool: { min: 0, max: 8, acquireTimeout: "1 second" }, retry: false }
      ), 60_000)

    it.effect("a commit token carries read-your-writes to another layer; a malformed one is a typed error", () =>
      Effect.gen(function*() {
        const cluster = yield* Cluster
        yield* delayReplay(cluster, 1)
        yield* ReplicaChecks.tokenRoundTrip({ table: unique("token"), layer: (alias) => layerOn(cluster, unique(alias)) })
        yield* delayReplay(cluster, 0)
      }), 30_000)
  }
)

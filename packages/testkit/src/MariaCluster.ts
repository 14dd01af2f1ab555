/**
 * A throwaway MariaDB primary with GTID replicas, made with the machine's
 * own `mariadb-install-db` and `mariadbd` in a temporary directory, on ports
 * of their own, and removed with the scope. The shared server on 3306 is
 * never touched.
 *
 * @since 0.2.0
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { execFileSync, spawn } from "node:child_process"
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"

/**
 * One server of the cluster.
 *
 * @since 0.2.0
 */
export interface MariaServer {
  readonly port: number
  /** As root. */
  readonly url: string
  /** As `app`, a user with every right on `test` and none to write past `read_only`. */
  readonly appUrl: string
  /** Kills the server at once, as a crash would. */
  readonly kill: Effect.Effect<void>
  /** Starts it again and waits until it accepts connections. */
  readonly start: Effect.Effect<void>
  /**
   * Makes a replica the primary: applies everything it received, stops
   * replicating, and takes writes (`STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only = OFF`).
   */
  readonly promote: Effect.Effect<void>
  /** Fences the server: `SET GLOBAL read_only = ON` (users without READ_ONLY ADMIN can no longer write). */
  readonly fence: Effect.Effect<void>
}

/**
 * A primary with GTID replicas.
 *
 * @since 0.2.0
 */
export interface MariaReplicatedCluster {
  readonly primary: MariaServer
  readonly replicas: ReadonlyArray<MariaServer>
  readonly setupMillis: number
}

const client = (args: ReadonlyArray<string>, sql: string) =>
  execFileSync("mariadb", [...args, "-u", "root", "-e", sql], { stdio: "pipe", timeout: 30_000 })

const server = (dir: string, port: number, serverId: number, settings: ReadonlyArray<string>) => {
  const data = join(dir, `data-${port}`)
  const socket = join(dir, `sock-${port}`)
  const errorLog = join(dir, `err-${port}`)
  let child: ReturnType<typeof spawn> | undefined
  const start = () => {
    child = spawn("/usr/sbin/mariadbd", [
      "--no-defaults",
      `--datadir=${data}`,
      `--port=${port}`,
      `--socket=${socket}`,
      "--bind-address=127.0.0.1",
      "--skip-name-resolve",
      `--server-id=${serverId}`,
      "--log-bin=binlog",
      "--binlog-format=ROW",
      "--gtid-strict-mode=1",
      "--user=root",
      `--pid-file=${join(dir, `pid-${port}`)}`,
      `--log-error=${errorLog}`,
      "--innodb-buffer-pool-size=32M",
      "--innodb-flush-log-at-trx-commit=2",
      "--sync-binlog=0",
      "--max-connections=100",
      "--skip-performance-schema",
      ...settings
    ], { stdio: "ignore" })
    // until it answers on its socket
    const deadline = Date.now() + 30_000
    for (;;) {
      try {
        execFileSync("mariadb-admin", ["--socket", socket, "-u", "root", "ping"], { stdio: "pipe", timeout: 5_000 })
        return
      } catch (e) {
        // a server that exited (a port taken, say) will not answer: say why at once
        if (child?.exitCode !== null || Date.now() > deadline) {
          const log = existsSync(errorLog) ? readFileSync(errorLog, "utf8").split("\n").slice(-5).join("\n") : ""
          throw new Error(`mariadbd on port ${port} did not start: ${String(e)}\n${log}`)
        }
        execFileSync("sleep", ["0.1"])
      }
    }
  }
  const kill = () => {
    if (child !== undefined && child.exitCode === null) {
      child.kill("SIGKILL")
      try {
        execFileSync("mariadb-admin", ["--socket", socket, "-u", "root", "ping"], { stdio: "pipe", timeout: 1_000 })
      } catch {
        // gone, as it should be
      }
    }
    child = undefined
  }
  const install = () =>
    execFileSync("mariadb-install-db", [
      "--no-defaults",
      `--datadir=${data}`,
      "--user=root",
      "--auth-root-authentication-method=normal",
      "--skip-test-db"
    ], { stdio: "pipe", timeout: 60_000 })
  const sql = (statement: string) => client(["--socket", socket], statement)
  const promote = () => {
    // everything the replica received is applied before it takes writes: nothing acknowledged is lost
    sql("STOP SLAVE IO_THREAD")
    const status = execFileSync("mariadb", ["--socket", socket, "-u", "root", "-E", "-e", "SHOW SLAVE STATUS"]).toString()
    const received = /Gtid_IO_Pos:\s*(\S*)/.exec(status)?.[1] ?? ""
    if (received !== "") sql(`SELECT MASTER_GTID_WAIT('${received}', 30)`)
    sql("STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only = OFF")
  }
  const info: MariaServer = {
    port,
    url: `mysql://root@127.0.0.1:${port}/test`,
    appUrl: `mysql://app@127.0.0.1:${port}/test`,
    kill: Effect.sync(kill),
    start: Effect.sync(start),
    promote: Effect.sync(promote),
    fence: Effect.sync(() => sql("SET GLOBAL read_only = ON"))
  }
  return { install, start, kill, sql, info }
}

/**
 * Makes a primary on `port` and a GTID replica (`MASTER_USE_GTID=slave_pos`)
 * on each of `replicaPorts`, with a database `test`, and waits until every
 * replica has it.
 *
 * @since 0.2.0
 */
export const makeReplicated = (
  port: number,
  replicaPorts: ReadonlyArray<number>,
  options: {
    /** Semi-synchronous replication: a COMMIT returns once a replica has it (`AFTER_SYNC`). */
    readonly semiSync?: boolean
  } = {}
): Effect.Effect<MariaReplicatedCluster, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const started = Date.now()
      const dir = mkdtempSync(join(tmpdir(), "dal-mariareplicas-"))
      const semiSync = options.semiSync === true
      const primary = server(dir, port, 1, [])
      // replicas are read-only, as a replica should be, and can be promoted
      const replicas = replicaPorts.map((p, i) =>
        server(dir, p, i + 2, ["--read-only=1", ...(semiSync ? ["--rpl-semi-sync-slave-enabled=1"] : [])])
      )
      for (const s of [primary, ...replicas]) s.install()
      for (const s of [primary, ...replicas]) {
        s.start()
        s.sql("CREATE USER IF NOT EXISTS 'root'@'127.0.0.1'; GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION")
      }
      primary.sql(
        "CREATE DATABASE IF NOT EXISTS test; CREATE USER IF NOT EXISTS 'app'@'127.0.0.1'; GRANT ALL ON test.* TO 'app'@'127.0.0.1'; GRANT PROCESS ON *.* TO 'app'@'127.0.0.1'"
      )
      for (const replica of replicas) {
        replica.sql(
          `CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=${port}, MASTER_USER='root', MASTER_USE_GTID=slave_pos; START SLAVE`
        )
      }
      // semi-sync from now on, with replicas to acknowledge (AFTER_SYNC: an acknowledged commit is on a replica)
      if (semiSync) {
        primary.sql(
          "SET GLOBAL rpl_semi_sync_master_wait_point = 'AFTER_SYNC'; SET GLOBAL rpl_semi_sync_master_timeout = 30000; SET GLOBAL rpl_semi_sync_master_enabled = ON"
        )
      }
      // the replicas have everything the primary has
      for (const replica of replicas) {
        const position = execFileSync("mariadb", ["--socket", join(dir, `sock-${port}`), "-u", "root", "-N", "-e", "SELECT @@gtid_binlog_pos"])
          .toString().trim()
        replica.sql(`SELECT MASTER_GTID_WAIT('${position}', 30)`)
      }
      return { dir, primary, replicas, setupMillis: Date.now() - started }
    }),
    ({ dir, primary, replicas }) =>
      Effect.sync(() => {
        for (const s of [...replicas, primary]) s.kill()
        rmSync(dir, { recursive: true, force: true })
      })
  ).pipe(Effect.map(({ primary, replicas, setupMillis }) => ({
    primary: primary.info,
    replicas: replicas.map((r) => r.info),
    setupMillis
  })))

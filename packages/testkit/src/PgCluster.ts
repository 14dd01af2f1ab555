/**
 * A throwaway PostgreSQL cluster for destructive fault tests (restarts,
 * outages): made with the machine's own binaries in a temporary directory,
 * on a port of its own, and removed with the scope. The shared server on
 * 5432 is never touched.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { execFileSync } from "node:child_process"
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"

/**
 * A running throwaway cluster.
 *
 * @since 0.1.0
 */
export interface PgCluster {
  readonly port: number
  readonly url: string
  /** Stops the server (fast shutdown: sessions are terminated). */
  readonly stop: Effect.Effect<void>
  /** Starts it again and waits until it accepts connections. */
  readonly start: Effect.Effect<void>
}

const binDir = (): string => {
  const root = "/usr/lib/postgresql"
  const versions = existsSync(root) ? readdirSync(root).sort() : []
  const version = versions[versions.length - 1]
  if (version === undefined) throw new Error("no PostgreSQL binaries under /usr/lib/postgresql")
  return join(root, version, "bin")
}

/** Runs a PostgreSQL binary; as the postgres user when we are root, since initdb refuses root. */
const run = (bin: string, args: ReadonlyArray<string>) => {
  const command = join(binDir(), bin)
  const asRoot = process.getuid?.() === 0
  execFileSync(asRoot ? "runuser" : command, asRoot ? ["-u", "postgres", "--", command, ...args] : [...args], {
    stdio: "pipe",
    timeout: 60_000
  })
}

/** A directory the server may own (initdb refuses root). */
const ownedDir = (prefix: string): string => {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  if (process.getuid?.() === 0) {
    const uid = Number(execFileSync("id", ["-u", "postgres"]).toString().trim())
    const gid = Number(execFileSync("id", ["-g", "postgres"]).toString().trim())
    chownSync(dir, uid, gid)
  }
  return dir
}

/** One server's data directory under `dir`, started and stopped with pg_ctl. */
const server = (dir: string, port: number, settings: ReadonlyArray<string> = []) => {
  const data = join(dir, `data-${port}`)
  const pgctl = (args: ReadonlyArray<string>) => run("pg_ctl", ["-D", data, ...args])
  const start = () =>
    pgctl([
      "start",
      "-w",
      "-l",
      join(dir, `log-${port}`),
      "-o",
      [`-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50`, ...settings].join(" ")
    ])
  const kill = () => {
    try {
      pgctl(["stop", "-m", "immediate", "-w"])
    } catch {
      // already stopped
    }
  }
  const cluster: PgServer = {
    port,
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    stop: Effect.sync(() => pgctl(["stop", "-m", "fast", "-w"])),
    start: Effect.sync(start),
    kill: Effect.sync(kill),
    promote: Effect.sync(() => pgctl(["promote", "-w"])),
    rejoin: (primaryPort) =>
      Effect.sync(() => {
        kill()
        rmSync(data, { recursive: true, force: true })
        run("pg_basebackup", ["-h", "127.0.0.1", "-p", String(primaryPort), "-U", "postgres", "-D", data, "-R", "-X", "stream", "--no-sync"])
        start()
      })
  }
  return { data, pgctl, start, kill, cluster }
}

/**
 * A server of a replicated cluster.
 *
 * @since 0.2.0
 */
export interface PgServer extends PgCluster {
  /** Stops the server at once, as a crash would (`pg_ctl stop -m immediate`). */
  readonly kill: Effect.Effect<void>
  /** Promotes a standby to primary (`pg_ctl promote`), and waits until it is. */
  readonly promote: Effect.Effect<void>
  /** Makes the server a fresh standby of the primary on `primaryPort` (`pg_basebackup -R`), and starts it. */
  readonly rejoin: (primaryPort: number) => Effect.Effect<void>
}

/**
 * Makes and starts a cluster on `port`, trust auth, database `postgres`.
 *
 * @since 0.1.0
 */
export const make = (
  port: number,
  /** Server settings (`-c name=value` pairs, without the `-c`), e.g. `max_prepared_transactions=20`. */
  settings: ReadonlyArray<string> = []
): Effect.Effect<PgCluster, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const dir = ownedDir("dal-pgcluster-")
      const primary = server(dir, port, settings.map((s) => `-c ${s}`))
      run("initdb", ["-D", primary.data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
      primary.start()
      return { dir, primary }
    }),
    ({ dir, primary }) =>
      Effect.sync(() => {
        primary.kill()
        rmSync(dir, { recursive: true, force: true })
      })
  ).pipe(Effect.map(({ primary }) => primary.cluster))

/**
 * A primary with streaming replicas.
 *
 * @since 0.2.0
 */
export interface PgReplicatedCluster {
  readonly primary: PgServer
  readonly replicas: ReadonlyArray<PgServer>
  /** How long making the primary and its replicas took. */
  readonly setupMillis: number
}

/**
 * Makes a primary on `port` and one streaming replica per port in
 * `replicaPorts`, each a `pg_basebackup -R` copy of the primary (the
 * engine's own replication, nothing home-made), and waits until every
 * replica streams. Removed with the scope.
 *
 * @since 0.2.0
 */
export const makeReplicated = (
  port: number,
  replicaPorts: ReadonlyArray<number>,
  options: {
    /** Every commit waits for a standby (`synchronous_standby_names = '*'`, `synchronous_commit = on`). */
    readonly synchronous?: boolean
  } = {}
): Effect.Effect<PgReplicatedCluster, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const started = Date.now()
      const dir = ownedDir("dal-pgreplicas-")
      // only the primary asks for a synchronous standby: a promoted standby must not wait for one
      const primary = server(dir, port, options.synchronous === true ? ["-c synchronous_standby_names='*'"] : [])
      run("initdb", ["-D", primary.data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
      primary.start()
      const replicas = replicaPorts.map((replicaPort) => {
        const replica = server(dir, replicaPort)
        // initdb's trust rules admit replication connections from 127.0.0.1
        run("pg_basebackup", ["-h", "127.0.0.1", "-p", String(port), "-U", "postgres", "-D", replica.data, "-R", "-X", "stream", "--no-sync"])
        replica.start()
        return replica
      })
      return { dir, primary, replicas, setupMillis: Date.now() - started }
    }),
    ({ dir, primary, replicas }) =>
      Effect.sync(() => {
        for (const replica of replicas) replica.kill()
        primary.kill()
        rmSync(dir, { recursive: true, force: true })
      })
  ).pipe(Effect.map(({ primary, replicas, setupMillis }) => ({
    primary: primary.cluster,
    replicas: replicas.map((r) => r.cluster),
    setupMillis
  })))

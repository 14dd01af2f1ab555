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

/**
 * Makes and starts a cluster on `port`, trust auth, database `postgres`.
 *
 * @since 0.1.0
 */
export const make = (port: number): Effect.Effect<PgCluster, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const dir = mkdtempSync(join(tmpdir(), "dal-pgcluster-"))
      if (process.getuid?.() === 0) {
        const uid = Number(execFileSync("id", ["-u", "postgres"]).toString().trim())
        const gid = Number(execFileSync("id", ["-g", "postgres"]).toString().trim())
        chownSync(dir, uid, gid)
      }
      const data = join(dir, "data")
      run("initdb", ["-D", data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
      const pgctl = (args: ReadonlyArray<string>) => run("pg_ctl", ["-D", data, ...args])
      const start = () =>
        pgctl([
          "start",
          "-w",
          "-l",
          join(dir, "log"),
          "-o",
          `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50`
        ])
      start()
      return {
        dir,
        pgctl,
        cluster: {
          port,
          url: `postgres://postgres@127.0.0.1:${port}/postgres`,
          stop: Effect.sync(() => pgctl(["stop", "-m", "fast", "-w"])),
          start: Effect.sync(start)
        } satisfies PgCluster
      }
    }),
    ({ dir, pgctl }) =>
      Effect.sync(() => {
        try {
          pgctl(["stop", "-m", "immediate", "-w"])
        } catch {
          // already stopped
        }
        rmSync(dir, { recursive: true, force: true })
      })
  ).pipe(Effect.map(({ cluster }) => cluster))

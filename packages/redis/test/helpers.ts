import { PgDatabase } from "@effect-dal/pg"
import { DbCache } from "@effect-dal/redis"
import type { DbCacheOptions } from "@effect-dal/redis"
import type * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import { Redis } from "ioredis"
import { spawn } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"

export const PG_URL = process.env["TEST_PG_URL"] ?? "postgres://postgres@127.0.0.1:5432/test"
export const REDIS_URL = process.env["TEST_REDIS_URL"] ?? "redis://127.0.0.1:6379"

let counter = 0
/** A name unique to this process and call. */
export const unique = (prefix: string): string =>
  `${prefix}_${process.pid}_${Date.now().toString(36)}_${(counter++).toString(36)}`

/** One "process": its own database pool and cache, sharing Redis (and a key prefix) with the others. */
export const instance = (alias: string, cache: DbCacheOptions) =>
  ManagedRuntime.make(
    DbCache.layer(cache).pipe(Layer.provideMerge(PgDatabase.layer({ url: PG_URL, alias, pool: { min: 2, max: 10 } })))
  )

/** Deletes every key under `prefix`. */
export const dropKeys = async (prefix: string, url = REDIS_URL) => {
  const redis = new Redis(url)
  try {
    let cursor = "0"
    do {
      const [next, keys] = await redis.scan(cursor, "MATCH", `${prefix}*`, "COUNT", 1000)
      cursor = next
      if (keys.length > 0) await redis.del(...keys)
    } while (cursor !== "0")
  } finally {
    redis.disconnect()
  }
}


/** A free TCP port (in the range the test servers use, below the ephemeral ports). */
export const freePort = (from: number): Promise<number> =>
  new Promise((resolve) => {
    const tryPort = (port: number) => {
      const server = createServer()
      server.once("error", () => tryPort(port + 1))
      server.listen(port, "127.0.0.1", () => server.close(() => resolve(port)))
    }
    tryPort(from + Math.floor(Math.random() * 500))
  })

/** A throwaway `redis-server` on its own port and directory (AOF on, fsync always), for kills and restarts. */
export const throwawayRedis = async () => {
  const port = await freePort(27000)
  const dir = mkdtempSync(join(tmpdir(), "dal-redis-"))
  let proc: ReturnType<typeof spawn> | undefined
  const start = async () => {
    proc = spawn("redis-server", [
      "--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--save", "", "--appendonly", "yes",
      "--appendfsync", "always"
    ], { stdio: "ignore" })
    const probe = new Redis({ port, host: "127.0.0.1", lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 })
    probe.on("error", () => {})
    for (let i = 0; i < 100; i++) {
      try {
        await probe.connect()
        await probe.ping()
        probe.disconnect()
        return
      } catch {
        await new Promise((r) => setTimeout(r, 50))
      }
    }
    throw new Error(`redis-server on ${port} did not start`)
  }
  await start()
  return {
    url: `redis://127.0.0.1:${port}`,
    /** SIGKILL: no shutdown, as a crash. */
    kill: () =>
      new Promise<void>((resolve) => {
        if (proc === undefined || proc.exitCode !== null) return resolve()
        proc.once("exit", () => resolve())
        proc.kill("SIGKILL")
      }),
    start,
    /** SIGSTOP: the server keeps its connections open and answers nothing, as a hung one. */
    pause: () => void proc?.kill("SIGSTOP"),
    /** SIGCONT after `pause`. */
    resume: () => void proc?.kill("SIGCONT"),
    remove: async () => {
      proc?.kill("SIGCONT")
      if (proc !== undefined && proc.exitCode === null) {
        await new Promise<void>((resolve) => {
          proc!.once("exit", () => resolve())
          proc!.kill("SIGKILL")
        })
      }
      rmSync(dir, { recursive: true, force: true })
    }
  }
}

/** Runs `effect` on `runtime`. */
export const on = <A, E, R>(runtime: ManagedRuntime.ManagedRuntime<R, unknown>, effect: Effect.Effect<A, E, R>) =>
  runtime.runPromise(effect)

/**
 * A read-through cache of query results in Redis, invalidated by committed
 * writes in every process, stampede-proof, and failing open.
 *
 * - **Entries** are keyed by the statement and its parameters. Each one
 *   records, when it is filled, the versions of the invalidation keys it
 *   depends on (`keys`); a write's invalidation bumps those versions in Redis
 *   after its commit and publishes them. A read checks the versions in the
 *   same round trip as the entry, so an entry filled from data read before a
 *   write committed is never served once that write's invalidation landed.
 * - **A local tier** in each process serves hot entries for `localTtl`
 *   without a round trip; it drops entries as invalidations arrive on the
 *   pub/sub channel, and entirely when the subscription reconnects (messages
 *   may have been missed).
 * - **Stampedes**: concurrent misses of one key run the query once per
 *   process; across processes a short lock (`SET NX PX`) lets one recompute
 *   while the others serve the stale value, or wait briefly. Hot keys refresh
 *   early (XFetch: `now − δ·β·ln(rand) ≥ expiry`, δ the recompute time).
 * - **Fail-open**: every Redis call has a short timeout and runs behind a
 *   circuit breaker; when Redis is down or slow, reads go to the database.
 *   Invalidations made meanwhile wait in the process and are sent before the
 *   cache is used again, and before it closes (up to `closeTimeout`).
 *
 * @since 0.3.0
 */
import type { DbError } from "@effect-dal/core"
import { CircuitBreaker, Db, Invalidation } from "@effect-dal/core"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import type * as MetricLabel from "effect/MetricLabel"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import { createHash, randomUUID } from "node:crypto"
import type { RedisOptions } from "ioredis"
import { decode, encode } from "./internal/codec.js"
import { millis } from "./internal/options.js"
import { openRedis } from "./internal/connection.js"

/**
 * Options of `DbCache.layer`.
 *
 * @since 0.3.0
 */
export interface DbCacheOptions {
  /** The Redis server: a URL or ioredis options. Default `REDIS_URL`, else `redis://127.0.0.1:6379`. */
  readonly redis?: string | RedisOptions | undefined
  /** Namespace of this cache's keys in Redis; default `dal:<alias>:`. Processes sharing a cache share it. */
  readonly prefix?: string | undefined
  /** How long an entry is fresh; default 60 seconds. */
  readonly ttl?: Duration.DurationInput | undefined
  /** How long past `ttl` an entry may still be served while one process recomputes it; default `ttl`. */
  readonly staleFor?: Duration.DurationInput | undefined
  /** How long this process keeps an entry in memory, without asking Redis; default 1 second, 0 for none. */
  readonly localTtl?: Duration.DurationInput | undefined
  /** Entries kept in memory at most; default 10,000. */
  readonly localSize?: number | undefined
  /**
   * The longest a Redis read may take before the cache is bypassed for it;
   * default 50 ms. It is measured from the call, so it includes this
   * process's own event-loop delay under load; a call held up by this
   * process for longer than the timeout itself (its timer fired that late)
   * gets the timeout once more.
   */
  readonly timeout?: Duration.DurationInput | undefined
  /** How long the recompute lock is held at most; default 5 seconds. */
  readonly lockTtl?: Duration.DurationInput | undefined
  /** How long a process without the lock and without a stale value waits for the recompute; default 500 ms. */
  readonly lockWait?: Duration.DurationInput | undefined
  /** XFetch's β: above 1 refreshes earlier; default 1, 0 turns early refresh off. */
  readonly beta?: number | undefined
  /** The breaker around Redis. */
  readonly breaker?: CircuitBreaker.CircuitBreakerOptions | undefined
  /**
   * How long closing the layer waits for invalidations still on their way to
   * Redis (or waiting for it to come back); default 2 seconds. Other processes
   * keep serving what a lost one should have dropped, until `ttl`.
   */
  readonly closeTimeout?: Duration.DurationInput | undefined
}

/**
 * Options of one cached read.
 *
 * @since 0.3.0
 */
export interface CachedOptions {
  /** What the result depends on: `["users"]` (anything in the table) or `{ users: [id] }` (those rows). */
  readonly keys: Invalidation.Keys
  /** Freshness of this entry, over the layer's `ttl`. */
  readonly ttl?: Duration.DurationInput | undefined
}

/**
 * Counters of one cache.
 *
 * @since 0.3.0
 */
export interface CacheStats {
  readonly hits: number
  readonly localHits: number
  readonly misses: number
  readonly staleServed: number
  readonly earlyRefreshes: number
  readonly lockWaits: number
  readonly invalidationsSent: number
  readonly invalidationsReceived: number
  readonly bypasses: number
  /** Statements run against the database to fill entries (or on bypass). */
  readonly recomputes: number
}

/**
 * The cache service.
 *
 * @since 0.3.0
 */
export interface DbCacheService {
  /** The rows of `sql`, from the cache when fresh, else from the database (and then cached). */
  readonly cached: <A extends object = Record<string, unknown>>(
    sql: string,
    params: ReadonlyArray<unknown>,
    options: CachedOptions
  ) => Effect.Effect<ReadonlyArray<A>, DbError.DbError>
  readonly stats: () => CacheStats
  /** Whether Redis is in use now (reachable and subscribed, no invalidation waiting to be sent; the breaker aside). */
  readonly available: () => boolean
  /** How long invalidations took from the writer's commit to this process, ms, as received (last 1,000). */
  readonly deliveryDelays: () => ReadonlyArray<number>
}

/**
 * The cache tag, with `DbCache.cached(...)`.
 *
 * @since 0.3.0
 */
export class DbCache extends Context.Tag("@effect-dal/redis/DbCache")<DbCache, DbCacheService>() {
  /** The rows of `sql` through the cache. */
  static cached = <A extends object = Record<string, unknown>>(
    sql: string,
    params: ReadonlyArray<unknown>,
    options: CachedOptions
  ): Effect.Effect<ReadonlyArray<A>, DbError.DbError, DbCache> =>
    Effect.flatMap(DbCache, (cache) => cache.cached<A>(sql, params, options))

  /** The cache layer over the current `Db`. */
  static layer = (options?: DbCacheOptions): Layer.Layer<DbCache, never, Db> => Layer.scoped(DbCache, make(options))
}

/** Effect metrics of the cache, with the database's labels. */
const metrics = {
  hits: Metric.counter("dal.cache.hits", { incremental: true }),
  misses: Metric.counter("dal.cache.misses", { incremental: true }),
  stale: Metric.counter("dal.cache.stale_served", { incremental: true }),
  earlyRefreshes: Metric.counter("dal.cache.early_refreshes", { incremental: true }),
  lockWaits: Metric.counter("dal.cache.lock_waits", { incremental: true }),
  sent: Metric.counter("dal.cache.invalidations_sent", { incremental: true }),
  received: Metric.counter("dal.cache.invalidations_received", { incremental: true }),
  bypasses: Metric.counter("dal.cache.bypasses", { incremental: true })
}

/** One stored entry: the versions it was filled under, its logical expiry, its recompute time. */
interface Entry {
  readonly versions: ReadonlyArray<string>
  readonly expiresAt: number
  readonly delta: number
  readonly rows: ReadonlyArray<any>
}

interface Flight {
  readonly deferred: Deferred.Deferred<ReadonlyArray<any>, DbError.DbError>
  readonly deps: ReadonlyArray<string>
}

interface LocalEntry {
  readonly rows: ReadonlyArray<any>
  readonly until: number
  readonly deps: ReadonlyArray<string>
}

/** The version keys an entry depends on: a table read on the table's change counter, a row read on its row and whole-table counters. */
const dependencies = (keys: Invalidation.Keys): Array<string> => {
  const { rowTables, rows, tables } = Invalidation.normalize(keys)
  return [...tables.map((t) => `t:${t}`), ...rowTables.map((t) => `a:${t}`), ...rows.map((r) => `r:${r}`)]
}

/** The version keys an invalidation bumps. */
const bumps = (keys: Invalidation.Keys): Array<string> => {
  const { rowTables, rows, tables } = Invalidation.normalize(keys)
  return [...new Set([...tables.flatMap((t) => [`t:${t}`, `a:${t}`]), ...rowTables.map((t) => `t:${t}`), ...rows.map((r) => `r:${r}`)])]
}

/** A Redis call that took too long: treated like an unreachable Redis. */
class RedisTimeout {
  readonly _tag = "RedisTimeout"
}

/**
 * Stores an entry and gives its lock back, in one round trip; the lock only
 * if this process still holds it (it may have expired and been taken since).
 */
const FILL = `redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
return 1`
const FILL_SHA = createHash("sha1").update(FILL).digest("hex")

/**
 * Builds the cache over the current `Db`.
 *
 * @since 0.3.0
 */
export const make = (options: DbCacheOptions = {}): Effect.Effect<DbCacheService, never, Db | Scope.Scope> =>
  Effect.gen(function*() {
    const db = yield* Db
    const prefix = options.prefix ?? `dal:${db.alias}:`
    const ttl = millis(options.ttl, 60_000)
    const staleFor = millis(options.staleFor, ttl)
    const localTtl = millis(options.localTtl, 1_000)
    const localSize = options.localSize ?? 10_000
    const timeout = millis(options.timeout, 50)
    const lockTtl = millis(options.lockTtl, 5_000)
    const lockWait = millis(options.lockWait, 500)
    const beta = options.beta ?? 1
    const closeTimeout = millis(options.closeTimeout, 2_000)
    const channel = `${prefix}invalidate`
    const origin = randomUUID()
    const labels: ReadonlyArray<MetricLabel.MetricLabel> = db.metricLabels
    const count = (metric: Metric.Metric.Counter<number>) => metric.unsafeUpdate(1, labels)

    const stats = {
      hits: 0,
      localHits: 0,
      misses: 0,
      staleServed: 0,
      earlyRefreshes: 0,
      lockWaits: 0,
      invalidationsSent: 0,
      invalidationsReceived: 0,
      bypasses: 0,
      recomputes: 0
    }
    const delays: Array<number> = []

    const open = (required?: RedisOptions) =>
      openRedis(options.redis, {
        // commands fail at once while disconnected (the cache is bypassed) instead of queueing
        enableOfflineQueue: false,
        // commands issued in one tick go out in one write: one syscall for many concurrent reads
        enableAutoPipelining: true,
        maxRetriesPerRequest: 0
      }, required)
    const client = open()
    // the subscription is renewed on "ready" below, where its failure is handled; ioredis's own renewal
    // leaves a rejection unhandled when the connection closes between its ready check and the SUBSCRIBE
    const subscriber = open({ autoResubscribe: false })
    // registered first, so it runs last: no new invalidation comes in while those left are sent
    yield* Effect.addFinalizer(() =>
      Effect.flatMap(
        Effect.promise(async () => {
          const deadline = Date.now() + closeTimeout
          while ((pending.length > 0 || sending.size > 0) && Date.now() < deadline) {
            flushPending()
            // with nothing under way, wait for the reconnection (an empty race would spin without yielding to I/O)
            await (sending.size > 0 ? Promise.allSettled(sending) : new Promise((resolve) => setTimeout(resolve, 10)))
          }
          client.disconnect()
          subscriber.disconnect()
          return pending.length
        }),
        (lost) =>
          lost === 0 ? Effect.void : Effect.logWarning(
            `cache closed with ${lost} invalidation(s) not sent to Redis; other processes may serve their entries until they expire`
          ).pipe(Effect.annotateLogs({ alias: db.alias }))
      )
    )

    const breaker = yield* CircuitBreaker.make(`${db.alias}:redis`, {
      minimumCalls: 5,
      window: { type: "count", size: 20 },
      ...options.breaker
    })

    // --- the local tier ------------------------------------------------------------------------
    const local = new Map<string, LocalEntry>()
    const byDep = new Map<string, Set<string>>()
    const forget = (key: string) => {
      const entry = local.get(key)
      if (entry === undefined) return
      local.delete(key)
      for (const dep of entry.deps) byDep.get(dep)?.delete(key)
    }
    const remember = (key: string, rows: ReadonlyArray<any>, deps: ReadonlyArray<string>, until: number) => {
      if (localTtl <= 0) return
      forget(key)
      if (local.size >= localSize) forget(local.keys().next().value!)
      local.set(key, { rows, until: Math.min(until, Date.now() + localTtl), deps })
      for (const dep of deps) {
        let set = byDep.get(dep)
        if (set === undefined) byDep.set(dep, set = new Set())
        set.add(key)
      }
    }
    /** Invalidations seen per version key: a lookup that saw one happen meanwhile keeps nothing locally. */
    const generations = new Map<string, number>()
    let generation = 0
    const dropLocal = (versionKeys: ReadonlyArray<string>) => {
      generation++
      for (const dep of versionKeys) {
        generations.set(dep, generation)
        const keys = byDep.get(dep)
        if (keys !== undefined) for (const key of [...keys]) forget(key)
      }
      for (const [key, flight] of flights) {
        if (flight.deps.some((d) => versionKeys.includes(d))) flights.delete(key)
      }
    }
    /** The generation of the last resubscription: every lookup begun before it may have missed an invalidation. */
    let resetAt = 0
    const unchangedSince = (deps: ReadonlyArray<string>, since: number) =>
      resetAt <= since && deps.every((d) => (generations.get(d) ?? 0) <= since)
    /** Messages may have been lost: nothing kept or under way here can be trusted. */
    const reset = () => {
      resetAt = ++generation
      local.clear()
      byDep.clear()
      flights.clear()
    }

    // --- Redis calls: a timeout, the breaker, failures counted -----------------------------------
    // one timer per call, no fiber: `Effect.timeoutFail` forks one, which cost more than the Redis call on a busy process
    const call = <A>(run: () => Promise<A>): Effect.Effect<A, RedisTimeout | DbError.CircuitOpen | Error> =>
      breaker.guard(Effect.async<A, RedisTimeout | Error>((resume) => {
        const start = performance.now()
        let settled = false
        const settle = (failed: boolean, outcome: Effect.Effect<A, RedisTimeout | Error>) => {
          if (settled) return
          settled = true
          clearTimeout(timer)
          breaker.record(failed, performance.now() - start)
          resume(outcome)
        }
        // the timeout is decided after the event loop's next poll for I/O (`setImmediate`): when one
        // turn of the loop outlasts the timeout (a long collection, a burst of work), the timers of the
        // next run before its poll reads a reply that may have come long before, and the read was
        // bypassed as timed out (see the test "a reply that came while the process was busy …").
        // A timer that fires late by more than the timeout itself means the process, not Redis, held
        // the call: ioredis writes an auto-pipelined command in a `setImmediate`, so it may not even
        // have gone out yet. The call then gets its timeout once more, from now.
        let again = true
        const expire = () => {
          if (again && performance.now() - start > 2 * timeout) {
            again = false
            timer = setTimeout(expire, timeout)
            return
          }
          setImmediate(() => settle(true, Effect.fail(new RedisTimeout())))
        }
        let timer = setTimeout(expire, timeout)
        let promise: Promise<A>
        try {
          promise = run()
        } catch (e) {
          return settle(true, Effect.fail(e instanceof Error ? e : new Error(String(e))))
        }
        promise.then(
          (a) => settle(false, Effect.succeed(a)),
          (e) => settle(true, Effect.fail(e instanceof Error ? e : new Error(String(e))))
        )
      }))

    // --- invalidations ---------------------------------------------------------------------------
    /** Version keys whose bump is on its way to Redis: reads depending on them go to the database meanwhile. */
    const inFlight = new Map<string, number>()
    /** Invalidations that could not be sent: sent before the cache is used again. */
    let pending: Array<{ readonly keys: ReadonlyArray<string>; readonly at: number }> = []
    /** Sends under way, which closing the cache waits for. */
    const sending = new Set<Promise<void>>()

    /**
     * Bumps the versions and publishes them, in one MULTI. Off the read path,
     * so with a longer timeout and no breaker: a slow Redis must not hold an
     * invalidation back. One that fails is kept and sent again.
     */
    const send = (versionKeys: ReadonlyArray<string>, at: number) => {
      for (const k of versionKeys) inFlight.set(k, (inFlight.get(k) ?? 0) + 1)
      const tx = client.multi()
      for (const k of versionKeys) tx.incr(prefix + k)
      tx.publish(channel, JSON.stringify({ origin, at, keys: versionKeys }))
      const exec = Effect.tryPromise(() => tx.exec()).pipe(
        Effect.timeoutFail({ duration: Math.max(1_000, timeout), onTimeout: () => new RedisTimeout() })
      )
      const sent: Promise<void> = Effect.runPromiseExit(exec).then((exit) => {
        sending.delete(sent)
        for (const k of versionKeys) {
          const n = inFlight.get(k)! - 1
          if (n === 0) inFlight.delete(k)
          else inFlight.set(k, n)
        }
        if (exit._tag === "Failure" || exit.value === null) pending.push({ keys: versionKeys, at })
        else {
          stats.invalidationsSent++
          count(metrics.sent)
        }
      })
      sending.add(sent)
    }
    const flushPending = () => {
      if (pending.length === 0 || client.status !== "ready") return
      const keys = [...new Set(pending.flatMap((p) => p.keys))]
      const at = Math.min(...pending.map((p) => p.at))
      pending = []
      send(keys, at)
    }
    // what could not be sent is sent again as soon as Redis answers
    const retry = setInterval(flushPending, 50)
    yield* Effect.addFinalizer(() => Effect.sync(() => clearInterval(retry)))

    const unsubscribe = db.invalidations.subscribe((keys) => {
      const versionKeys = bumps(keys)
      dropLocal(versionKeys)
      send(versionKeys, Date.now())
    })
    yield* Effect.addFinalizer(() => Effect.sync(unsubscribe))

    subscriber.on("message", (_channel: string, text: string) => {
      let message: { origin: string; at: number; keys: Array<string> }
      try {
        message = JSON.parse(text)
      } catch {
        return
      }
      stats.invalidationsReceived++
      count(metrics.received)
      if (message.origin !== origin) {
        delays.push(Date.now() - message.at)
        if (delays.length > 1_000) delays.shift()
      }
      dropLocal(message.keys)
    })
    // the cache is used only while this process hears every invalidation: subscribed, and (re)subscribed
    // with an empty local tier, since messages sent while it was away are lost
    let subscribed = false
    let subscribedOnce = false
    const subscribe = () => {
      subscriber.subscribe(channel).then(() => {
        if (subscribedOnce) reset()
        subscribedOnce = true
        subscribed = true
      }, () => {})
    }
    subscriber.on("ready", subscribe)
    subscriber.on("close", () => {
      subscribed = false
    })
    if (subscriber.status === "ready") subscribe()
    client.on("ready", flushPending)

    // the breaker is not consulted here: a read it refuses fails at once (and bypasses), and only reads let it recover
    const available = () => subscribed && client.status === "ready" && pending.length === 0

    // a cache that starts while Redis is down starts bypassed; one that is up is used from the first read
    yield* Effect.promise(async () => {
      for (let waited = 0; waited < 1_000 && !(subscribed && client.status === "ready"); waited += 10) {
        await new Promise((resolve) => setTimeout(resolve, 10))
      }
    })

    // --- reads -------------------------------------------------------------------------------------
    const hash = (sql: string, params: ReadonlyArray<unknown>) =>
      createHash("sha1").update(sql.replace(/\s+/g, " ").trim()).update("\0").update(encode(params)).digest("base64url")

    /**
     * Single flight per process: concurrent lookups of one key share one. A
     * flight whose data an invalidation made stale takes no new readers
     * (they start a lookup of their own), and its result is not kept locally.
     */
    const flights = new Map<string, Flight>()
    const singleFlight = <A>(key: string, deps: ReadonlyArray<string>, work: Effect.Effect<ReadonlyArray<A>, DbError.DbError>) => {
      const flying = flights.get(key)
      if (flying !== undefined) return Deferred.await(flying.deferred) as Effect.Effect<ReadonlyArray<A>, DbError.DbError>
      const flight: Flight = { deferred: Deferred.unsafeMake<ReadonlyArray<any>, DbError.DbError>(undefined as never), deps }
      flights.set(key, flight)
      return Effect.onExit(work, (exit) =>
        Effect.sync(() => {
          if (flights.get(key) === flight) flights.delete(key)
          Deferred.unsafeDone(flight.deferred, exit)
        }))
    }

    const query = <A extends object>(sql: string, params: ReadonlyArray<unknown>) =>
      Effect.suspend(() => {
        stats.recomputes++
        return db.execute<A>(sql, params)
      })
    /** Redis is not used for this read: the database answers (still once per key at a time in this process). */
    const bypass = <A extends object>(key: string, deps: ReadonlyArray<string>, sql: string, params: ReadonlyArray<unknown>) => {
      stats.bypasses++
      count(metrics.bypasses)
      return singleFlight<A>(key, deps, query<A>(sql, params))
    }

    /** Runs the query and stores the result under the versions read before it ran. */
    const fill = <A extends object>(
      key: string,
      sql: string,
      params: ReadonlyArray<unknown>,
      deps: ReadonlyArray<string>,
      versions: ReadonlyArray<string>,
      entryTtl: number,
      since: number
    ) =>
      Effect.gen(function*() {
        const start = Date.now()
        const rows = yield* query<A>(sql, params)
        const now = Date.now()
        const entry: Entry = { versions, expiresAt: now + entryTtl, delta: now - start, rows }
        yield* Effect.ignore(call(() =>
          client.evalsha(FILL_SHA, 2, prefix + "e:" + key, prefix + "l:" + key, encode(entry), entryTtl + staleFor, origin)
            .catch(() => client.eval(FILL, 2, prefix + "e:" + key, prefix + "l:" + key, encode(entry), entryTtl + staleFor, origin))
        ))
        if (unchangedSince(deps, since)) remember(key, rows, deps, entry.expiresAt)
        return rows
      })

    const lock = (key: string) =>
      Effect.map(
        Effect.option(call(() => client.set(prefix + "l:" + key, origin, "PX", lockTtl, "NX"))),
        (r) => Option.isSome(r) && r.value === "OK"
      )

    /** The entry and the current versions of its dependencies, in one round trip. */
    const read = (key: string, deps: ReadonlyArray<string>) =>
      Effect.map(call(() => client.mget(prefix + "e:" + key, ...deps.map((d) => prefix + d))), ([raw, ...current]) => {
        const versions = current.map((v) => v ?? "0")
        const entry = raw === null || raw === undefined ? undefined : decode(raw) as Entry
        const valid = entry !== undefined && entry.versions.length === versions.length &&
          entry.versions.every((v, i) => v === versions[i])
        return { entry: valid ? entry : undefined, versions }
      })

    const cached = <A extends object>(
      sql: string,
      params: ReadonlyArray<unknown>,
      cachedOptions: CachedOptions
    ): Effect.Effect<ReadonlyArray<A>, DbError.DbError> =>
      Effect.suspend(() => {
        const key = hash(sql, params)
        const localEntry = local.get(key)
        const now = Date.now()
        if (localEntry !== undefined && localEntry.until > now) {
          stats.hits++
          stats.localHits++
          count(metrics.hits)
          return Effect.succeed(localEntry.rows as ReadonlyArray<A>)
        }
        // a computation of this key is under way here: its result is what this read would get
        const flying = flights.get(key)
        if (flying !== undefined) return Deferred.await(flying.deferred) as Effect.Effect<ReadonlyArray<A>, DbError.DbError>
        const deps = dependencies(cachedOptions.keys)
        if (!available() || deps.some((d) => inFlight.has(d))) return bypass<A>(key, deps, sql, params)
        const entryTtl = millis(cachedOptions.ttl, ttl)
        const since = generation

        /** The entry is missing or stale: recompute it under the lock, or serve the stale value, or wait a little. */
        const recompute = (versions: ReadonlyArray<string>, stale: Entry | undefined) =>
          Effect.gen(function*() {
            if (yield* lock(key)) return yield* fill<A>(key, sql, params, deps, versions, entryTtl, since)
            if (stale !== undefined) {
              stats.staleServed++
              count(metrics.stale)
              return stale.rows as ReadonlyArray<A>
            }
            stats.lockWaits++
            count(metrics.lockWaits)
            const deadline = Date.now() + lockWait
            while (Date.now() < deadline) {
              yield* Effect.sleep(10)
              const again = yield* Effect.option(read(key, deps))
              if (Option.isNone(again)) break
              if (again.value.entry !== undefined) return again.value.entry.rows as ReadonlyArray<A>
            }
            return yield* fill<A>(key, sql, params, deps, versions, entryTtl, since)
          })

        // one lookup per key at a time in this process: readers arriving meanwhile share its result
        return singleFlight<A>(
          key,
          deps,
          Effect.flatMap(Effect.either(read(key, deps)), (result): Effect.Effect<ReadonlyArray<A>, DbError.DbError> => {
            if (result._tag === "Left") {
              stats.bypasses++
              count(metrics.bypasses)
              return query<A>(sql, params)
            }
            const { entry, versions } = result.right
            const at = Date.now()
            if (entry === undefined) {
              stats.misses++
              count(metrics.misses)
              return recompute(versions, undefined)
            }
            if (at >= entry.expiresAt) return recompute(versions, entry)
            stats.hits++
            count(metrics.hits)
            if (unchangedSince(deps, since)) remember(key, entry.rows, deps, entry.expiresAt)
            // XFetch: the closer to expiry, and the slower to recompute, the likelier an early refresh
            if (beta > 0 && at - entry.delta * beta * Math.log(Math.random()) >= entry.expiresAt) {
              stats.earlyRefreshes++
              count(metrics.earlyRefreshes)
              return Effect.as(
                Effect.forkDaemon(Effect.ignore(singleFlight(`refresh:${key}`, deps, recompute(versions, entry)))),
                entry.rows as ReadonlyArray<A>
              )
            }
            return Effect.succeed(entry.rows as ReadonlyArray<A>)
          })
        )
      })

    return {
      cached,
      stats: () => ({ ...stats }),
      available,
      deliveryDelays: () => [...delays]
    } satisfies DbCacheService
  })

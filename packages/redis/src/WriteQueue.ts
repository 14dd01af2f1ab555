/**
 * A write-behind queue for one table, on a Redis Stream: `offer` returns once
 * the row is in Redis, and a flusher inserts rows in batches, idempotently
 * by id, so that delivery is at least once and the effect exactly once.
 *
 * - **Durable enqueue**: `offer` returns after Redis acknowledged the `XADD`.
 *   How durable that is, is Redis's persistence: with AOF and
 *   `appendfsync always`, an acknowledged row survives a Redis crash; with the
 *   default `everysec`, up to a second of them may not.
 * - **Batches**: the flusher reads up to `maxBatch` rows (a consumer group, so
 *   several processes share the work) every `flushInterval`, and writes them
 *   with one `insertMany` that skips ids already there (`mode: "insert"`), or
 *   updates them (`mode: "upsert"`, the last write of an id in a batch wins).
 *   Only then are the rows acknowledged and removed from the stream. A
 *   process that dies mid-batch leaves its rows pending; after `claimIdle`
 *   another flusher (or the same one restarted) claims and writes them again,
 *   which changes nothing for rows already written.
 * - **Failures**: a batch that fails transiently (connection, timeout,
 *   serialization) is retried with backoff, however long the database is
 *   away. A batch that fails for a row (a constraint or data error) is split,
 *   and each row that fails on its own goes to the dead-letter stream with
 *   its error; the others are written.
 * - **Back-pressure**: at most `maxPending` rows wait in the stream; `offer`
 *   waits for room, or fails with `QueueFull` after its `timeout`.
 * - **Shutdown**: closing the layer stops taking new batches and flushes what
 *   is in the stream, within `shutdownTimeout`.
 *
 * @since 0.3.0
 */
import type { DbError } from "@effect-dal/core"
import { Db, DbError as DbErrors } from "@effect-dal/core"
import type * as Context from "effect/Context"
import * as Data from "effect/Data"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import type * as Scope from "effect/Scope"
import type { RedisOptions } from "ioredis"
import { hostname } from "node:os"
import { decode, encode } from "./internal/codec.js"
import { millis } from "./internal/options.js"
import { openRedis } from "./internal/connection.js"

/**
 * Options of a write-behind queue.
 *
 * @since 0.3.0
 */
export interface WriteQueueOptions {
  /** The target table. */
  readonly table: string
  /** The id column: rows are written idempotently by it (a primary key or unique column). Default `id`. */
  readonly idColumn?: string | undefined
  /** `insert` (default): an id already written is skipped. `upsert`: it is updated, the last write winning. */
  readonly mode?: "insert" | "upsert" | undefined
  /** The Redis server: a URL or ioredis options. Default `REDIS_URL`, else `redis://127.0.0.1:6379`. */
  readonly redis?: string | RedisOptions | undefined
  /** The stream's key; default `dal:<alias>:queue:<table>`. Processes that share it share the queue. */
  readonly stream?: string | undefined
  /** How often the flusher writes what arrived; default 100 ms. */
  readonly flushInterval?: Duration.DurationInput | undefined
  /** Rows per batch at most; default 1,000. */
  readonly maxBatch?: number | undefined
  /** Rows waiting in the stream at most, over every process; default 100,000. */
  readonly maxPending?: number | undefined
  /** How long a row may stay claimed by a flusher that does not acknowledge it before another takes it; default 10 s. */
  readonly claimIdle?: Duration.DurationInput | undefined
  /** How long closing waits for the stream to drain; default 10 s. */
  readonly shutdownTimeout?: Duration.DurationInput | undefined
  /** Run a flusher in this process (default), or only offer. */
  readonly flush?: boolean | undefined
}

/**
 * `offer` found the queue full for longer than its timeout.
 *
 * @since 0.3.0
 */
export class QueueFull extends Data.TaggedError("QueueFull")<{ readonly stream: string; readonly pending: number }> {
  override get message(): string {
    return `write queue ${this.stream} is full (${this.pending} rows waiting)`
  }
}

/**
 * Redis could not take the row (down, or refused it): nothing was enqueued.
 *
 * @since 0.3.0
 */
export class QueueUnavailable extends Data.TaggedError("QueueUnavailable")<{ readonly stream: string; readonly cause: unknown }> {
  override get message(): string {
    return `write queue ${this.stream} is unavailable: ${this.cause instanceof Error ? this.cause.message : String(this.cause)}`
  }
}

/**
 * A row that could not be written, kept with its error.
 *
 * @since 0.3.0
 */
export interface DeadLetter {
  readonly id: string
  readonly row: Readonly<Record<string, unknown>>
  readonly error: string
  readonly at: number
}

/**
 * Counters of one queue in this process.
 *
 * @since 0.3.0
 */
export interface QueueStats {
  readonly offered: number
  readonly batches: number
  readonly rows: number
  readonly retries: number
  readonly deadLetters: number
}

/**
 * A write-behind queue.
 *
 * @since 0.3.0
 */
export interface WriteQueue {
  readonly stream: string
  /**
   * Enqueues `row` durably (returns once Redis has it). `id` defaults to the
   * row's id column. With `timeout`, a full queue fails with `QueueFull`
   * after that long; without, `offer` waits for room.
   */
  readonly offer: (
    row: Readonly<Record<string, unknown>>,
    options?: { readonly id?: string | number | undefined; readonly timeout?: Duration.DurationInput | undefined }
  ) => Effect.Effect<void, QueueFull | QueueUnavailable>
  /** Rows in the stream now (waiting or being written), and the age of the oldest, ms. */
  readonly depth: Effect.Effect<{ readonly rows: number; readonly lagMillis: number }, QueueUnavailable>
  /** The dead letters, oldest first. */
  readonly deadLetters: Effect.Effect<ReadonlyArray<DeadLetter>, QueueUnavailable>
  readonly stats: () => QueueStats
}

const metrics = {
  offered: Metric.counter("dal.queue.offered", { incremental: true }),
  batches: Metric.counter("dal.queue.batches", { incremental: true }),
  rows: Metric.counter("dal.queue.rows", { incremental: true }),
  retries: Metric.counter("dal.queue.retries", { incremental: true }),
  deadLetters: Metric.counter("dal.queue.dead_letters", { incremental: true }),
  depth: Metric.gauge("dal.queue.depth"),
  lag: Metric.gauge("dal.queue.lag_seconds")
}

/** XADD only while the stream holds fewer than ARGV[1] entries: the budget, atomic over every process. */
const OFFER = `if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return false end
return redis.call('XADD', KEYS[1], '*', 'id', ARGV[2], 'row', ARGV[3], 'at', ARGV[4])`

type Entry = readonly [id: string, fields: ReadonlyArray<string>]

const fieldsOf = (fields: ReadonlyArray<string>): Record<string, string> => {
  const out: Record<string, string> = {}
  for (let i = 0; i + 1 < fields.length; i += 2) out[fields[i]!] = fields[i + 1]!
  return out
}

/**
 * Errors a retry may cure: the batch waits and is tried again (a write whose
 * outcome is unknown too: it is idempotent). The rest are the rows' own.
 */
const isTransient = (error: DbError.DbError) =>
  error.transient || error._tag === "ConnectionError" || error._tag === "OutcomeUnknown" || error._tag === "PoolClosed"

/**
 * Makes a write-behind queue on the current `Db`, its flusher running in the scope.
 *
 * @since 0.3.0
 */
export const make = (options: WriteQueueOptions): Effect.Effect<WriteQueue, never, Db | Scope.Scope> =>
  Effect.gen(function*() {
    const db = yield* Db
    const idColumn = options.idColumn ?? "id"
    const stream = options.stream ?? `dal:${db.alias}:queue:${options.table}`
    const deadStream = `${stream}:dead`
    const group = "dal"
    const consumer = `${hostname()}:${process.pid}:${Math.random().toString(36).slice(2, 8)}`
    const flushInterval = millis(options.flushInterval, 100)
    const maxBatch = options.maxBatch ?? 1_000
    const maxPending = options.maxPending ?? 100_000
    const claimIdle = millis(options.claimIdle, 10_000)
    const shutdownTimeout = millis(options.shutdownTimeout, 10_000)
    const labels = [...db.metricLabels]
    const stats = { offered: 0, batches: 0, rows: 0, retries: 0, deadLetters: 0 }

    const client = openRedis(options.redis, { maxRetriesPerRequest: 1 })
    // the flusher's blocking reads get a connection of their own
    const reader = openRedis(options.redis, { maxRetriesPerRequest: 1 })

    const redis = <A>(run: () => Promise<A>): Effect.Effect<A, QueueUnavailable> =>
      Effect.tryPromise({ try: run, catch: (cause) => new QueueUnavailable({ stream, cause }) })

    const depth = Effect.gen(function*() {
      const [length, first] = yield* redis(() =>
        Promise.all([client.xlen(stream), client.xrange(stream, "-", "+", "COUNT", 1)])
      )
      const at = first[0] === undefined ? undefined : Number(fieldsOf(first[0][1])["at"])
      const lagMillis = at === undefined ? 0 : Math.max(0, Date.now() - at)
      metrics.depth.unsafeUpdate(length, labels)
      metrics.lag.unsafeUpdate(lagMillis / 1000, labels)
      return { rows: length, lagMillis }
    })

    const offer: WriteQueue["offer"] = (row, offerOptions) =>
      Effect.gen(function*() {
        const id = String(offerOptions?.id ?? row[idColumn])
        const payload = encode(row)
        const deadline = offerOptions?.timeout === undefined ? undefined : Date.now() + millis(offerOptions.timeout, 0)
        let wait = 5
        while (true) {
          const added = yield* redis(() => client.eval(OFFER, 1, stream, maxPending, id, payload, Date.now()))
          if (added !== null) break
          if (deadline !== undefined && Date.now() >= deadline) {
            return yield* Effect.fail(new QueueFull({ stream, pending: maxPending }))
          }
          // back-pressure: wait for the flusher to make room
          yield* Effect.sleep(deadline === undefined ? wait : Math.max(1, Math.min(wait, deadline - Date.now())))
          wait = Math.min(wait * 2, 100)
        }
        stats.offered++
        metrics.offered.unsafeUpdate(1, labels)
      })

    // --- the flusher -------------------------------------------------------------------------------
    const write = (rows: ReadonlyArray<Readonly<Record<string, unknown>>>) =>
      db.insertMany(options.table, rows, {
        onConflict: { keys: [idColumn], action: options.mode === "upsert" ? "update" : "ignore" }
      })

    const deadLetter = (entry: Entry, error: unknown) =>
      Effect.gen(function*() {
        const fields = fieldsOf(entry[1])
        const text = error instanceof Error ? error.message : String(error)
        yield* redis(() =>
          client.multi().xadd(deadStream, "*", "id", fields["id"]!, "row", fields["row"]!, "error", text, "at", String(Date.now()))
            .xack(stream, group, entry[0]).xdel(stream, entry[0]).exec()
        )
        stats.deadLetters++
        metrics.deadLetters.unsafeUpdate(1, labels)
        yield* Effect.logWarning(`write queue: row ${fields["id"]} dead-lettered: ${text}`).pipe(Effect.annotateLogs({ stream }))
      })

    const acknowledge = (entries: ReadonlyArray<Entry>) => {
      const ids = entries.map((e) => e[0])
      return redis(() => client.multi().xack(stream, group, ...ids).xdel(stream, ...ids).exec())
    }

    /** The rows of a batch, one per id: the first of an id for inserts, the last for upserts. */
    const rowsOf = (entries: ReadonlyArray<Entry>) => {
      const byId = new Map<string, Readonly<Record<string, unknown>>>()
      for (const entry of entries) {
        const fields = fieldsOf(entry[1])
        if (options.mode === "upsert" || !byId.has(fields["id"]!)) {
          byId.delete(fields["id"]!)
          byId.set(fields["id"]!, decode(fields["row"]!) as Record<string, unknown>)
        }
      }
      return [...byId.values()]
    }

    /**
     * Writes a batch: retried while the failure is transient; split when a
     * row is at fault, down to the rows that fail alone, which are dead-lettered.
     */
    const flushEntries = (entries: ReadonlyArray<Entry>): Effect.Effect<void, QueueUnavailable> =>
      Effect.gen(function*() {
        if (entries.length === 0) return
        let delay = 50
        while (true) {
          const result = yield* Effect.either(write(rowsOf(entries)))
          if (result._tag === "Right") {
            yield* acknowledge(entries)
            stats.batches++
            stats.rows += entries.length
            metrics.batches.unsafeUpdate(1, labels)
            metrics.rows.unsafeUpdate(entries.length, labels)
            return
          }
          const error = result.left
          if (DbErrors.isDbError(error) && isTransient(error)) {
            stats.retries++
            metrics.retries.unsafeUpdate(1, labels)
            yield* Effect.sleep(delay * (0.5 + Math.random()))
            delay = Math.min(delay * 2, 5_000)
            continue
          }
          if (entries.length === 1) return yield* deadLetter(entries[0]!, error)
          const half = Math.ceil(entries.length / 2)
          yield* flushEntries(entries.slice(0, half))
          return yield* flushEntries(entries.slice(half))
        }
      })

    const ensureGroup = redis(() => client.xgroup("CREATE", stream, group, "0", "MKSTREAM")).pipe(
      Effect.catchAll((e) =>
        String((e.cause as Error)?.message ?? "").includes("BUSYGROUP") ? Effect.void : Effect.fail(e)
      )
    )

    let stopping = false
    /** One round: rows claimed from flushers that went quiet, then new rows, written as one batch. */
    const round = Effect.gen(function*() {
      const claimed = yield* redis(() =>
        client.xautoclaim(stream, group, consumer, claimIdle, "0-0", "COUNT", maxBatch) as Promise<[string, Array<Entry>]>
      )
      const room = maxBatch - claimed[1].length
      const fresh = room <= 0 ? null : yield* redis(() =>
        reader.xreadgroup(
          "GROUP",
          group,
          consumer,
          "COUNT",
          room,
          "BLOCK",
          stopping ? 1 : flushInterval,
          "STREAMS",
          stream,
          ">"
        ) as Promise<Array<[string, Array<Entry>]> | null>
      )
      const entries = [...claimed[1].filter((e) => e[1] !== null), ...(fresh?.[0]?.[1] ?? [])]
      yield* flushEntries(entries)
      return entries.length
    })

    const flusher = Effect.gen(function*() {
      let gauged = 0
      while (true) {
        // the depth and lag gauges follow once a second
        if (Date.now() - gauged > 1_000) {
          gauged = Date.now()
          yield* Effect.ignore(depth)
        }
        const ok = yield* Effect.either(Effect.zipRight(ensureGroup, round))
        if (ok._tag === "Left") {
          // Redis is away: the rows wait there; try again shortly
          yield* Effect.sleep(200)
        } else if (ok.right === 0 && flushInterval > 0) yield* Effect.yieldNow()
      }
    })

    // finalizers run last-added first: the connections close after the drain below
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        client.disconnect()
        reader.disconnect()
      })
    )
    if (options.flush !== false) {
      const fiber = yield* Effect.forkDaemon(flusher)
      yield* Effect.addFinalizer(() =>
        Effect.gen(function*() {
          // drain what is in the stream, within the timeout, then stop
          stopping = true
          const deadline = Date.now() + shutdownTimeout
          while (Date.now() < deadline) {
            const left = yield* Effect.either(depth)
            if (left._tag === "Left" || left.right.rows === 0) break
            yield* Effect.sleep(20)
          }
          yield* Fiber.interrupt(fiber)
        })
      )
    }
    return {
      stream,
      offer,
      depth,
      deadLetters: Effect.map(redis(() => client.xrange(deadStream, "-", "+")), (entries) =>
        entries.map(([, raw]) => {
          const fields = fieldsOf(raw)
          return {
            id: fields["id"]!,
            row: decode(fields["row"]!) as Record<string, unknown>,
            error: fields["error"]!,
            at: Number(fields["at"])
          }
        })),
      stats: () => ({ ...stats })
    } satisfies WriteQueue
  })

/**
 * The queue as a layer under your own tag, one per target table:
 * `class Events extends Context.Tag("Events")<Events, WriteQueue.WriteQueue>() {}`,
 * then `WriteQueue.layer(Events, { table: "events" })`.
 *
 * @since 0.3.0
 */
export const layer = <I>(tag: Context.Tag<I, WriteQueue>, options: WriteQueueOptions): Layer.Layer<I, never, Db> =>
  Layer.scoped(tag, make(options))

/**
 * Sharding: keys map to a fixed number of virtual shards with PostgreSQL's
 * own hash-partition function, so that the mapping agrees with a table
 * `PARTITION BY HASH` into `virtualShards` partitions (and with PgDog's and
 * Citus-style layouts): moving to or from native partitioning needs no
 * rehash. A key that cannot be hashed is a typed error, never a broadcast.
 *
 * @since 0.3.0
 */
import type { DbError, DbService, ExecuteOptions } from "@effect-dal/core"
import { Db, DbModule } from "@effect-dal/core"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Config from "effect/Config"
import * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import type * as Fiber from "effect/Fiber"
import type * as FiberStatus from "effect/FiberStatus"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as MetricLabel from "effect/MetricLabel"
import * as Schedule from "effect/Schedule"
import { randomBytes } from "node:crypto"
import type { RecoveryReport } from "./internal/atomicCommit.js"
import { AtomicCommitAborted, currentAtomic, makeCoordinator, twoPhaseMetrics } from "./internal/atomicCommit.js"
import type { MoveOptions, MoveReport } from "./internal/move.js"
import { acknowledge, createRoutersTable, move as moveShard, routersTable } from "./internal/move.js"
import type { PartitionHash } from "./internal/pgHash.js"
import { hashInt8, hashSafeInteger, hashText, hashUuid } from "./internal/pgHash.js"

export {
  /** @since 0.3.0 */
  AtomicCommitAborted
}
export type {
  /** @since 0.3.0 */
  MoveOptions,
  /** @since 0.3.0 */
  MoveReport,
  /** @since 0.3.0 */
  RecoveryReport
}

/**
 * The PostgreSQL type of the shard key column: `bigint` (also `int`,
 * `smallint`: their values hash alike), `text` (a deterministic collation;
 * `varchar` too) or `uuid`.
 *
 * @since 0.3.0
 */
export type KeyType = "bigint" | "text" | "uuid"

/**
 * A shard key value: an integer (`number` or `bigint`) for `bigint`, a
 * string for `text` and `uuid`.
 *
 * @since 0.3.0
 */
export type KeyValue = number | bigint | string

/**
 * The key could not be routed: missing, of the wrong type, or not a valid
 * value of the key's type. Nothing was sent anywhere.
 *
 * @since 0.3.0
 */
export class ShardKeyError extends Data.TaggedError("ShardKeyError")<{
  readonly keyType: KeyType
  readonly detail: string
}> {
  /** @since 0.3.0 */
  readonly category = "invalidInput" as const
  /** @since 0.3.0 */
  readonly transient = false
  override get message(): string {
    return `shard key (${this.keyType}): ${this.detail}`
  }
}

/**
 * A transaction open on one node reached for another. Refused before
 * anything is sent to the second node: one node's transaction cannot make
 * another node's writes atomic with its own.
 *
 * @since 0.3.0
 */
export class CrossShardTransaction extends Data.TaggedError("CrossShardTransaction")<{
  readonly from: string
  readonly to: string
}> {
  /** @since 0.3.0 */
  readonly category = "invalidInput" as const
  /** @since 0.3.0 */
  readonly transient = false
  override get message(): string {
    return `a transaction on shard node "${this.from}" reached for node "${this.to}": cross-shard transactions are refused ` +
      `(keep a transaction's keys on one node, or make it atomic across nodes with Sharding.withAtomicTransaction)`
  }
}

/**
 * A call waited longer than `freezeTimeout` for a virtual shard that is being
 * moved (or whose move stopped part-way: run `move` again to finish it).
 * Nothing was sent.
 *
 * @since 0.3.0
 */
export class ShardFrozen extends Data.TaggedError("ShardFrozen")<{
  readonly vshard: number | undefined
  readonly waitedMillis: number
}> {
  /** @since 0.3.0 */
  readonly category = "unavailable" as const
  /** @since 0.3.0 */
  readonly transient = true
  override get message(): string {
    return `${this.vshard === undefined ? "a fan-out" : `virtual shard ${this.vshard}`} waited ${this.waitedMillis} ms for a shard move to finish`
  }
}

/**
 * The router's map is older than its lease and could not be read again:
 * routing by it could reach a node that no longer owns the key's shard.
 * Nothing was sent.
 *
 * @since 0.3.0
 */
export class ShardMapStale extends Data.TaggedError("ShardMapStale")<{
  readonly ageMillis: number
  readonly cause: unknown
}> {
  /** @since 0.3.0 */
  readonly category = "unavailable" as const
  /** @since 0.3.0 */
  readonly transient = true
  override get message(): string {
    return `the shard map was last read ${this.ageMillis} ms ago and cannot be read now: routing by it is refused`
  }
}

/**
 * A move could not be done; `stage` says how far it got. Before `cutover`
 * the virtual shard stays where it was; from `cutover` on it stays frozen
 * until `move` is run again to finish.
 *
 * @since 0.3.0
 */
export class ShardMoveFailed extends Data.TaggedError("ShardMoveFailed")<{
  readonly vshard: number
  readonly stage: "check" | "copy" | "freeze" | "cutover" | "cleanup"
  readonly detail: string
  readonly cause?: unknown
}> {
  /** @since 0.3.0 */
  readonly category = "unavailable" as const
  /** @since 0.3.0 */
  readonly transient = false
  override get message(): string {
    return `moving virtual shard ${this.vshard} failed at ${this.stage}: ${this.detail}`
  }
}

/**
 * What a routed call can fail with, besides its own errors.
 *
 * @since 0.3.0
 */
export type RoutingError = ShardKeyError | CrossShardTransaction | ShardFrozen | ShardMapStale | DbError.DbError

/**
 * The sharding metrics, labelled `sharding.name`. Each node's pool, breaker
 * and statements have their own metrics, labelled by the node's alias.
 *
 * @since 0.3.0
 */
export const metrics = {
  /** Fan-out calls. */
  fanOuts: Metric.counter("dal.sharding.fan_outs", { incremental: true }),
  /** Fan-outs that returned without some nodes (`allowPartial`). */
  partialResults: Metric.counter("dal.sharding.partial_results", { incremental: true }),
  /** Keys refused as `ShardKeyError`. */
  keyErrors: Metric.counter("dal.sharding.key_errors", { incremental: true }),
  /** Cross-shard transactions refused. */
  crossShardRefusals: Metric.counter("dal.sharding.cross_shard_refusals", { incremental: true }),
  /** The version of the map the router uses. */
  mapVersion: Metric.gauge("dal.sharding.map_version"),
  /** Virtual shards moved. */
  moves: Metric.counter("dal.sharding.moves", { incremental: true }),
  /** Rows a move copied. */
  movedRows: Metric.counter("dal.sharding.moved_rows", { incremental: true }),
  /** How long the last move held its virtual shard frozen, ms. */
  moveFreezeMillis: Metric.gauge("dal.sharding.move_freeze_ms"),
  ...twoPhaseMetrics
} as const

/** The default number of virtual shards. @since 0.3.0 */
export const DEFAULT_VIRTUAL_SHARDS = 64

const UUID = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i
const INT8_MIN = -(1n << 63n)
const INT8_MAX = (1n << 63n) - 1n

/** The key's hash, or why it has none. */
const hashOf = (key: unknown, keyType: KeyType): Either.Either<PartitionHash, ShardKeyError> => {
  const fail = (detail: string) => Either.left(new ShardKeyError({ keyType, detail }))
  if (key === undefined || key === null) return fail("the key is missing")
  switch (keyType) {
    case "bigint": {
      // the common case, a safe integer, needs no BigInt
      if (typeof key === "number" && Number.isSafeInteger(key)) return Either.right(hashSafeInteger(key))
      let value: bigint
      if (typeof key === "bigint") value = key
      else if (typeof key === "string" && /^-?\d+$/.test(key)) value = BigInt(key)
      else return fail(`${typeof key === "number" ? String(key) : typeof key} is not an integer`)
      if (value < INT8_MIN || value > INT8_MAX) return fail(`${value} is out of the bigint range`)
      return Either.right(hashInt8(value))
    }
    case "text":
      return typeof key === "string" ? Either.right(hashText(key)) : fail(`a ${typeof key} is not text`)
    case "uuid": {
      if (typeof key !== "string" || !UUID.test(key)) return fail(`${typeof key === "string" ? `"${key}"` : typeof key} is not a uuid`)
      return Either.right(hashUuid(Buffer.from(key.replace(/-/g, ""), "hex")))
    }
  }
}

/**
 * PostgreSQL's partition hash of a one-column key (`hash_combine64(0,
 * extended_hash(key, HASH_PARTITION_SEED))`), as an unsigned 64-bit bigint.
 *
 * @since 0.3.0
 */
export const partitionHash = (key: unknown, keyType: KeyType): Either.Either<bigint, ShardKeyError> =>
  Either.map(hashOf(key, keyType), (hash) => hash.value())

/**
 * The virtual shard of `key`: its partition hash modulo `virtualShards`,
 * the remainder of the hash partition (`MODULUS virtualShards`) PostgreSQL
 * would put the row in.
 *
 * @since 0.3.0
 */
export const shardOf = (
  key: unknown,
  options: { readonly keyType: KeyType; readonly virtualShards?: number | undefined }
): Either.Either<number, ShardKeyError> => {
  const shards = options.virtualShards ?? DEFAULT_VIRTUAL_SHARDS
  return Either.map(hashOf(key, options.keyType), (hash) => hash.remainder(shards))
}

/**
 * The versioned map from virtual shard to node: `assignment[vshard]` is a
 * node name.
 *
 * @since 0.3.0
 */
export interface ShardMap {
  readonly version: number
  readonly assignment: ReadonlyArray<string>
  /** Virtual shards being moved: their routed calls, and every fan-out, wait until they are not. */
  readonly frozen?: ReadonlyArray<number> | undefined
}

/**
 * An even map: virtual shards dealt to `nodes` in turn.
 *
 * @since 0.3.0
 */
export const evenMap = (nodes: ReadonlyArray<string>, virtualShards = DEFAULT_VIRTUAL_SHARDS, version = 1): ShardMap => ({
  version,
  assignment: Array.from({ length: virtualShards }, (_, i) => nodes[i % nodes.length]!)
})

/**
 * The aggregates a fan-out can combine across nodes; `avg` is combined from
 * each node's sum and count.
 *
 * @since 0.3.0
 */
export type Aggregate =
  | { readonly count: string }
  | { readonly sum: string }
  | { readonly min: string }
  | { readonly max: string }
  | { readonly avg: string }

/**
 * Options of a fan-out.
 *
 * @since 0.3.0
 */
export interface FanOutOptions {
  /** Each node's own deadline. */
  readonly timeout?: Duration.DurationInput | undefined
  /** Merge the nodes' rows in this order (columns of the statement's result). */
  readonly orderBy?: ReadonlyArray<readonly [column: string, direction: "asc" | "desc"]> | undefined
  /** With `orderBy`: the first `limit` rows overall; each node returns at most `limit`. */
  readonly limit?: number | undefined
  /** Aggregates over the statement's rows, by result name: `{ n: { count: "*" }, total: { sum: "balance" } }`. */
  readonly aggregate?: Readonly<Record<string, Aggregate>> | undefined
  /** Return what came back, and which nodes failed, instead of failing the call. */
  readonly allowPartial?: boolean | undefined
}

/**
 * What a fan-out returns: the merged rows, and the nodes that failed (only
 * with `allowPartial`).
 *
 * @since 0.3.0
 */
export interface FanOutResult<A> {
  readonly rows: ReadonlyArray<A>
  readonly failed: ReadonlyArray<{ readonly node: string; readonly error: DbError.DbError }>
}

/**
 * A sharded database: nodes (each an ordinary `Db` with its own pool,
 * breaker and metrics), the key's type and the map.
 *
 * @since 0.3.0
 */
export interface Sharded {
  readonly keyType: KeyType
  readonly virtualShards: number
  readonly nodes: Readonly<Record<string, DbService>>
  readonly map: () => ShardMap
  /** Routes by `map` from now on, if its version is newer and it fits the nodes (what the map's poller calls). */
  readonly useMap: (map: ShardMap) => boolean
  /** The node that owns `key`. */
  readonly nodeOf: (key: unknown) => Either.Either<string, ShardKeyError>
  /** The virtual shard of `key`. */
  readonly vshardOf: (key: unknown) => Either.Either<number, ShardKeyError>
  /**
   * Moves virtual shard `vshard` to node `to`, online, with a short freeze
   * at cutover (see the README's "Moving a shard"); the tables declared in
   * `tables` move with it. Run again after a failure, it resumes.
   */
  readonly move: (vshard: number, to: string, options?: MoveOptions) => Effect.Effect<MoveReport, ShardMoveFailed>
  /**
   * Reads the map table (when the map is kept in one) and routes by what it
   * holds; under a freeze, waits for its own calls on the frozen shards and
   * acknowledges the version. The layer's poller runs this.
   */
  readonly refreshMap: Effect.Effect<void, DbError.DbError | ShardFrozen | ShardMapStale>
  /** Waits until nothing routed to `vshards`, and no fan-out, is in flight on this router (before acknowledging a freeze). */
  readonly quiesce: (vshards: ReadonlyArray<number>) => Effect.Effect<void, ShardFrozen>
  /** Runs `effect` with `Db` (and `SqlClient`) being the node that owns `key`: a transaction inside stays there. */
  readonly forKey: (key: unknown) => <A, E, R>(
    effect: Effect.Effect<A, E, R>
  ) => Effect.Effect<A, E | ShardKeyError | CrossShardTransaction | ShardFrozen | ShardMapStale | DbError.DbError, Exclude<R, Db | SqlClient.SqlClient>>
  /** One statement on the node that owns `key`. */
  readonly execute: <A extends object = Record<string, unknown>>(
    key: unknown,
    sql: string,
    params?: ReadonlyArray<unknown>,
    options?: ExecuteOptions
  ) => Effect.Effect<ReadonlyArray<A>, DbError.DbError | ShardKeyError | CrossShardTransaction | ShardFrozen | ShardMapStale>
  /** One statement on every node, in parallel, merged. */
  readonly fanOut: <A extends object = Record<string, unknown>>(
    sql: string,
    params?: ReadonlyArray<unknown>,
    options?: FanOutOptions
  ) => Effect.Effect<FanOutResult<A>, DbError.DbError | ShardFrozen>
  /**
   * Runs `effect` as one transaction over every node it touches, with
   * two-phase commit: all of its writes commit, or none. Routed work inside
   * (`forKey`, `execute`) runs in each node's branch; a fan-out reads outside.
   */
  readonly withAtomicTransaction: <A, E, R>(
    effect: Effect.Effect<A, E, R>
  ) => Effect.Effect<A, E | DbError.DbError | AtomicCommitAborted, R>
  /**
   * Decides the prepared branches left by coordinators that stopped: from the
   * decision log, "abort" where there is none. Branches younger than
   * `olderThan` (default 0) with no decision are left to their coordinator.
   */
  readonly recover: (options?: { readonly olderThan?: Duration.DurationInput | undefined }) => Effect.Effect<RecoveryReport, DbError.DbError>
}

/**
 * Where the 2PC decision log lives: a table on one node.
 *
 * @since 0.3.0
 */
export interface DecisionLog {
  /** The node holding it; default the map's node, else the first node. */
  readonly node?: string | undefined
  /** Default `dal_2pc_log`. */
  readonly table?: string | undefined
}

const compareValues = (x: unknown, y: unknown): number => {
  if (x === y) return 0
  // NULLs sort last ascending, as PostgreSQL sorts them
  if (x === null || x === undefined) return 1
  if (y === null || y === undefined) return -1
  if (typeof x === "number" && typeof y === "number") return x - y
  if (x instanceof Date && y instanceof Date) return x.getTime() - y.getTime()
  const nx = typeof x === "bigint" ? x : typeof x === "string" && /^-?\d+(\.\d+)?$/.test(x) ? Number(x) : undefined
  const ny = typeof y === "bigint" ? y : typeof y === "string" && /^-?\d+(\.\d+)?$/.test(y) ? Number(y) : undefined
  if (nx !== undefined && ny !== undefined) return nx < ny ? -1 : nx > ny ? 1 : 0
  return String(x) < String(y) ? -1 : String(x) > String(y) ? 1 : 0
}

/**
 * Makes a sharded database over `nodes`, with the key's type and the map
 * (default: an even map of `virtualShards`, 64).
 *
 * @since 0.3.0
 */
export const make = (options: {
  /** The sharded database's name in metrics (`sharding.name`); default `sharded`. */
  readonly name?: string | undefined
  readonly nodes: Readonly<Record<string, DbService>>
  readonly keyType: KeyType
  readonly virtualShards?: number | undefined
  readonly map?: ShardMap | undefined
  readonly decisionLog?: DecisionLog | undefined
  /** The sharded tables and their key columns (`{ accounts: "id" }`): what `move` moves. */
  readonly tables?: Readonly<Record<string, string>> | undefined
  /** The table the map is kept in, if any: `move` publishes there, and waits for the routers polling it. */
  readonly mapTable?: MapTable | undefined
  /** This router's id in the map table's registry; default random. */
  readonly routerId?: string | undefined
  /** How long a call waits for a frozen virtual shard before `ShardFrozen`; default 30 seconds. */
  readonly freezeTimeout?: Duration.DurationInput | undefined
}): Sharded => {
  const virtualShards = options.virtualShards ?? DEFAULT_VIRTUAL_SHARDS
  const names = Object.keys(options.nodes)
  const labels = [MetricLabel.make("sharding.name", options.name ?? "sharded")]
  const coordinator = makeCoordinator({
    name: options.name ?? "sharded",
    nodes: options.nodes,
    log: { node: options.decisionLog?.node ?? names[0]!, table: options.decisionLog?.table ?? "dal_2pc_log" },
    labels
  })
  const count = (metric: Metric.Metric.Counter<number>) => metric.unsafeUpdate(1, labels)
  // one engine per sharded database
  const dialect = options.nodes[names[0]!]?.dialect.name ?? "pg"
  if (names.some((n) => options.nodes[n]!.dialect.name !== dialect)) {
    throw new Error("every node of a sharded database must run on the same engine")
  }
  /** What is wrong with a map, if anything. */
  const invalid = (candidate: ShardMap): string | undefined => {
    if (candidate.assignment.length !== virtualShards) {
      return `the shard map assigns ${candidate.assignment.length} virtual shards, not ${virtualShards}`
    }
    const unknown = candidate.assignment.find((n) => options.nodes[n] === undefined)
    return unknown === undefined ? undefined : `the shard map names a node that is not configured: "${unknown}"`
  }
  let map = options.map ?? evenMap(names, virtualShards)
  const problem = invalid(map)
  if (problem !== undefined) throw new Error(problem)
  metrics.mapVersion.unsafeUpdate(map.version, labels)
  const vshardOf = (key: unknown): Either.Either<number, ShardKeyError> => {
    const shard = shardOf(key, { keyType: options.keyType, virtualShards })
    if (Either.isLeft(shard)) count(metrics.keyErrors)
    return shard
  }
  const nodeOf = (key: unknown): Either.Either<string, ShardKeyError> =>
    Either.map(vshardOf(key), (vshard) => map.assignment[vshard]!)

  // the freeze of a move: calls routed to a frozen virtual shard, and fan-outs while any is frozen, wait.
  // What is in flight is counted, so that a freeze can wait for it to finish.
  let frozen = new Set(map.frozen ?? [])
  function useMap(next: ShardMap): boolean {
    // an older version, or one that does not fit this router's nodes, is not taken
    if (next.version <= map.version || invalid(next) !== undefined) return false
    map = next
    frozen = new Set(next.frozen ?? [])
    metrics.mapVersion.unsafeUpdate(map.version, labels)
    return true
  }
  const inFlight = new Int32Array(virtualShards)
  let fanOutsInFlight = 0
  const freezeTimeout = Duration.toMillis(options.freezeTimeout ?? "30 seconds")
  const waitWhile = (isFrozen: () => boolean, vshard: number | undefined): Effect.Effect<void, ShardFrozen> => {
    const started = Date.now()
    const poll: Effect.Effect<void, ShardFrozen> = Effect.suspend(() => {
      if (!isFrozen()) return Effect.void
      const waited = Date.now() - started
      return waited > freezeTimeout
        ? Effect.fail(new ShardFrozen({ vshard, waitedMillis: waited }))
        : Effect.zipRight(Effect.sleep(5), poll)
    })
    return poll
  }
  const mapTable = options.mapTable
  const holder = mapTable === undefined ? undefined : options.nodes[mapTable.node]
  const table = mapTable?.table ?? "dal_shard_map"
  const lease = Duration.toMillis(mapTable?.lease ?? "10 seconds")
  let readAt = Date.now()
  /** The map read again: what a router does before routing by a map older than its lease. */
  const reread = Effect.suspend(() => {
    const age = Date.now() - readAt
    return Effect.mapError(
      readMap(holder!, table).pipe(Effect.tap((read) =>
        Effect.sync(() => {
          readAt = Date.now()
          if (read !== undefined) useMap(read)
        })
      )),
      (cause) => new ShardMapStale({ ageMillis: age, cause })
    )
  })
  // a fixed map and no sharded tables: nothing can freeze a shard of this router, so nothing is counted
  const movable = mapTable !== undefined || options.tables !== undefined
  // a router cut off from the map for longer than its lease may have missed a move's freeze
  const leaseOver = () => holder !== undefined && Date.now() - readAt > lease
  /** Runs `f` with the node that owns `vshard` now, counted in flight; waits first while the shard is frozen. */
  const routed = <A, E, R>(
    vshard: number,
    f: (node: string) => Effect.Effect<A, E, R>
  ): Effect.Effect<A, E | ShardFrozen | ShardMapStale, R> => {
    if (!movable) return f(map.assignment[vshard]!)
    const run: Effect.Effect<A, E | ShardFrozen | ShardMapStale, R> = Effect.suspend(() => {
      if (leaseOver()) return Effect.zipRight(reread, run)
      // checked and counted in one synchronous step: a freeze sees every call that got past it
      if (frozen.has(vshard)) return Effect.zipRight(waitWhile(() => frozen.has(vshard), vshard), run)
      inFlight[vshard]!++
      // counted out on every exit, interruption too: `Effect.ensuring` by hand, with no finalizer effect to run
      return Effect.uninterruptibleMask((restore) =>
        Effect.matchCauseEffect(restore(f(map.assignment[vshard]!)), {
          onFailure: (cause) => {
            inFlight[vshard]!--
            return Effect.failCause(cause)
          },
          onSuccess: (a) => {
            inFlight[vshard]!--
            return Effect.succeed(a)
          }
        })
      )
    })
    return run
  }
  const quiesce = (vshards: ReadonlyArray<number>) =>
    waitWhile(() => fanOutsInFlight > 0 || vshards.some((v) => inFlight[v]! > 0), undefined)

  /**
   * The refusal, when the fiber is inside a transaction on another node of
   * this router than `name`: asked of the nodes, so that a transaction of
   * any other database (another router's node, one that is no shard) never counts.
   */
  const crossing = (fiber: Fiber.RuntimeFiber<unknown, unknown>, name: string): CrossShardTransaction | undefined => {
    const context = fiber.currentContext
    if (Context.getOption(context, SqlClient.TransactionConnection)._tag === "None") return undefined
    if (options.nodes[name]!.ownsTransaction(context)) return undefined
    for (const from in options.nodes) {
      if (options.nodes[from]!.ownsTransaction(context)) {
        count(metrics.crossShardRefusals)
        return new CrossShardTransaction({ from, to: name })
      }
    }
    return undefined
  }

  /** Runs `effect` with node `name` as its `Db` and `SqlClient`; inside another node's transaction, refuses. */
  const onNode = <A, E, R>(
    name: string,
    effect: Effect.Effect<A, E, R>
  ): Effect.Effect<A, E | CrossShardTransaction | DbError.DbError, Exclude<R, Db | SqlClient.SqlClient>> =>
    Effect.withFiberRuntime((fiber) => {
      const node = options.nodes[name]!
      const provided = effect.pipe(
        Effect.provideService(Db, node),
        Effect.provideService(SqlClient.SqlClient, node.sql)
      ) as Effect.Effect<A, E, Exclude<R, Db | SqlClient.SqlClient>>
      const atomic = fiber.getFiberRef(currentAtomic)
      // inside an atomic transaction, each node's work runs in that node's branch
      if (atomic !== undefined) return Effect.flatMap(coordinator.branch(atomic, name), (branch) => branch.run(provided))
      const refused = crossing(fiber, name)
      return refused === undefined ? provided : Effect.fail(refused)
    })

  const forKey = (key: unknown) =>
  <A, E, R>(
    effect: Effect.Effect<A, E, R>
  ): Effect.Effect<
    A,
    E | ShardKeyError | CrossShardTransaction | ShardFrozen | ShardMapStale | DbError.DbError,
    Exclude<R, Db | SqlClient.SqlClient>
  > =>
    Either.match(vshardOf(key), {
      onLeft: (error) => Effect.fail(error),
      onRight: (vshard) => routed(vshard, (name) => onNode(name, effect))
    })

  /**
   * The short form, outside any routed work: it needs no context of its
   * own, and the node runs the statement directly. Where shards can move,
   * the node admits each attempt in its own region (`executeAdmitted`), so
   * that counting it in flight costs no region here.
   */
  const executeOn = (
    vshard: number,
    sql: string,
    params: ReadonlyArray<unknown> | undefined,
    executeOptions: ExecuteOptions | undefined
  ): Effect.Effect<ReadonlyArray<any>, DbError.DbError | CrossShardTransaction | ShardFrozen | ShardMapStale> =>
    Effect.withFiberRuntime((fiber, status) => {
      const name = map.assignment[vshard]!
      if (!movable) return directOn(fiber, status, name, sql, params, executeOptions)
      const node = options.nodes[name]!
      if (node.executeAdmitted === undefined || inTransaction(fiber)) return routed(vshard, (name) => direct(name, sql, params, executeOptions))
      return DbModule.executeAdmittedWith(node, fiber, status, new Admitted(vshard, name, sql, params, executeOptions), sql, params, executeOptions)
    })
  const direct = (name: string, sql: string, params: ReadonlyArray<unknown> | undefined, executeOptions: ExecuteOptions | undefined) =>
    Effect.withFiberRuntime<ReadonlyArray<any>, DbError.DbError | CrossShardTransaction>((fiber, status) =>
      directOn(fiber, status, name, sql, params, executeOptions)
    )
  /** On node `name` directly, or through `onNode`'s checks inside a transaction. */
  const directOn = (
    fiber: Fiber.RuntimeFiber<unknown, unknown>,
    status: FiberStatus.Running,
    name: string,
    sql: string,
    params: ReadonlyArray<unknown> | undefined,
    executeOptions: ExecuteOptions | undefined
  ): Effect.Effect<ReadonlyArray<any>, DbError.DbError | CrossShardTransaction> => {
    const node = options.nodes[name]!
    if (!inTransaction(fiber)) return DbModule.executeWith(node, fiber, status, sql, params, executeOptions)
    return onNode(name, node.execute<any>(sql, params, executeOptions))
  }
  /**
   * One call's admission on the node `vshard` was routed to: the checks of
   * `routed`, and that node, since a retry after a move must not stay on the
   * old one. One object per call, its methods shared.
   */
  class Admitted implements DbModule.Admission<any, DbError.DbError | CrossShardTransaction | ShardFrozen | ShardMapStale> {
    constructor(
      readonly vshard: number,
      readonly name: string,
      readonly sql: string,
      readonly params: ReadonlyArray<unknown> | undefined,
      readonly options: ExecuteOptions | undefined
    ) {}
    enter(): boolean {
      if (leaseOver() || frozen.has(this.vshard) || map.assignment[this.vshard] !== this.name) return false
      inFlight[this.vshard]!++
      return true
    }
    leave(): void {
      inFlight[this.vshard]!--
    }
    instead(): Effect.Effect<ReadonlyArray<any>, DbError.DbError | CrossShardTransaction | ShardFrozen | ShardMapStale> {
      return routed(this.vshard, (name) => direct(name, this.sql, this.params, this.options))
    }
  }
  /** Only a transaction (this router's, or an atomic one) needs the checks of `onNode`. */
  const inTransaction = (fiber: Fiber.RuntimeFiber<unknown, unknown>) =>
    fiber.currentContext.unsafeMap.has(SqlClient.TransactionConnection.key) || fiber.getFiberRef(currentAtomic) !== undefined

  // a move's freeze holds fan-outs: while its rows are on two nodes, they would be counted twice
  const fanOut = <A extends object>(
    sql: string,
    params?: ReadonlyArray<unknown>,
    fanOptions?: FanOutOptions
  ): Effect.Effect<FanOutResult<A>, DbError.DbError | ShardFrozen> => {
    const run: Effect.Effect<FanOutResult<A>, DbError.DbError | ShardFrozen> = Effect.suspend(() => {
      if (frozen.size > 0) return Effect.zipRight(waitWhile(() => frozen.size > 0, undefined), run)
      fanOutsInFlight++
      return Effect.ensuring(fanOutNow<A>(sql, params, fanOptions), Effect.sync(() => fanOutsInFlight--))
    })
    return run
  }

  const fanOutNow = <A extends object>(
    sql: string,
    params: ReadonlyArray<unknown> = [],
    fanOptions: FanOutOptions = {}
  ): Effect.Effect<FanOutResult<A>, DbError.DbError> =>
    Effect.gen(function*() {
      count(metrics.fanOuts)
      const call = fanOptions.timeout === undefined ? undefined : { timeout: fanOptions.timeout }
      const aggregates = fanOptions.aggregate === undefined ? undefined : Object.entries(fanOptions.aggregate)
      const inner = `(${sql}) AS dal_fan_out`
      const q = (name: string) => `[${name.replace(/]/g, "]]")}]`
      let statement = sql
      if (aggregates !== undefined) {
        const parts = aggregates.flatMap(([name, agg]) => {
          const [fn, column] = Object.entries(agg)[0] as [string, string]
          const target = column === "*" ? "*" : q(column)
          return fn === "avg"
            ? [`sum(${target}) AS ${q(`${name}__sum`)}`, `count(${target}) AS ${q(`${name}__count`)}`]
            : [`${fn}(${target}) AS ${q(name)}`]
        })
        statement = `SELECT ${parts.join(", ")} FROM ${inner}`
      } else if (fanOptions.orderBy !== undefined && fanOptions.orderBy.length > 0) {
        // NULLs last either way, as the merge orders them; MySQL has no NULLS LAST, so it sorts on IS NULL first
        const order = fanOptions.orderBy.map(([c, d]) =>
          dialect === "pg"
            ? `${q(c)} ${d === "desc" ? "DESC" : "ASC"} NULLS LAST`
            : `${q(c)} IS NULL, ${q(c)} ${d === "desc" ? "DESC" : "ASC"}`
        )
        statement = `SELECT * FROM ${inner} ORDER BY ${order.join(", ")}${
          fanOptions.limit === undefined ? "" : ` LIMIT ${Math.max(0, Math.floor(fanOptions.limit))}`
        }`
      }
      const results = yield* Effect.forEach(
        names,
        (name) => Effect.either(options.nodes[name]!.execute<any>(statement, params, call)),
        { concurrency: "unbounded" }
      )
      const failed: Array<{ node: string; error: DbError.DbError }> = []
      const perNode: Array<ReadonlyArray<any>> = []
      results.forEach((r, i) => {
        if (Either.isLeft(r)) failed.push({ node: names[i]!, error: r.left })
        else perNode.push(r.right)
      })
      if (failed.length > 0 && fanOptions.allowPartial !== true) return yield* Effect.fail(failed[0]!.error)
      if (failed.length > 0) count(metrics.partialResults)
      if (aggregates !== undefined) {
        const row: Record<string, unknown> = {}
        for (const [name, agg] of aggregates) {
          const fn = Object.keys(agg)[0]!
          const values = perNode.map((rows) => rows[0] ?? {})
          const num = (v: unknown) => (v === null || v === undefined ? undefined : Number(v))
          if (fn === "count") row[name] = values.reduce((n, v) => n + (num(v[name]) ?? 0), 0)
          else if (fn === "sum") {
            const xs = values.map((v) => num(v[name])).filter((x): x is number => x !== undefined)
            row[name] = xs.length === 0 ? null : xs.reduce((a, b) => a + b, 0)
          } else if (fn === "avg") {
            const sum = values.reduce((n, v) => n + (num(v[`${name}__sum`]) ?? 0), 0)
            const count = values.reduce((n, v) => n + (num(v[`${name}__count`]) ?? 0), 0)
            row[name] = count === 0 ? null : sum / count
          } else {
            const xs = values.map((v) => v[name]).filter((x) => x !== null && x !== undefined)
            row[name] = xs.length === 0 ? null : xs.reduce((a, b) => (compareValues(a, b) * (fn === "min" ? 1 : -1) <= 0 ? a : b))
          }
        }
        return { rows: [row as A], failed }
      }
      if (fanOptions.orderBy === undefined || fanOptions.orderBy.length === 0) {
        return { rows: perNode.flat() as Array<A>, failed }
      }
      // k-way merge of the nodes' sorted rows, taking the first `limit`
      const order = fanOptions.orderBy
      const compare = (x: any, y: any) => {
        for (const [column, direction] of order) {
          const c = compareValues(x[column], y[column])
          if (c !== 0) {
            if (x[column] === null || x[column] === undefined || y[column] === null || y[column] === undefined) return c
            return direction === "desc" ? -c : c
          }
        }
        return 0
      }
      const heads = perNode.map(() => 0)
      const out: Array<A> = []
      const limit = fanOptions.limit ?? Infinity
      while (out.length < limit) {
        let best = -1
        for (let n = 0; n < perNode.length; n++) {
          if (heads[n]! >= perNode[n]!.length) continue
          if (best === -1 || compare(perNode[n]![heads[n]!], perNode[best]![heads[best]!]) < 0) best = n
        }
        if (best === -1) break
        out.push(perNode[best]![heads[best]!++])
      }
      return { rows: out, failed }
    })

  const routerId = options.routerId ?? randomBytes(8).toString("hex")
  /** Waits until every router seen within the lease has taken `version`: a silent one is presumed gone. */
  const acknowledged = (version: number): Effect.Effect<void, DbError.DbError> => {
    if (holder === undefined) return Effect.void
    const deadline = Date.now() + lease
    const check: Effect.Effect<void, DbError.DbError> = Effect.flatMap(
      Effect.catchAll(
        holder.execute<{ router: string; version: unknown }>(
          `SELECT [router], [version] FROM [${routersTable(table)}] WHERE [seen_at] > ?`,
          [Date.now() - lease]
        ),
        () => Effect.succeed([])
      ),
      (rows) =>
        rows.every((r) => r.router === routerId || Number(r.version) >= version) || Date.now() > deadline
          ? Effect.void
          : Effect.zipRight(Effect.sleep(20), check)
    )
    return check
  }
  const moving = Effect.unsafeMakeSemaphore(1)
  const sharded: Sharded = {
    keyType: options.keyType,
    virtualShards,
    nodes: options.nodes,
    map: () => map,
    useMap,
    nodeOf,
    vshardOf,
    forKey,
    execute: (key, sql, params, executeOptions) =>
      Either.match(vshardOf(key), {
        onLeft: (error) => Effect.fail(error),
        onRight: (vshard) => executeOn(vshard, sql, params, executeOptions)
      }),
    fanOut,
    withAtomicTransaction: coordinator.withAtomicTransaction,
    recover: (recoverOptions) =>
      coordinator.recover(recoverOptions?.olderThan === undefined ? 0 : Duration.toMillis(recoverOptions.olderThan)),
    quiesce,
    // under a freeze, the acknowledgement waits until nothing of this router's is in flight on the frozen shards
    refreshMap: holder === undefined ? Effect.void : Effect.flatMap(reread, () =>
      Effect.asVoid(Effect.zipRight(quiesce(map.frozen ?? []), acknowledge(holder, table, routerId, map.version)))),
    // one move at a time per router: each freezes, copies and publishes on its own
    move: (vshard, to, moveOptions) =>
      moving.withPermits(1)(moveShard({
        nodes: options.nodes,
        tables: options.tables ?? {},
        labels,
        map: () => map,
        publish: (next) =>
          holder === undefined
            ? Effect.sync(() => void useMap(next))
            : Effect.zipRight(writeMap(holder, next, table), Effect.sync(() => void useMap(next))),
        quiesce,
        acknowledged,
        vshardOf: (key) => Either.getOrUndefined(shardOf(key, { keyType: options.keyType, virtualShards }))
      }, vshard, to, moveOptions))
  }
  return sharded
}

/**
 * The sharded database as a service, with accessors.
 *
 * @since 0.3.0
 */
export class Sharding extends Context.Tag("@effect-dal/routing/Sharding")<Sharding, Sharded>() {
  /** Runs `effect` on the node that owns `key`. */
  static forKey = (key: unknown) =>
  <A, E, R>(
    effect: Effect.Effect<A, E, R>
  ): Effect.Effect<A, E | ShardKeyError | CrossShardTransaction | ShardFrozen | ShardMapStale | DbError.DbError, Exclude<R, Db | SqlClient.SqlClient> | Sharding> =>
    Effect.flatMap(Sharding, (sharded) => sharded.forKey(key)(effect))

  /** One statement on the node that owns `key`. */
  static execute = <A extends object = Record<string, unknown>>(
    key: unknown,
    sql: string,
    params?: ReadonlyArray<unknown>,
    options?: ExecuteOptions
  ): Effect.Effect<ReadonlyArray<A>, DbError.DbError | ShardKeyError | CrossShardTransaction | ShardFrozen | ShardMapStale, Sharding> =>
    // one step of the run loop, where `flatMap` over the tag takes three
    Effect.withFiberRuntime((fiber) => Context.unsafeGet(fiber.currentContext, Sharding).execute<A>(key, sql, params, options))

  /** One statement on every node, merged. */
  static fanOut = <A extends object = Record<string, unknown>>(
    sql: string,
    params?: ReadonlyArray<unknown>,
    options?: FanOutOptions
  ): Effect.Effect<FanOutResult<A>, DbError.DbError | ShardFrozen, Sharding> =>
    Effect.flatMap(Sharding, (sharded) => sharded.fanOut<A>(sql, params, options))

  /** Runs `effect` atomically over every node it touches (two-phase commit). */
  static withAtomicTransaction = <A, E, R>(
    effect: Effect.Effect<A, E, R>
  ): Effect.Effect<A, E | DbError.DbError | AtomicCommitAborted, R | Sharding> =>
    Effect.flatMap(Sharding, (sharded) => sharded.withAtomicTransaction(effect))

  /** Moves virtual shard `vshard` to node `to`, online. */
  static move = (vshard: number, to: string, options?: MoveOptions): Effect.Effect<MoveReport, ShardMoveFailed, Sharding> =>
    Effect.flatMap(Sharding, (sharded) => sharded.move(vshard, to, options))

  /** Decides the prepared branches that stopped coordinators left. */
  static recover = (
    options?: { readonly olderThan?: Duration.DurationInput | undefined }
  ): Effect.Effect<RecoveryReport, DbError.DbError, Sharding> => Effect.flatMap(Sharding, (sharded) => sharded.recover(options))
}

/**
 * A map from configuration: a comma-separated list of node names, one per
 * virtual shard in order (`s1,s2,s3,s1,…`), in `name` (default
 * `SHARD_MAP`), and its version in `${name}_VERSION` (default 1).
 *
 * @since 0.3.0
 */
export const mapConfig = (name = "SHARD_MAP"): Config.Config<ShardMap> =>
  Config.all({
    assignment: Config.map(Config.string(name), (list) => list.split(",").map((n) => n.trim()).filter((n) => n !== "")),
    version: Config.withDefault(Config.integer(`${name}_VERSION`), 1)
  })

/**
 * Where a map kept in the database lives: a table on one of the nodes.
 *
 * @since 0.3.0
 */
export interface MapTable {
  /** The node holding the table. */
  readonly node: string
  /** Default `dal_shard_map`. */
  readonly table?: string | undefined
  /** How often routers look for a new version; default 1 second. */
  readonly pollInterval?: Duration.DurationInput | undefined
  /**
   * A router whose map is older than this reads it again before it routes
   * (and refuses with `ShardMapStale` if it cannot); a move waits this long
   * for a router that does not acknowledge its freeze. Default 10 seconds.
   */
  readonly lease?: Duration.DurationInput | undefined
}

/**
 * Reads the newest map from `table` (`vshard`, `node`, `version` per row);
 * `undefined` when it holds none.
 *
 * @since 0.3.0
 */
export const readMap = (db: DbService, table = "dal_shard_map"): Effect.Effect<ShardMap | undefined, DbError.DbError> =>
  Effect.map(
    db.execute<{ vshard: number; node: string; version: unknown; frozen: unknown }>(
      `SELECT [vshard], [node], [version], [frozen] FROM [${table}] WHERE [version] = (SELECT max([version]) FROM [${table}]) ORDER BY [vshard]`
    ),
    (rows) =>
      rows.length === 0 ? undefined : {
        version: Number(rows[0]!.version),
        assignment: rows.map((r) => r.node),
        frozen: rows.filter((r) => Number(r.frozen) !== 0).map((r) => Number(r.vshard))
      }
  )

/**
 * Publishes `map` to `table` as its newest version (creating the table if
 * needed), in one transaction; routers polling it switch to it.
 *
 * @since 0.3.0
 */
export const writeMap = (db: DbService, map: ShardMap, table = "dal_shard_map"): Effect.Effect<void, DbError.DbError> =>
  Effect.zipRight(
    Effect.zipRight(
      db.execute(
        `CREATE TABLE IF NOT EXISTS [${table}] ([version] bigint NOT NULL, [vshard] int NOT NULL, [node] varchar(200) NOT NULL, ` +
          `[frozen] smallint NOT NULL DEFAULT 0, PRIMARY KEY ([version], [vshard]))`
      ),
      db.execute(createRoutersTable(table))
    ),
    db.withTransaction(Effect.zipRight(
      db.execute(`DELETE FROM [${table}] WHERE [version] < ?`, [map.version - 1]),
      db.insertMany(
        table,
        map.assignment.map((node, vshard) => ({ version: map.version, vshard, node, frozen: map.frozen?.includes(vshard) ? 1 : 0 }))
      )
    ))
  )

/**
 * The sharding layer: `nodes` are ordinary engine layers (each its own pool,
 * breaker and metrics, named by their key here), the key's type, and the map
 * (default: an even map of `virtualShards`, 64).
 *
 * @since 0.3.0
 */
export const layer = <E>(options: {
  /** The sharded database's name in metrics; default `sharded`. */
  readonly name?: string | undefined
  readonly nodes: Readonly<Record<string, Layer.Layer<Db, E>>>
  readonly keyType: KeyType
  readonly virtualShards?: number | undefined
  /**
   * A fixed map (given, or read from `Config`: see `mapConfig`), or a table
   * that holds it (seeded with an even map when empty) and is polled for new versions.
   */
  readonly map?: ShardMap | Config.Config<ShardMap> | MapTable | undefined
  /** The 2PC decision log; default on the map's node, else the first node. */
  readonly decisionLog?: DecisionLog | undefined
  /** The sharded tables and their key columns (`{ accounts: "id" }`): what `move` moves. */
  readonly tables?: Readonly<Record<string, string>> | undefined
  /** How long a call waits for a frozen virtual shard before `ShardFrozen`; default 30 seconds. */
  readonly freezeTimeout?: Duration.DurationInput | undefined
  /**
   * Recovery of prepared branches left by stopped coordinators: at startup,
   * then `every` (default 10 seconds); undecided branches younger than
   * `grace` (default 5 seconds) are left to their coordinator.
   */
  readonly recovery?: {
    readonly every?: Duration.DurationInput | undefined
    readonly grace?: Duration.DurationInput | undefined
  } | undefined
}): Layer.Layer<Sharding, E | DbError.DbError | ConfigError.ConfigError> =>
  Layer.scoped(
    Sharding,
    Effect.gen(function*() {
      const nodes: Record<string, DbService> = {}
      for (const [name, nodeLayer] of Object.entries(options.nodes)) {
        const context = yield* Layer.build(nodeLayer)
        nodes[name] = Context.get(context, Db)
      }
      const virtualShards = options.virtualShards ?? DEFAULT_VIRTUAL_SHARDS
      const source = Config.isConfig(options.map) ? yield* options.map : options.map
      const common = {
        name: options.name,
        nodes,
        keyType: options.keyType,
        virtualShards,
        tables: options.tables,
        freezeTimeout: options.freezeTimeout
      }
      let sharded: Sharded
      if (source === undefined || "assignment" in source) {
        // a map from configuration that does not fit the nodes is a configuration error, not a defect
        sharded = yield* Effect.try({
          try: () => make({ ...common, map: source, decisionLog: options.decisionLog }),
          catch: (error) => ConfigError.InvalidData([], error instanceof Error ? error.message : String(error))
        })
      } else {
        const holder = nodes[source.node]
        if (holder === undefined) return yield* Effect.die(new Error(`the shard map's node "${source.node}" is not configured`))
        let initial = yield* Effect.catchAll(readMap(holder, source.table), () => Effect.succeed(undefined))
        if (initial === undefined) {
          initial = evenMap(Object.keys(nodes), virtualShards)
          yield* writeMap(holder, initial, source.table)
        }
        const made = make({
          ...common,
          map: initial,
          decisionLog: { node: source.node, ...options.decisionLog },
          mapTable: source
        })
        sharded = made
        // routers follow new versions, and say which one they route by: a move waits for that.
        // A failed poll keeps the map they have, until their lease runs out.
        yield* Effect.forkScoped(Effect.repeat(Effect.ignore(made.refreshMap), Schedule.spaced(source.pollInterval ?? "1 second")))
      }
      // prepared branches that stopped coordinators left: decided at startup, then periodically
      const grace = options.recovery?.grace ?? "5 seconds"
      const recovery = Effect.catchAll(
        sharded.recover({ olderThan: grace }),
        (error) => Effect.as(Effect.logWarning(`2PC recovery could not run: ${error.message}`), undefined)
      )
      yield* recovery
      const every = options.recovery?.every ?? "10 seconds"
      yield* Effect.forkScoped(Effect.forever(Effect.zipRight(Effect.sleep(every), recovery)))
      return sharded
    })
  )

/**
 * effect-dal for code without Effect: `await connect(options)` gives a
 * `Database` whose methods return promises. Every call runs on the same
 * Effect core as `Db` (through one `ManagedRuntime`): the same pool, breaker,
 * retries, timeouts, statement cache and metrics.
 *
 * Node has no synchronous driver for PostgreSQL or MySQL, so there is no
 * synchronous API: `await` these calls instead.
 *
 * @since 0.3.0
 */
import type {
  DatabaseConfig,
  Db,
  DbService,
  ExecuteOptions,
  InsertManyOptions,
  InsertManyResult,
  Pool,
  ScalingAdvisor,
  SlowQuery,
  StreamOptions,
  WithTransactionOptions
} from "@effect-dal/core"
import { DbError, Metrics, Runner } from "@effect-dal/core"
import type { Row } from "@effect/sql/SqlConnection"
import type * as Cause from "effect/Cause"
import type * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import type * as Layer from "effect/Layer"

/**
 * Options of `connect`: the common database options, and which engine.
 *
 * @since 0.3.0
 */
export interface ConnectOptions extends Omit<DatabaseConfig.DatabaseOptions, "url"> {
  /**
   * `postgres://…` (PostgreSQL), `mysql://…` or `mariadb://…` (MySQL/MariaDB).
   * Default: `DATABASE_URL`, else an embedded PGlite database.
   */
  readonly url?: string | undefined
  /** An embedded PostgreSQL (PGlite): in memory, or in `dataDir`. */
  readonly embedded?: boolean | { readonly dataDir?: string | undefined } | undefined
  /** Any `DatabaseLive` layer instead (replicas, a custom engine): the other options are then ignored. */
  readonly layer?: Layer.Layer<Db, unknown> | undefined
}

/**
 * Options of one call: `timeout` in milliseconds (or a `Duration`), `tags`,
 * `retry`, `idempotent`, and an `AbortSignal` that cancels the statement on
 * the server.
 *
 * @since 0.3.0
 */
export interface CallOptions extends ExecuteOptions, Runner.CallOptions {}

/**
 * Options of `transaction`: `withTransaction`'s (isolation, read-only,
 * retry, timeout), and an `AbortSignal`.
 *
 * @since 0.3.0
 */
export interface TransactionOptions extends WithTransactionOptions, Runner.CallOptions {}

/**
 * The options were invalid (a bad URL, an unknown scheme, a negative pool
 * size), or the engine's package is not installed.
 *
 * @since 0.3.0
 */
export class InvalidOptions extends Data.TaggedError("InvalidOptions")<{
  readonly detail: string
  readonly cause?: unknown
}> {
  /** @since 0.3.0 */
  readonly category = "invalidInput" as const
  /** @since 0.3.0 */
  readonly transient = false
  /** @since 0.3.0 */
  readonly code = undefined
  override get message(): string {
    return `invalid database options: ${this.detail}`
  }
}

/**
 * The handle a `transaction` callback gets: its statements run on the
 * transaction's connection. It is valid only until the callback settles.
 *
 * @since 0.3.0
 */
export interface Transaction {
  /** 0 for a top-level transaction, 1+ for savepoints. */
  readonly depth: number
  readonly execute: <A extends object = Row>(
    sql: string,
    params?: ReadonlyArray<unknown>,
    options?: CallOptions
  ) => Promise<ReadonlyArray<A>>
  readonly executeMany: (sql: string, rows: ReadonlyArray<ReadonlyArray<unknown>>, options?: CallOptions) => Promise<number>
  readonly insertMany: (
    table: string,
    rows: ReadonlyArray<object>,
    options?: InsertManyOptions
  ) => Promise<InsertManyResult>
  /** A nested transaction: a savepoint, rolled back alone when its callback throws. */
  readonly transaction: <A>(f: (tx: Transaction) => Promise<A>) => Promise<A>
}

/** A callback's own exception, carried through the transaction and rethrown as it was. */
class CallbackFailed extends Data.TaggedError("CallbackFailed")<{ readonly error: unknown }> {}

/** What the caller sees of a failure: the callback's own exception as it was thrown. */
const unwrapped = (error: unknown): unknown => error instanceof CallbackFailed ? error.error : error

const unwrap = (error: unknown): never => {
  throw unwrapped(error)
}

const ended = () =>
  Promise.reject(new InvalidOptions({ detail: "this transaction handle is used after its callback settled" }))

type Job = { readonly effect: Effect.Effect<unknown, unknown>; readonly resolve: (a: any) => void; readonly reject: (e: unknown) => void }

/**
 * A transaction callback as an effect, with its handle. The handle's
 * statements run on the transaction's own fiber, one after another as on
 * its one connection: no fiber of their own, and no context to carry over.
 * One with a signal runs on a fiber of its own, to be interrupted alone.
 *
 * One object per transaction whose steps are shared methods: the state of a
 * transaction in flight is what a scavenge has to copy, and closures over
 * it per transaction made the Promise API's transfer spend more on
 * collections than on its statements.
 */
class Served<A> {
  private open = true
  private readonly jobs: Array<Job> = []
  private running: Job | undefined = undefined
  private settled: Effect.Effect<A, DbError.DbError | CallbackFailed> | undefined = undefined
  private wake: ((effect: Effect.Effect<void>) => void) | undefined = undefined
  /** Whether serving already gave the callback one turn of the scheduler since its last statement. */
  private yielded = false
  private readonly serve: Effect.Effect<A, DbError.DbError | CallbackFailed>
  /** The running statement's outcome: to its job, and serving goes on. */
  private readonly handled: {
    readonly onSuccess: (value: unknown) => Effect.Effect<A, DbError.DbError | CallbackFailed>
    readonly onFailure: (cause: Cause.Cause<unknown>) => Effect.Effect<A, DbError.DbError | CallbackFailed>
  }
  /** What the callback gets: a plain object, so that nothing of the serving shows on it. */
  private readonly handle: Transaction

  private constructor(
    private readonly runner: Runner.Runner,
    db: DbService,
    private readonly f: (tx: Transaction) => Promise<A>,
    depth: number,
    private readonly context: Context.Context<never>
  ) {
    this.serve = Effect.suspend(() => this.step())
    this.handled = {
      onSuccess: (value) => {
        this.took().resolve(value)
        return this.serve
      },
      onFailure: (cause) => {
        this.took().reject(Runner.failureOf(cause))
        return this.serve
      }
    }
    this.handle = {
      depth,
      execute: (sql, params, options) => this.inTx(db.execute(sql, params, options), options),
      executeMany: (sql, rows, options) => this.inTx(db.executeMany(sql, rows, options), options),
      insertMany: (table, rows, options) => this.inTx(db.insertMany(table, rows, options)),
      transaction: (g) =>
        this.open ? this.inTx(db.withTransaction(Served.effect(runner, db, g, depth + 1))).catch(unwrap) : ended()
    }
  }

  /** `f` served in the transaction the effect runs in. */
  static effect<A>(runner: Runner.Runner, db: DbService, f: (tx: Transaction) => Promise<A>, depth: number) {
    return Effect.flatMap(Effect.context<never>(), (context) => {
      const served = new Served(runner, db, f, depth, context)
      return Effect.ensuring(Effect.zipRight(Effect.sync(() => served.start()), served.serve), Effect.sync(() => served.end()))
    })
  }

  private inTx<B, E>(effect: Effect.Effect<B, E>, options?: Runner.CallOptions): Promise<B> {
    if (!this.open) return ended()
    if (options?.signal !== undefined) {
      return this.runner.run(() => Effect.locally(effect, FiberRef.currentContext, this.context), options)
    }
    return new Promise<B>((resolve, reject) => {
      this.jobs.push({ effect, resolve, reject })
      this.notify()
    })
  }

  /** The running statement's job, which its outcome goes to. */
  private took(): Job {
    const job = this.running!
    this.running = undefined
    return job
  }

  private notify(): void {
    const wake = this.wake
    this.wake = undefined
    wake?.(Effect.void)
  }

  private start(): void {
    try {
      this.f(this.handle).then((a) => {
        this.settled = Effect.succeed(a)
        this.notify()
      }, (error) => {
        this.settled = failed(error)
        this.notify()
      })
    } catch (error) {
      this.settled = failed(error)
    }
  }

  private step(): Effect.Effect<A, DbError.DbError | CallbackFailed> {
    // once the callback settled, what it did not wait for is refused (see end), never run
    if (this.settled !== undefined) return this.settled
    const job = this.jobs.shift()
    if (job !== undefined) {
      this.running = job
      this.yielded = false
      return Effect.matchCauseEffect(job.effect, this.handled)
    }
    // the callback's next statement usually comes in the microtask that its `await` resumes in:
    // one turn of the scheduler first, and it is served without a wake-up
    if (!this.yielded) {
      this.yielded = true
      return Effect.zipRight(Effect.yieldNow(), this.serve)
    }
    return Effect.zipRight(
      Effect.async<void>((resume) => {
        if (this.jobs.length > 0 || this.settled !== undefined) return resume(Effect.void)
        this.wake = resume
      }),
      this.serve
    )
  }

  private end(): void {
    this.open = false
    // interrupted with a statement running, or statements the callback did not wait for
    const left = this.jobs.splice(0)
    if (this.running !== undefined) left.unshift(this.running)
    for (const job of left) job.reject(new InvalidOptions({ detail: "the transaction ended before this statement ran to its end" }))
  }
}

// our own errors stay ours, so that retries see a serialization failure for what it is
const failed = (error: unknown) => Effect.fail(DbError.isDbError(error) ? error : new CallbackFailed({ error }))

/**
 * A connected database.
 *
 * @since 0.3.0
 */
export class Database {
  constructor(
    /** What runs the calls: the `ManagedRuntime` over the layer. */
    readonly runner: Runner.Runner,
    /** The Effect service underneath, for code that mixes both. */
    readonly db: DbService
  ) {}

  /** The alias: `db.client.connection.pool.name` in metrics. */
  get alias(): string {
    return this.db.alias
  }

  /** Runs one portable statement (`?` placeholders, `[identifiers]`) and returns its rows. */
  execute<A extends object = Row>(sql: string, params?: ReadonlyArray<unknown>, options?: CallOptions): Promise<ReadonlyArray<A>> {
    return this.runner.run((db) => db.execute<A>(sql, params, options), options)
  }

  /** Runs one statement per parameter row, in one transaction; the affected row count. */
  executeMany(sql: string, rows: ReadonlyArray<ReadonlyArray<unknown>>, options?: CallOptions): Promise<number> {
    return this.runner.run((db) => db.executeMany(sql, rows, options), options)
  }

  /** Inserts rows as chunked multi-row INSERTs, all or nothing. */
  insertMany(
    table: string,
    rows: ReadonlyArray<object>,
    options?: InsertManyOptions & Runner.CallOptions
  ): Promise<InsertManyResult> {
    return this.runner.run((db) => db.insertMany(table, rows, options), options)
  }

  /**
   * Reads a large result with back-pressure: `for await (const row of db.stream(…))`.
   * Leaving the loop early frees the connection.
   */
  stream<A extends object = Row>(
    sql: string,
    params?: ReadonlyArray<unknown>,
    options?: StreamOptions & Runner.CallOptions
  ): AsyncIterable<A> {
    return this.runner.iterate((db) => db.stream<A>(sql, params, options), options)
  }

  /**
   * Runs `f` in a transaction: COMMIT when its promise resolves, ROLLBACK when
   * it rejects (the promise then rejects with what `f` threw). A failed COMMIT
   * rejects. With `retry`, `f` runs again after a serialization failure, a
   * deadlock or a connection lost before COMMIT, as `Db.withTransaction`.
   */
  transaction<A>(f: (tx: Transaction) => Promise<A>, options?: TransactionOptions): Promise<A> {
    // one promise: a `.catch` on `run`'s would cost the caller another, and another turn of the microtask queue
    return new Promise((resolve, reject) =>
      this.runner.runCallback(
        (db) => db.withTransaction(Served.effect(this.runner, db, f, 0), options),
        (error, value) => error === undefined ? resolve(value as A) : reject(unwrapped(error)),
        options
      )
    )
  }

  /** The scaling advisor's report: timeout rate, verdict and capacity arithmetic. */
  health(): Promise<ScalingAdvisor.Report> {
    return this.runner.run((db) => db.health)
  }

  /** The pool's counts now. */
  poolStats(): Pool.PoolStats {
    return this.db.poolStats()
  }

  /** Every effect-dal metric of this database, brought up to date, as plain data. */
  metrics(): Promise<ReadonlyArray<Metrics.Sample>> {
    return this.runner.run((db) => Effect.zipRight(db.refreshMetrics, Metrics.samples(db.metricLabels)))
  }

  /** The slowest statement shapes (over `slowQueryThreshold`), slowest p99 first. */
  slowQueries(n?: number): ReadonlyArray<SlowQuery> {
    return this.db.slowQueries(n)
  }

  /** Closes the pool: waits for calls in flight (up to `closeTimeout`), then closes every connection. */
  close(): Promise<void> {
    return this.runner.close()
  }

  /** `await using db = await connect(…)` closes it at the end of the block. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close()
  }
}

/** The engine layer for `options`, its package loaded only when used. */
const layerOf = async (options: ConnectOptions): Promise<Layer.Layer<Db, unknown>> => {
  if (options.layer !== undefined) return options.layer
  const { embedded, layer: _, url: given, ...common } = options
  const url = given ?? (embedded ? undefined : process.env["DATABASE_URL"])
  const load = async <M>(name: string, load: () => Promise<M>): Promise<M> => {
    try {
      return await load()
    } catch (cause) {
      throw new InvalidOptions({ detail: `${name} is needed for this database: npm install ${name}`, cause })
    }
  }
  if (url === undefined) {
    const { PgliteDatabase } = await load("@effect-dal/pglite", () => import("@effect-dal/pglite"))
    return PgliteDatabase.layer({
      alias: common.alias,
      env: common.env,
      statementTimeout: common.statementTimeout,
      acquireTimeout: common.pool?.acquireTimeout,
      dataDir: typeof embedded === "object" ? embedded.dataDir : undefined
    })
  }
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url)?.[1]?.toLowerCase()
  switch (scheme) {
    case "postgres":
    case "postgresql": {
      const { PgDatabase } = await load("@effect-dal/pg", () => import("@effect-dal/pg"))
      return PgDatabase.layer({ ...common, url })
    }
    case "mysql":
    case "mariadb": {
      const { MysqlDatabase } = await load("@effect-dal/mysql", () => import("@effect-dal/mysql"))
      return MysqlDatabase.layer({ ...common, url })
    }
    case "pglite": {
      const { PgliteDatabase } = await load("@effect-dal/pglite", () => import("@effect-dal/pglite"))
      return PgliteDatabase.layer({ alias: common.alias, env: common.env, dataDir: url.slice("pglite://".length) || undefined })
    }
    default:
      throw new InvalidOptions({
        detail: `unsupported URL scheme ${scheme === undefined ? "(none)" : `"${scheme}:"`}: use postgres://, mysql://, mariadb:// or { embedded: true }`
      })
  }
}

/**
 * Connects: builds the pool (connections open in the background, so a
 * database that is still down does not fail this) and returns the `Database`.
 * Invalid options reject with `InvalidOptions`.
 *
 * @since 0.3.0
 */
export const connect = async (options: ConnectOptions = {}): Promise<Database> => {
  const runner = Runner.make(await layerOf(options))
  try {
    return new Database(runner, await runner.db())
  } catch (cause) {
    await runner.close().catch(() => {})
    throw DbError.isDbError(cause) ? cause : new InvalidOptions({ detail: (cause as Error).message, cause })
  }
}

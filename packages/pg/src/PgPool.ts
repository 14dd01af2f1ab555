/**
 * A `pg.Pool` that runs on effect-dal: `createPgPool(options)` returns an
 * object with node-postgres' pool interface (`query`, `connect`/`release`,
 * `end`, the counts and the events), so that Kysely's `PostgresDialect`,
 * Drizzle's `drizzle-orm/node-postgres` and plain `pg` code get our pool,
 * circuit breaker, retries, timeouts, statement cache and metrics unchanged.
 *
 * @since 0.3.0
 */
import type { DbService, ExecuteOptions } from "@effect-dal/core"
import { Native, Runner } from "@effect-dal/core"
import * as Redacted from "effect/Redacted"
import { EventEmitter } from "node:events"
import * as Pg from "pg"
import type { PgNativeOptions } from "./internal/driver.js"
import { pgClientOf } from "./internal/driver.js"
import * as PgDatabase from "./PgDatabase.js"

/**
 * Options of `createPgPool`: ours (`PgDatabaseOptions`), or `pg.Pool`'s
 * names for the same things, so that `new Pool(config)` becomes
 * `createPgPool(config)`.
 *
 * @since 0.3.0
 */
export interface PgPoolOptions extends Omit<PgDatabase.PgDatabaseOptions, "password"> {
  /** A plain string, as pg takes it, or `Redacted`. */
  readonly password?: string | Redacted.Redacted | undefined
  /** `pg`'s name for `url`. */
  readonly connectionString?: string | undefined
  /** `pg`'s name for `pool.max`. */
  readonly max?: number | undefined
  /** `pg`'s name for `pool.min`. */
  readonly min?: number | undefined
  /** `pg`'s name for `pool.idleTimeout`, in ms. */
  readonly idleTimeoutMillis?: number | undefined
  /** `pg`'s connect and checkout timeout, in ms: `connectTimeout` and `pool.acquireTimeout`. */
  readonly connectionTimeoutMillis?: number | undefined
  /** `pg`'s name for `pool.maxLifetime`, in seconds. */
  readonly maxLifetimeSeconds?: number | undefined
  /** `pg`'s client-side query timeout, in ms: our `statementTimeout` (the statement is cancelled on the server). */
  readonly query_timeout?: number | undefined
  /** `pg`'s name for `applicationName`. */
  readonly application_name?: string | undefined
}

/** `pg`'s option names folded into ours; ours win where both are given. */
const databaseOptions = (o: PgPoolOptions): PgDatabase.PgDatabaseOptions => {
  const seconds = (s: number | undefined) => (s === undefined || s === 0 ? undefined : s * 1000)
  return {
    ...o,
    url: o.url ?? o.connectionString,
    password: typeof o.password === "string" ? Redacted.make(o.password) : o.password,
    applicationName: o.applicationName ?? o.application_name,
    connectTimeout: o.connectTimeout ?? o.connectionTimeoutMillis,
    statementTimeout: o.statementTimeout ?? o.query_timeout,
    pool: {
      ...o.pool,
      max: o.pool?.max ?? o.max,
      min: o.pool?.min ?? o.min,
      idleTimeout: o.pool?.idleTimeout ?? o.idleTimeoutMillis,
      acquireTimeout: o.pool?.acquireTimeout ?? o.connectionTimeoutMillis,
      maxLifetime: o.pool?.maxLifetime ?? seconds(o.maxLifetimeSeconds)
    }
  }
}

type Callback = (err: Error | null, result?: any) => void

/** What `query(text | config, values?, callback?)` was given, as pg reads it. */
const queryArgs = (text: unknown, values: unknown, callback: unknown) => {
  if (typeof values === "function") {
    callback = values
    values = undefined
  }
  const config = typeof text === "object" && text !== null ? text as Record<string, any> : { text }
  const params = (config["values"] ?? values ?? []) as Array<unknown>
  const native: PgNativeOptions = { rowMode: config["rowMode"], types: config["types"] }
  const call: ExecuteOptions | undefined = typeof config["query_timeout"] === "number"
    ? { timeout: config["query_timeout"] }
    : undefined
  return {
    sql: config["text"] as string,
    params,
    native,
    call,
    callback: (callback ?? config["callback"]) as Callback | undefined
  }
}

/** Settles `callback` when given, else returns a promise: pg's convention. */
const settle = <A>(callback: Callback | undefined, start: (done: (err: unknown, value?: A) => void) => void): Promise<A> | undefined => {
  if (callback !== undefined) {
    start((err, value) => (err === undefined ? callback(null, value) : callback(err as Error)))
    return undefined
  }
  return new Promise<A>((resolve, reject) => start((err, value) => (err === undefined ? resolve(value!) : reject(err))))
}

/** A transaction's start as pg clients send it: `BEGIN` or `START TRANSACTION`, with or without options. */
const BEGIN = /^\s*(?:begin|start\s+transaction)\b[^;]*;?\s*$/i

/** What pg resolves a BEGIN with. */
const beginResult = (): Pg.QueryResult => {
  const result = new (Pg as unknown as { Result: new () => Pg.QueryResult & { addCommandComplete(msg: { text: string }): void } }).Result()
  result.addCommandComplete({ text: "BEGIN" })
  return result
}

const usedAfterEnd = () => new Error("Cannot use a pool after calling end on the pool")

/**
 * A client checked out with `pool.connect()`: one of our pooled connections,
 * held until `release()`. `BEGIN`/`COMMIT` sent on it work as on `pg`; one
 * still open at release is rolled back before the connection is reused. A
 * `BEGIN` resolves at once and goes out with the next statement, so that it
 * costs no round trip of its own; if the server refuses it, that statement fails.
 *
 * @since 0.3.0
 */
export class DalPgClient extends EventEmitter {
  /** The current checkout; `undefined` while the client is back in the pool. */
  private lease: Native.NativeConnection | undefined = undefined

  constructor(private readonly pool: DalPgPool, readonly driver: Native.NativeConnection["driver"]) {
    super()
  }

  /** @internal */
  checkedOut(lease: Native.NativeConnection): this {
    this.lease = lease
    return this
  }

  /** Whether the client is checked out now. */
  get active(): boolean {
    return this.lease !== undefined
  }

  /** The backend's process id, as on `pg.Client`. */
  get processID(): number | undefined {
    return this.driver.serverId()
  }

  /**
   * `pg.Client.query`: text and values, a query config (`rowMode`, `types`),
   * or a submittable such as a `pg-cursor` `Cursor`, which runs on this
   * connection's own `pg.Client` and is returned.
   */
  query(text: any, values?: any, callback?: any): any {
    if (typeof text?.submit === "function") {
      const client = this.lease === undefined ? undefined : pgClientOf(this.driver)
      if (client === undefined) throw new Error("Client was released to the pool: it cannot run a submittable")
      // a held BEGIN goes first: pg runs its queries in order
      const begin = this.driver.heldBegin?.take()
      if (begin !== undefined) client.query(begin).catch(() => {})
      return client.query(text)
    }
    const q = queryArgs(text, values, callback)
    return settle(q.callback, (done) => {
      const lease = this.lease
      if (lease === undefined) return done(new Error("Client was released to the pool: it cannot run queries"))
      const held = lease.driver.heldBegin
      if (q.params.length === 0 && held !== undefined && BEGIN.test(q.sql)) {
        // held to go out with the transaction's first statement, as our own transactions' BEGIN is:
        // no round trip of its own (a BEGIN the server refuses fails that statement instead)
        held.hold(q.sql)
        return queueMicrotask(() => done(undefined, beginResult()))
      }
      this.pool.runner.runCallback(
        () => lease.execute(q.sql, q.params, q.native, q.call),
        (err, result) => done(err === undefined ? undefined : Native.driverError(err), result)
      )
    })
  }

  /**
   * Hands the client back to the pool; with an error (or `true`), the
   * connection is closed instead, as `pg` does. Releasing twice throws.
   */
  release(err?: Error | boolean): void {
    const lease = this.lease
    if (lease === undefined) throw new Error("Release called on client which has already been released to the pool.")
    this.lease = undefined
    const discard = err === true || err instanceof Error
    this.pool.released(this, lease, discard, err instanceof Error ? err : undefined)
  }

  /** `pg.Client.escapeIdentifier`. */
  escapeIdentifier(name: string): string {
    return Pg.escapeIdentifier(name)
  }

  /** `pg.Client.escapeLiteral`. */
  escapeLiteral(value: string): string {
    return Pg.escapeLiteral(value)
  }
}

/**
 * The pool `createPgPool` returns: a `pg.Pool` (so `instanceof Pool` holds)
 * whose connections, breaker, retries and metrics are effect-dal's.
 *
 * @since 0.3.0
 */
export class DalPgPool extends Pg.Pool {
  /** The database this pool runs on. */
  readonly runner: Runner.Runner
  private readonly clients = new WeakMap<Native.NativeConnection["driver"], DalPgClient>()
  private endCalled = false
  private unsubscribe: (() => void) | undefined = undefined
  private db: DbService | undefined = undefined

  constructor(options: PgPoolOptions = {}) {
    const o = databaseOptions(options)
    super({ max: o.pool?.max ?? 10 })
    this.runner = Runner.make(PgDatabase.layer(o))
    // the pool's connection events, as soon as the database is up
    this.runner.db().then((db) => {
      this.db = db
      this.unsubscribe = db.native.subscribe((event) => {
        const client = this.clientOf(event.driver)
        if (event._tag === "created") {
          // an idle client's error goes to the pool's listeners, a checked-out one's to the client's, as on pg
          pgClientOf(event.driver)?.on("error", (err) => {
            const target: EventEmitter = client.active ? client : this
            if (target.listenerCount("error") > 0) target.emit("error", err, client)
          })
          this.emit("connect", client)
        } else {
          this.clients.delete(event.driver)
          this.emit("remove", client)
        }
      })
    }, () => {})
  }

  private clientOf(driver: Native.NativeConnection["driver"]): DalPgClient {
    let client = this.clients.get(driver)
    if (client === undefined) {
      client = new DalPgClient(this, driver)
      this.clients.set(driver, client)
    }
    return client
  }

  /** `pool.query`: one statement on a connection of the pool, with retries where safe. */
  override query(text: any, values?: any, callback?: any): any {
    if (typeof text?.submit === "function") {
      throw new TypeError("pool.query cannot run a submittable (a cursor or a stream): check a client out with pool.connect()")
    }
    const q = queryArgs(text, values, callback)
    return settle(q.callback, (done) => {
      if (this.endCalled) return done(usedAfterEnd())
      this.runner.runCallback(
        (db) => db.native.execute(q.sql, q.params, q.native, q.call),
        (err, result) => done(err === undefined ? undefined : Native.driverError(err), result)
      )
    })
  }

  /** `pool.connect`: a client checked out until `release()`; the callback also gets `release`. */
  override connect(callback?: any): any {
    const checkout = (done: (err: unknown, client?: DalPgClient) => void) => {
      if (this.endCalled) return done(usedAfterEnd())
      this.runner.runCallback((db) => db.native.checkout, (err, lease) => {
        if (err !== undefined) return done(Native.driverError(err))
        const client = this.clientOf(lease!.driver).checkedOut(lease!)
        this.emit("acquire", client)
        done(undefined, client)
      })
    }
    if (callback === undefined) return settle<DalPgClient>(undefined, checkout)
    checkout((err, client) =>
      err === undefined ? callback(null, client, (e?: Error | boolean) => client!.release(e)) : callback(err)
    )
  }

  /** @internal */
  released(client: DalPgClient, lease: Native.NativeConnection, discard: boolean, err: Error | undefined): void {
    this.emit("release", err, client)
    lease.releaseNow(discard)
  }

  /**
   * `pool.end`: no new work; waits for checked-out clients to be released
   * (up to the pool's `closeTimeout`), then closes every connection.
   */
  override end(callback?: any): any {
    return settle<void>(callback, (done) => {
      if (this.endCalled) return done(new Error("Called end on pool more than once"))
      this.endCalled = true
      Object.assign(this, { ending: true })
      this.unsubscribe?.()
      this.runner.close().then(() => {
        Object.assign(this, { ended: true })
        done(undefined)
      }, done)
    })
  }

  /** The pool's counts, as our pool keeps them. */
  stats() {
    return this.db?.poolStats()
  }
}

// pg declares the counts as properties of the pool; ours come from our pool's counts
Object.defineProperties(DalPgPool.prototype, {
  totalCount: { get(this: DalPgPool) { return this.stats()?.size ?? 0 } },
  idleCount: { get(this: DalPgPool) { return this.stats()?.idle ?? 0 } },
  waitingCount: { get(this: DalPgPool) { return this.stats()?.pending ?? 0 } },
  expiredCount: { get: () => 0 }
})

/**
 * A `pg.Pool`-compatible pool on effect-dal: pass it wherever a `pg.Pool`
 * goes (`new PostgresDialect({ pool })`, `drizzle(pool)`). Nothing connects
 * until the first query.
 *
 * @since 0.3.0
 */
export const createPgPool = (options?: PgPoolOptions): DalPgPool => new DalPgPool(options)

/**
 * A `mysql2` pool that runs on effect-dal: `createMysqlPool(options)`
 * returns an object with mysql2's callback pool interface (`query`,
 * `execute`, `getConnection` with `release`, `end`, the events), and
 * `.promise()` gives mysql2's promise interface, so that Kysely's
 * `MysqlDialect`, `drizzle-orm/mysql2` and plain mysql2 code get our pool,
 * circuit breaker, retries, timeouts, statement cache and metrics unchanged.
 *
 * @since 0.3.0
 */
import type { DbService, ExecuteOptions } from "@effect-dal/core"
import { Native, Runner } from "@effect-dal/core"
import * as Redacted from "effect/Redacted"
import { EventEmitter } from "node:events"
import * as Mysql from "mysql2"
import type { MysqlNativeOptions } from "./internal/driver.js"
import { mysqlConnectionOf } from "./internal/driver.js"
import * as MysqlDatabase from "./MysqlDatabase.js"

/**
 * Options of `createMysqlPool`: ours (`MysqlDatabaseOptions`), or mysql2's
 * pool option names for the same things.
 *
 * @since 0.3.0
 */
export interface MysqlPoolOptions extends Omit<MysqlDatabase.MysqlDatabaseOptions, "password"> {
  /** A plain string, as mysql2 takes it, or `Redacted`. */
  readonly password?: string | Redacted.Redacted | undefined
  /** mysql2's name for `url`. */
  readonly uri?: string | undefined
  /** mysql2's name for `pool.max`. */
  readonly connectionLimit?: number | undefined
  /** mysql2's name for `pool.idleTimeout`, in ms. */
  readonly idleTimeout?: number | undefined
}

/** mysql2's option names folded into ours; ours win where both are given. */
const databaseOptions = (o: MysqlPoolOptions): MysqlDatabase.MysqlDatabaseOptions => ({
  ...o,
  url: o.url ?? o.uri,
  password: typeof o.password === "string" ? Redacted.make(o.password) : o.password,
  pool: {
    ...o.pool,
    max: o.pool?.max ?? o.connectionLimit,
    idleTimeout: o.pool?.idleTimeout ?? o.idleTimeout
  }
})

/** mysql2's query callback. */
export type Callback = (err: Error | null, results?: any, fields?: any) => void

/** What `query(sql | options, values?, callback?)` was given, as mysql2 reads it. */
const queryArgs = (method: "query" | "execute", sql: unknown, values: unknown, callback: unknown) => {
  if (typeof values === "function") {
    callback = values
    values = undefined
  }
  const { sql: text, values: own, timeout, ...options } = typeof sql === "object" && sql !== null
    ? sql as Mysql.QueryOptions
    : { sql: sql as string } as Mysql.QueryOptions
  const native: MysqlNativeOptions = { ...options, method }
  const call: ExecuteOptions | undefined = typeof timeout === "number" ? { timeout } : undefined
  const params = (own ?? values ?? []) as Array<unknown>
  return { sql: text, params: Array.isArray(params) ? params : [params], native, call, callback: callback as Callback | undefined }
}

/** Delivers a `[results, fields]` outcome to a mysql2-style callback. */
const deliver = (callback: Callback) => (err: unknown, result?: unknown) => {
  if (err !== undefined) return callback(Native.driverError(err) as Error)
  const [results, fields] = result as [unknown, unknown]
  callback(null, results, fields)
}

/** A transaction's start as mysql2 clients send it: `START TRANSACTION` or `BEGIN`, with or without options. */
const BEGIN = /^\s*(?:begin(?:\s+work)?|start\s+transaction\b[^;]*)\s*;?\s*$/i

/** What mysql2 reports for a START TRANSACTION: an OK packet, inside a transaction now. */
const beginResult = () => ({
  fieldCount: 0,
  affectedRows: 0,
  insertId: 0,
  info: "",
  serverStatus: 3,
  warningStatus: 0,
  changedRows: 0
})

const usedAfterEnd = () => Object.assign(new Error("Pool is closed."), { code: "POOL_CLOSED" })

const needsCallback = (what: string) =>
  new TypeError(`${what} needs a callback here; use pool.promise() for promises`)

/**
 * A connection checked out with `getConnection`: one of our pooled
 * connections, held until `release()`. `BEGIN`/`COMMIT` work as on mysql2;
 * a transaction still open at release is rolled back before reuse. `START
 * TRANSACTION` (or `beginTransaction`) answers at once and goes out in one
 * query with the next statement, so that it costs no round trip of its own;
 * if the server refuses it, that statement fails.
 *
 * @since 0.3.0
 */
export class DalMysqlConnection extends EventEmitter {
  private lease: Native.NativeConnection | undefined = undefined

  constructor(private readonly pool: DalMysqlPool, readonly driver: Native.NativeConnection["driver"]) {
    super()
  }

  /** @internal */
  checkedOut(lease: Native.NativeConnection): this {
    this.lease = lease
    return this
  }

  /** The server's thread id, as on mysql2. */
  get threadId(): number | undefined {
    return this.driver.serverId()
  }

  private run(method: "query" | "execute", sql: unknown, values: unknown, callback: unknown): void {
    const q = queryArgs(method, sql, values, callback)
    const done = deliver(q.callback!)
    const lease = this.lease
    if (lease === undefined) return done(new Error("Connection was released to the pool"))
    const held = lease.driver.heldBegin
    if (method === "query" && q.params.length === 0 && held !== undefined && BEGIN.test(q.sql!)) {
      // held to go out with the transaction's first statement, in one query, as our own transactions'
      // START TRANSACTION is: no round trip of its own (if the server refuses it, that statement fails)
      held.hold(q.sql!)
      return queueMicrotask(() => done(undefined, [beginResult(), undefined]))
    }
    this.pool.runner.runCallback(() => lease.execute(q.sql!, q.params, q.native, q.call), done)
  }

  /**
   * mysql2's `query`. With a callback, it runs through our pool's lane;
   * without one it returns mysql2's own `Query` on this connection, for
   * `.stream()` (as Kysely streams).
   */
  query(sql: any, values?: any, callback?: any): any {
    if (typeof values === "function" || typeof callback === "function") return this.run("query", sql, values, callback)
    const conn = this.lease === undefined ? undefined : mysqlConnectionOf(this.driver)
    if (conn === undefined) throw new Error("Connection was released to the pool")
    // a held START TRANSACTION goes first: mysql2 runs its commands in order
    const begin = this.driver.heldBegin?.take()
    if (begin !== undefined) conn.query(begin, () => {})
    return conn.query(sql, values)
  }

  /** mysql2's `execute`: a server-side prepared statement. */
  execute(sql: string | Mysql.QueryOptions, callback: Callback): void
  execute(sql: string | Mysql.QueryOptions, values: any, callback: Callback): void
  execute(sql: any, values?: any, callback?: any): void {
    if (typeof values !== "function" && typeof callback !== "function") throw needsCallback("execute")
    this.run("execute", sql, values, callback)
  }

  /** `START TRANSACTION`. */
  beginTransaction(callback: (err: Error | null) => void): void {
    this.run("query", "START TRANSACTION", [], callback)
  }

  /** `COMMIT`. */
  commit(callback: (err: Error | null) => void): void {
    this.run("query", "COMMIT", [], callback)
  }

  /** `ROLLBACK`. */
  rollback(callback: (err: Error | null) => void): void {
    this.run("query", "ROLLBACK", [], callback)
  }

  /** A round trip. */
  ping(callback: (err: Error | null) => void): void {
    this.run("query", "SELECT 1", [], callback)
  }

  /** Hands the connection back to the pool. */
  release(): void {
    this.giveBack(false)
  }

  /** Closes the connection instead of returning it. */
  destroy(): void {
    this.giveBack(true)
  }

  private giveBack(discard: boolean): void {
    const lease = this.lease
    if (lease === undefined) return
    this.lease = undefined
    this.pool.released(this, lease, discard)
  }

  /** mysql2's `escape`. */
  escape(value: any): string {
    return Mysql.escape(value)
  }

  /** mysql2's `escapeId`. */
  escapeId(name: string): string {
    return Mysql.escapeId(name)
  }

  /** mysql2's `format`. */
  format(sql: string, values?: any): string {
    return Mysql.format(sql, values)
  }

  /** This connection with mysql2's promise interface. */
  promise(): DalMysqlPromiseConnection {
    return new DalMysqlPromiseConnection(this)
  }
}

const promised = <A>(start: (callback: Callback) => void): Promise<A> =>
  new Promise((resolve, reject) => start((err, results, fields) => (err ? reject(err) : resolve([results, fields] as A))))

/**
 * A checked-out connection with mysql2's promise interface.
 *
 * @since 0.3.0
 */
export class DalMysqlPromiseConnection {
  constructor(
    /** The callback connection underneath (mysql2's `.connection`). */
    readonly connection: DalMysqlConnection
  ) {}

  /** `[rows or header, fields]`. */
  query<A = any>(sql: any, values?: any): Promise<[A, Array<Mysql.FieldPacket>]> {
    return promised((cb) => this.connection.query(sql, values ?? [], cb))
  }

  /** `[rows or header, fields]`, as a server-side prepared statement. */
  execute<A = any>(sql: any, values?: any): Promise<[A, Array<Mysql.FieldPacket>]> {
    return promised((cb) => this.connection.execute(sql, values ?? [], cb))
  }

  /** `START TRANSACTION`. */
  beginTransaction(): Promise<void> {
    return promised<void>((cb) => this.connection.beginTransaction(cb)).then(() => {})
  }

  /** `COMMIT`. */
  commit(): Promise<void> {
    return promised<void>((cb) => this.connection.commit(cb)).then(() => {})
  }

  /** `ROLLBACK`. */
  rollback(): Promise<void> {
    return promised<void>((cb) => this.connection.rollback(cb)).then(() => {})
  }

  /** A round trip. */
  ping(): Promise<void> {
    return promised<void>((cb) => this.connection.ping(cb)).then(() => {})
  }

  /** Hands the connection back to the pool. */
  release(): void {
    this.connection.release()
  }

  /** Closes the connection instead of returning it. */
  destroy(): void {
    this.connection.destroy()
  }

  /** The server's thread id. */
  get threadId(): number | undefined {
    return this.connection.threadId
  }
}

/**
 * The pool `createMysqlPool` returns: mysql2's callback pool interface.
 *
 * @since 0.3.0
 */
export class DalMysqlPool extends EventEmitter {
  /** The database this pool runs on. */
  readonly runner: Runner.Runner
  private readonly connections = new WeakMap<Native.NativeConnection["driver"], DalMysqlConnection>()
  private ended = false
  private unsubscribe: (() => void) | undefined = undefined
  private db: DbService | undefined = undefined

  /** The options as mysql2 names them (`connectionLimit`, `host`, …), for code that reads `pool.config`. */
  readonly config: Mysql.PoolOptions

  constructor(options: MysqlPoolOptions = {}) {
    super()
    const o = databaseOptions(options)
    this.config = {
      ...o.poolConfig,
      ...(o.host === undefined ? {} : { host: o.host }),
      ...(o.port === undefined ? {} : { port: o.port }),
      ...(o.user === undefined ? {} : { user: o.user }),
      ...(o.database === undefined ? {} : { database: o.database }),
      ...(o.pool?.max === undefined ? {} : { connectionLimit: o.pool.max })
    }
    this.runner = Runner.make(MysqlDatabase.layer(o))
    this.runner.db().then((db) => {
      this.db = db
      this.unsubscribe = db.native.subscribe((event) => {
        if (event._tag === "created") this.emit("connection", this.connectionOf(event.driver))
        else this.connections.delete(event.driver)
      })
    }, () => {})
  }

  private connectionOf(driver: Native.NativeConnection["driver"]): DalMysqlConnection {
    let conn = this.connections.get(driver)
    if (conn === undefined) {
      conn = new DalMysqlConnection(this, driver)
      this.connections.set(driver, conn)
    }
    return conn
  }

  private run(method: "query" | "execute", sql: unknown, values: unknown, callback: unknown): void {
    const q = queryArgs(method, sql, values, callback)
    if (q.callback === undefined) throw needsCallback(method)
    const done = deliver(q.callback)
    if (this.ended) return done(usedAfterEnd())
    this.runner.runCallback((db) => db.native.execute(q.sql!, q.params, q.native, q.call), done)
  }

  /** mysql2's `pool.query`: one statement on a connection of the pool, with retries where safe. */
  query(sql: string | Mysql.QueryOptions, callback: Callback): void
  query(sql: string | Mysql.QueryOptions, values: any, callback: Callback): void
  query(sql: any, values?: any, callback?: any): void {
    this.run("query", sql, values, callback)
  }

  /** mysql2's `pool.execute`: a server-side prepared statement. */
  execute(sql: string | Mysql.QueryOptions, callback: Callback): void
  execute(sql: string | Mysql.QueryOptions, values: any, callback: Callback): void
  execute(sql: any, values?: any, callback?: any): void {
    this.run("execute", sql, values, callback)
  }

  /** A connection checked out until `release()`. */
  getConnection(callback: (err: Error | null, connection: DalMysqlConnection) => void): void {
    if (this.ended) return callback(usedAfterEnd(), undefined as never)
    this.runner.runCallback((db) => db.native.checkout, (err, lease) => {
      if (err !== undefined) return callback(Native.driverError(err) as Error, undefined as never)
      const conn = this.connectionOf(lease!.driver).checkedOut(lease!)
      this.emit("acquire", conn)
      callback(null, conn)
    })
  }

  /** @internal */
  released(conn: DalMysqlConnection, lease: Native.NativeConnection, discard: boolean): void {
    this.emit("release", conn)
    lease.releaseNow(discard)
  }

  /** mysql2's `releaseConnection`: the same as `connection.release()`. */
  releaseConnection(connection: DalMysqlConnection | DalMysqlPromiseConnection): void {
    connection.release()
  }

  /**
   * mysql2's `unprepare`. Prepared statements here belong to each pooled
   * connection's statement cache, which closes them as it evicts them; there
   * is nothing to close by hand, and nothing is returned.
   */
  unprepare(_sql: string): any {
    return undefined
  }

  /** `end()`, for `using pool = createMysqlPool(…)`. */
  [Symbol.dispose](): void {
    this.end()
  }

  /** Closes the pool: waits for checked-out connections (up to `closeTimeout`), then closes them all. */
  end(callback?: (err: Error | null) => void): void {
    const done = callback ?? (() => {})
    if (this.ended) return done(null)
    this.ended = true
    this.unsubscribe?.()
    this.runner.close().then(() => done(null), (err) => done(err as Error))
  }

  /** mysql2's `escape`. */
  escape(value: any): string {
    return Mysql.escape(value)
  }

  /** mysql2's `escapeId`. */
  escapeId(name: string): string {
    return Mysql.escapeId(name)
  }

  /** mysql2's `format`. */
  format(sql: string, values?: any): string {
    return Mysql.format(sql, values)
  }

  /** The pool's counts, as our pool keeps them. */
  stats() {
    return this.db?.poolStats()
  }

  /**
   * This same pool, typed as mysql2's callback `Pool` for libraries whose
   * types ask for one: `drizzle(pool.asMysql2Pool())`. At runtime nothing
   * changes; what mysql2 exposes beyond the members here (its connections'
   * protocol internals) is not provided.
   */
  asMysql2Pool(): Mysql.Pool {
    return this as unknown as Mysql.Pool
  }

  /** This pool with mysql2's promise interface (what `mysql2/promise` returns). */
  promise(): DalMysqlPromisePool {
    return new DalMysqlPromisePool(this)
  }
}

/**
 * The pool with mysql2's promise interface.
 *
 * @since 0.3.0
 */
export class DalMysqlPromisePool extends EventEmitter {
  constructor(
    /** The callback pool underneath (mysql2's `.pool`). */
    readonly pool: DalMysqlPool
  ) {
    super()
    // the events are the callback pool's
    for (const event of ["connection", "acquire", "release"]) pool.on(event, (...args) => this.emit(event, ...args))
  }

  /** `[rows or header, fields]`. */
  query<A = any>(sql: any, values?: any): Promise<[A, Array<Mysql.FieldPacket>]> {
    return promised((cb) => this.pool.query(sql, values ?? [], cb))
  }

  /** `[rows or header, fields]`, as a server-side prepared statement. */
  execute<A = any>(sql: any, values?: any): Promise<[A, Array<Mysql.FieldPacket>]> {
    return promised((cb) => this.pool.execute(sql, values ?? [], cb))
  }

  /** A connection checked out until `release()`. */
  getConnection(): Promise<DalMysqlPromiseConnection> {
    return new Promise((resolve, reject) =>
      this.pool.getConnection((err, conn) => (err ? reject(err) : resolve(conn.promise())))
    )
  }

  /** Closes the pool. */
  end(): Promise<void> {
    return new Promise((resolve, reject) => this.pool.end((err) => (err ? reject(err) : resolve())))
  }
}

/**
 * A mysql2-compatible pool on effect-dal: the callback interface (Kysely's
 * `MysqlDialect({ pool })`), and `.promise()` for the promise interface
 * (`drizzle(pool)` calls it itself). Nothing connects until the first query.
 *
 * @since 0.3.0
 */
export const createMysqlPool = (options?: MysqlPoolOptions): DalMysqlPool => new DalMysqlPool(options)

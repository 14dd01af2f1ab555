/**
 * Moving a virtual shard between nodes, online: its rows are copied to a
 * staging table on the target while the shard takes reads and writes; then
 * a short freeze (every router holds the shard's calls and all fan-outs)
 * brings the copy up to date, swaps it in, publishes the new owner and
 * deletes the source rows. The freeze is bounded by one pass over the
 * source's rows of that shard.
 *
 * A freeze was chosen over a change log: it needs no trigger or replication
 * slot on the user's tables, works alike on PostgreSQL and MySQL, and the
 * routers already sit on every call. Its cost is the catch-up pass, measured
 * in `dal.sharding.move_freeze_ms`.
 *
 * @internal
 */
import type { DbService } from "@effect-dal/core"
import type * as DbError from "@effect-dal/core/DbError"
import * as Effect from "effect/Effect"
import type * as MetricLabel from "effect/MetricLabel"
import type { ShardMap } from "../Sharding.js"
import { metrics, ShardMoveFailed } from "../Sharding.js"

/**
 * What a move did.
 *
 * @since 0.3.0
 */
export interface MoveReport {
  readonly vshard: number
  readonly from: string
  readonly to: string
  /** Rows of the virtual shard now on `to`. */
  readonly rows: number
  /** How long the virtual shard was frozen, ms (routers polling the map add up to one poll interval). */
  readonly freezeMillis: number
  /** The map version with the new owner. */
  readonly version: number
}

/**
 * Options of a move.
 *
 * @since 0.3.0
 */
export interface MoveOptions {
  /** Rows read and written per statement; default 1,000. */
  readonly batchSize?: number | undefined
}

/** The router registry next to a map table: which routers exist and which map version each has taken. */
export const routersTable = (table: string) => `${table}_routers`

const q = (name: string) => `[${name.replace(/]/g, "]]")}]`

/**
 * Records that router `router` routes by map `version` (and holds nothing
 * in flight on the shards it freezes): the mover waits for this.
 *
 * @internal
 */
export const acknowledge = (db: DbService, table: string, router: string, version: number) =>
  db.insertMany(routersTable(table), [{ router, version, seen_at: Date.now() }], {
    onConflict: { keys: ["router"], action: "update" }
  })

/**
 * The registry's table, created with the map's.
 *
 * @internal
 */
export const createRoutersTable = (table: string) =>
  `CREATE TABLE IF NOT EXISTS ${q(routersTable(table))} ([router] varchar(64) PRIMARY KEY, [version] bigint NOT NULL, [seen_at] bigint NOT NULL)`

/**
 * What a move needs of its router.
 *
 * @internal
 */
export interface MoveContext {
  readonly nodes: Readonly<Record<string, DbService>>
  readonly tables: Readonly<Record<string, string>>
  readonly labels: ReadonlyArray<MetricLabel.MetricLabel>
  readonly map: () => ShardMap
  /** Publishes a map: to the map table when there is one (then `useMap`), else to this router only. */
  readonly publish: (map: ShardMap) => Effect.Effect<void, DbError.DbError>
  /** Waits until this router has nothing in flight on `vshards`, and no fan-out. */
  readonly quiesce: (vshards: ReadonlyArray<number>) => Effect.Effect<void, unknown>
  /** Waits until every other live router has taken `version` (when the map is in a table). */
  readonly acknowledged: (version: number) => Effect.Effect<void, DbError.DbError>
  readonly vshardOf: (key: unknown) => number | undefined
}

/**
 * Moves virtual shard `vshard` to node `to`. Run again after a failure, it
 * resumes: a shard left frozen is finished, or released.
 *
 * @internal
 */
export const move = (
  ctx: MoveContext,
  vshard: number,
  to: string,
  options: MoveOptions = {}
): Effect.Effect<MoveReport, ShardMoveFailed> =>
  Effect.gen(function*() {
    const batch = Math.max(1, options.batchSize ?? 1_000)
    const fail = (stage: ShardMoveFailed["stage"], detail: string) => (cause?: unknown) =>
      new ShardMoveFailed({ vshard, stage, detail, cause })
    const tables = Object.entries(ctx.tables)
    const start = ctx.map()
    if (!Number.isInteger(vshard) || vshard < 0 || vshard >= start.assignment.length) {
      return yield* Effect.fail(fail("check", `there is no virtual shard ${vshard}`)())
    }
    if (ctx.nodes[to] === undefined) return yield* Effect.fail(fail("check", `no node is named "${to}"`)())
    if (tables.length === 0) {
      return yield* Effect.fail(fail("check", "no sharded tables are declared (the `tables` option: table -> key column)")())
    }
    const owner = start.assignment[vshard]!
    const frozen = new Set(start.frozen ?? [])
    const nextMap = (base: ShardMap, changes: { owner?: string; frozen: boolean }): ShardMap => {
      const f = new Set(base.frozen ?? [])
      if (changes.frozen) f.add(vshard)
      else f.delete(vshard)
      return {
        version: base.version + 1,
        assignment: base.assignment.map((n, i) => (i === vshard && changes.owner !== undefined ? changes.owner : n)),
        frozen: [...f]
      }
    }
    // a move that stopped after its cutover: the target owns the shard; only the source's rows are left to delete
    const resumingCleanup = frozen.has(vshard) && owner === to
    const from = resumingCleanup ? undefined : owner
    if (from === to) return { vshard, from: to, to, rows: 0, freezeMillis: 0, version: start.version }
    const target = ctx.nodes[to]!
    const staging = (table: string) => `dal_move_${table}`

    /** Every row of the shard in `table` on `db`, a batch at a time, in key order. */
    const scan = (db: DbService, table: string, key: string, each: (rows: Array<Record<string, unknown>>) => Effect.Effect<void, DbError.DbError>) =>
      Effect.gen(function*() {
        let last: unknown = undefined
        for (;;) {
          const rows: ReadonlyArray<Record<string, unknown>> = yield* db.execute(
            `SELECT * FROM ${q(table)}${last === undefined ? "" : ` WHERE ${q(key)} > ?`} ORDER BY ${q(key)} LIMIT ${batch}`,
            last === undefined ? [] : [last]
          )
          const mine = rows.filter((r) => ctx.vshardOf(r[key]) === vshard)
          if (mine.length > 0) yield* each(mine)
          if (rows.length < batch) return
          last = rows[rows.length - 1]![key]
        }
      })
    const upsert = (db: DbService, table: string, key: string, rows: ReadonlyArray<Record<string, unknown>>) =>
      db.insertMany(table, rows, { onConflict: { keys: [key], action: "update" } })
    const deleteKeys = (db: DbService, table: string, key: string, keys: ReadonlyArray<unknown>) =>
      Effect.forEach(
        Array.from({ length: Math.ceil(keys.length / batch) }, (_, i) => keys.slice(i * batch, (i + 1) * batch)),
        (chunk) => db.execute(`DELETE FROM ${q(table)} WHERE ${q(key)} IN (${chunk.map(() => "?").join(", ")})`, chunk),
        { discard: true }
      )
    const sameRow = (a: Record<string, unknown>, b: Record<string, unknown>) =>
      JSON.stringify(a, (_, v) => (typeof v === "bigint" ? String(v) : v)) ===
        JSON.stringify(b, (_, v) => (typeof v === "bigint" ? String(v) : v))

    let rows = 0
    let freezeStart = Date.now()
    if (from !== undefined) {
      const source = ctx.nodes[from]!
      // 1. the copy, while the shard takes reads and writes (frozen already when resuming a stopped move)
      yield* Effect.mapError(
        Effect.forEach(tables, ([table, key]) =>
          Effect.gen(function*() {
            yield* target.execute(`DROP TABLE IF EXISTS ${q(staging(table))}`)
            yield* target.execute(
              target.dialect.name === "pg"
                ? `CREATE TABLE ${q(staging(table))} (LIKE ${q(table)} INCLUDING ALL)`
                : `CREATE TABLE ${q(staging(table))} LIKE ${q(table)}`
            )
            yield* scan(source, table, key, (batchRows) => Effect.asVoid(upsert(target, staging(table), key, batchRows)))
          }), { discard: true }),
        (e) => fail("copy", "the copy to the target failed")(e)
      )
      // 2. the freeze: this router at once, the others once they acknowledge it
      if (!frozen.has(vshard)) {
        freezeStart = Date.now()
        yield* Effect.mapError(ctx.publish(nextMap(ctx.map(), { frozen: true })), fail("freeze", "the frozen map could not be published"))
      }
      // a move that stops before its cutover releases the shard where it was
      const release = Effect.suspend(() => Effect.ignore(ctx.publish(nextMap(ctx.map(), { frozen: false }))))
      yield* Effect.mapError(
        Effect.zipRight(ctx.quiesce([vshard]), ctx.acknowledged(ctx.map().version)),
        fail("freeze", "calls in flight on the shard did not finish")
      ).pipe(Effect.tapError(() => release))
      // 3. catch up: the staging copy made equal to the source's rows as they are now, then swapped in
      const catchUp = Effect.forEach(tables, ([table, key]) =>
        Effect.gen(function*() {
          const current = new Map<string, Record<string, unknown>>()
          yield* scan(source, table, key, (batchRows) => Effect.sync(() => batchRows.forEach((r) => current.set(String(r[key]), r))))
          const copied = new Map<string, Record<string, unknown>>()
          yield* scan(target, staging(table), key, (batchRows) => Effect.sync(() => batchRows.forEach((r) => copied.set(String(r[key]), r))))
          const changed = [...current.values()].filter((r) => {
            const c = copied.get(String(r[key]))
            return c === undefined || !sameRow(c, r)
          })
          const gone = [...copied.values()].filter((r) => !current.has(String(r[key]))).map((r) => r[key])
          if (changed.length > 0) yield* upsert(target, staging(table), key, changed)
          if (gone.length > 0) yield* deleteKeys(target, staging(table), key, gone)
          const keys = [...current.values()].map((r) => r[key])
          // rows a stopped attempt swapped in already are replaced, not duplicated
          yield* target.withTransaction(Effect.zipRight(
            deleteKeys(target, table, key, keys),
            target.execute(`INSERT INTO ${q(table)} SELECT * FROM ${q(staging(table))}`)
          ))
          rows += keys.length
        }), { discard: true })
      yield* Effect.mapError(catchUp, fail("freeze", "the catch-up to the target failed")).pipe(Effect.tapError(() => release))
      // 4. the new owner, still frozen until the source's rows are gone (a fan-out must not count them twice)
      yield* Effect.mapError(
        ctx.publish(nextMap(ctx.map(), { owner: to, frozen: true })),
        fail("cutover", "the map with the new owner could not be published")
      ).pipe(Effect.tapError(() => release))
    }
    // 5. the source's rows deleted, the shard released; resuming, any node but the target may hold them
    const cleanup = Effect.forEach(tables, ([table, key]) =>
      Effect.gen(function*() {
        const holders = from !== undefined ? [from] : Object.keys(ctx.nodes).filter((n) => n !== to)
        for (const holder of holders) {
          const db = ctx.nodes[holder]!
          const keys: Array<unknown> = []
          yield* scan(db, table, key, (batchRows) => Effect.sync(() => batchRows.forEach((r) => keys.push(r[key]))))
          yield* db.withTransaction(deleteKeys(db, table, key, keys))
        }
        yield* Effect.ignore(target.execute(`DROP TABLE IF EXISTS ${q(staging(table))}`))
      }), { discard: true })
    yield* Effect.mapError(cleanup, fail("cleanup", "the source's rows could not be deleted; run the move again to finish"))
    yield* Effect.mapError(
      ctx.publish(nextMap(ctx.map(), { frozen: false })),
      fail("cleanup", "the map could not be published; run the move again to finish")
    )
    const freezeMillis = Date.now() - freezeStart
    metrics.moves.unsafeUpdate(1, ctx.labels)
    metrics.movedRows.unsafeUpdate(rows, ctx.labels)
    metrics.moveFreezeMillis.unsafeUpdate(freezeMillis, ctx.labels)
    return { vshard, from: from ?? "(resumed)", to, rows, freezeMillis, version: ctx.map().version }
  })

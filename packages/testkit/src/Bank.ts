/**
 * The bank invariant under chaos: concurrent transfers between accounts,
 * each a transaction that also writes a unique transfer id to a ledger,
 * while a chaos fiber breaks connections, cancels queries and disturbs the
 * network. Afterwards the money must add up, and the ledger must agree with
 * what every caller was told.
 *
 * @since 0.1.0
 */
import { Db } from "@effect-dal/core"
import type { DbError } from "@effect-dal/core"
import { expect } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"

/**
 * How a run went.
 *
 * @since 0.1.0
 */
export interface BankReport {
  readonly committed: number
  readonly failedByCategory: Record<string, number>
  readonly outcomeUnknown: number
  readonly retries: number
  readonly chaosActions: Record<string, number>
  readonly slowestMillis: number
  /** Transfers reported committed and missing from the ledger (0 unless `measureLoss`, which tolerates them). */
  readonly lost: number
}

/**
 * The run's shape.
 *
 * @since 0.1.0
 */
export interface BankOptions {
  readonly accounts: number
  readonly workers: number
  readonly durationMillis: number
  /** Every call must return within this, whatever happens. */
  readonly callBoundMillis: number
  /** Named disturbances; one runs every `chaosEveryMillis`, picked at random. */
  readonly chaos: Record<string, Effect.Effect<void>>
  readonly chaosEveryMillis: number
  /** Undoes lasting disturbances (heals the proxy) before the final checks. */
  readonly heal: Effect.Effect<void>
  /** Open transactions of ours still on the server. */
  readonly openTransactions: Effect.Effect<number>
  /**
   * Count committed transfers missing from the ledger instead of failing on
   * them (asynchronous failover loses some); every other invariant still holds.
   */
  readonly measureLoss?: boolean | undefined
}

const INITIAL = 1_000

/**
 * Runs the bank and checks every invariant; returns the counts.
 *
 * @since 0.1.0
 */
export const run = (prefix: string, options: BankOptions): Effect.Effect<BankReport, DbError.DbError, Db> =>
  Effect.gen(function*() {
    const db = yield* Db
    const accounts = `${prefix}_accounts`
    const ledger = `${prefix}_ledger`
    yield* Db.execute(`CREATE TABLE [${accounts}] (id int PRIMARY KEY, balance int NOT NULL)`)
    yield* Db.execute(
      `CREATE TABLE [${ledger}] (transfer_id varchar(64) PRIMARY KEY, from_id int NOT NULL, to_id int NOT NULL, amount int NOT NULL)`
    )
    yield* Db.executeMany(
      `INSERT INTO [${accounts}] (id, balance) VALUES (?, ?)`,
      Array.from({ length: options.accounts }, (_, i) => [i + 1, INITIAL])
    )
    const retriesBefore = db.resilienceStats().retries

    const committed = new Set<string>()
    const failed = new Map<string, string>()
    const unknown = new Set<string>()
    let slowest = 0
    let stop = false
    let seq = 0

    const transfer = (id: string, from: number, to: number, amount: number) =>
      Db.withTransaction(
        Effect.gen(function*() {
          yield* Db.execute(`UPDATE [${accounts}] SET balance = balance - ? WHERE id = ?`, [amount, from])
          yield* Db.execute(`UPDATE [${accounts}] SET balance = balance + ? WHERE id = ?`, [amount, to])
          yield* Db.execute(`INSERT INTO [${ledger}] (transfer_id, from_id, to_id, amount) VALUES (?, ?, ?, ?)`, [
            id,
            from,
            to,
            amount
          ])
        }),
        { retry: true }
      )

    const worker = Effect.gen(function*() {
      while (!stop) {
        const from = 1 + Math.floor(Math.random() * options.accounts)
        let to = 1 + Math.floor(Math.random() * (options.accounts - 1))
        if (to >= from) to++
        const id = `${prefix}-${++seq}`
        const start = Date.now()
        const exit = yield* Effect.exit(
          Effect.timeoutFail(transfer(id, from, to, 1 + Math.floor(Math.random() * 50)), {
            duration: options.callBoundMillis,
            onTimeout: () => "HUNG" as const
          })
        )
        slowest = Math.max(slowest, Date.now() - start)
        if (Exit.isSuccess(exit)) committed.add(id)
        else {
          const error = exit.cause._tag === "Fail" ? exit.cause.error : undefined
          expect(error, `transfer ${id} returned only after ${Date.now() - start} ms`).not.toBe("HUNG")
          const category = typeof error === "object" && error !== null ? (error as DbError.DbError).category : "defect"
          if (category === "outcomeUnknown") unknown.add(id)
          else failed.set(id, category)
        }
      }
    })

    const chaosActions: Record<string, number> = {}
    const names = Object.keys(options.chaos)
    const chaos = Effect.gen(function*() {
      while (!stop) {
        yield* Effect.sleep(options.chaosEveryMillis * (0.5 + Math.random()))
        const name = names[Math.floor(Math.random() * names.length)]!
        chaosActions[name] = (chaosActions[name] ?? 0) + 1
        yield* Effect.ignore(options.chaos[name]!)
      }
    })

    const workers = yield* Effect.forEach(Array.from({ length: options.workers }), () => Effect.fork(worker))
    const chaosFiber = yield* Effect.fork(chaos)
    yield* Effect.sleep(options.durationMillis)
    stop = true
    yield* Fiber.join(chaosFiber)
    yield* Fiber.joinAll(workers)
    yield* options.heal

    // the pool settles back to normal, and nothing of ours is left open on the server
    yield* eventually(Effect.sync(() => db.poolStats().active === 0 && db.poolStats().pending === 0), 10_000)
    yield* eventually(Effect.map(options.openTransactions, (n) => n === 0), 10_000)

    const [total] = yield* Db.execute<{ total: unknown }>(`SELECT SUM(balance) AS total FROM [${accounts}]`)
    expect(Number(total!.total)).toBe(options.accounts * INITIAL)

    const rows = yield* Db.execute<{ transfer_id: string; from_id: number; to_id: number; amount: number }>(
      `SELECT transfer_id, from_id, to_id, amount FROM [${ledger}]`
    )
    const inLedger = new Set(rows.map((r) => r.transfer_id))
    expect(inLedger.size).toBe(rows.length)
    let lost = 0
    for (const id of committed) {
      if (options.measureLoss === true) lost += inLedger.has(id) ? 0 : 1
      else expect(inLedger.has(id), `committed transfer ${id} is in the ledger`).toBe(true)
    }
    for (const id of failed.keys()) expect(inLedger.has(id), `failed transfer ${id} is not in the ledger`).toBe(false)
    for (const id of inLedger) expect(committed.has(id) || unknown.has(id)).toBe(true)

    // every balance is exactly what the ledger says, so each transfer applied all or nothing, once
    const expected = new Map<number, number>()
    for (let i = 1; i <= options.accounts; i++) expected.set(i, INITIAL)
    for (const r of rows) {
      expected.set(Number(r.from_id), expected.get(Number(r.from_id))! - Number(r.amount))
      expected.set(Number(r.to_id), expected.get(Number(r.to_id))! + Number(r.amount))
    }
    const balances = yield* Db.execute<{ id: number; balance: number }>(`SELECT id, balance FROM [${accounts}]`)
    for (const b of balances) expect(Number(b.balance)).toBe(expected.get(Number(b.id)))

    yield* Db.execute(`DROP TABLE [${ledger}]`)
    yield* Db.execute(`DROP TABLE [${accounts}]`)

    const failedByCategory: Record<string, number> = {}
    for (const category of failed.values()) failedByCategory[category] = (failedByCategory[category] ?? 0) + 1
    return {
      committed: committed.size,
      failedByCategory,
      outcomeUnknown: unknown.size,
      retries: db.resilienceStats().retries - retriesBefore,
      chaosActions,
      slowestMillis: slowest,
      lost
    }
  })

/**
 * Polls until `check` holds, for at most `millis`.
 *
 * @since 0.1.0
 */
export const eventually = <E, R>(check: Effect.Effect<boolean, E, R>, millis = 5_000) =>
  Effect.gen(function*() {
    const deadline = Date.now() + millis
    while (!(yield* check)) {
      if (Date.now() > deadline) return yield* Effect.die(new Error("condition not met in time"))
      yield* Effect.sleep(20)
    }
  })

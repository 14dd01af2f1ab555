/**
 * The coordinator side of the two-phase commit suite: the bank's transfer,
 * and the process the kill tests run and kill. Kept apart from the suite
 * so that the process does not load the test runner.
 *
 * @since 0.3.0
 */
import { Db } from "@effect-dal/core"
import type { DbService } from "@effect-dal/core"
import { Sharding } from "@effect-dal/routing"
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"

/**
 * Where a node's database is.
 *
 * @since 0.3.0
 */
export interface Endpoint {
  readonly host: string
  readonly port: number
  readonly database: string
}

/**
 * An engine's layer for one shard node; `statementTimeout` bounds a
 * statement sent to a node that was lost.
 *
 * @since 0.3.0
 */
export type NodeLayer = (
  endpoint: Endpoint,
  alias: string,
  statementTimeout?: Duration.DurationInput
) => Layer.Layer<Db, unknown>

/**
 * A transfer between two accounts of the bank, atomic across their nodes.
 *
 * @since 0.3.0
 */
// both rows are locked in key order: a lock cycle across nodes has no detector
export const transfer = (sharded: Sharding.Sharded, id: number, from: number, to: number, amount: number, abandon = false) =>
  sharded.withAtomicTransaction(Effect.gen(function*() {
    const balances = new Map<number, number>()
    for (const account of from < to ? [from, to] : [to, from]) {
      const [row] = yield* sharded.execute<{ balance: unknown }>(
        account,
        "SELECT [balance] FROM [accounts] WHERE [id] = ? FOR UPDATE",
        [account]
      )
      balances.set(account, Number(row!.balance))
    }
    if (balances.get(from)! < amount) return "insufficient" as const
    yield* sharded.execute(from, "UPDATE [accounts] SET [balance] = [balance] - ? WHERE [id] = ?", [amount, from])
    yield* sharded.execute(to, "UPDATE [accounts] SET [balance] = [balance] + ? WHERE [id] = ?", [amount, to])
    yield* sharded.execute(to, "INSERT INTO [ledger] ([transfer], [amount]) VALUES (?, ?)", [id, amount])
    if (abandon) return yield* Effect.fail("abandoned" as const)
    return "moved" as const
  }))

/**
 * The coordinator process of the kill tests: reads its nodes and one
 * transfer from argv (JSON), runs it, prints `done`.
 *
 * @since 0.3.0
 */
export const main = (layer: NodeLayer): void => {
  const config = JSON.parse(process.argv[2]!) as {
    name: string
    nodes: Record<string, Endpoint>
    /** The decision log's database, reached as a node of its own that owns no virtual shard. */
    log?: Endpoint
    transfer: { id: number; from: number; to: number; amount: number }
  }
  const program = Effect.gen(function*() {
    const nodes: Record<string, DbService> = {}
    const endpoints = { ...config.nodes, ...(config.log === undefined ? {} : { log: config.log }) }
    for (const [name, endpoint] of Object.entries(endpoints)) {
      nodes[name] = Context.get(yield* Layer.build(layer(endpoint, name)), Db)
    }
    const sharded = Sharding.make({
      name: config.name,
      nodes,
      keyType: "bigint",
      map: Sharding.evenMap(Object.keys(config.nodes)),
      decisionLog: { node: config.log === undefined ? Object.keys(config.nodes)[0]! : "log" }
    })
    const { amount, from, id, to } = config.transfer
    yield* transfer(sharded, id, from, to, amount)
    process.stdout.write("done\n")
  })
  Effect.runPromise(Effect.scoped(program)).then(() => process.exit(0), (error) => {
    process.stderr.write(`${String(error)}\n`)
    process.exit(1)
  })
}


/**
 * The two-phase commit suite, written once and run per engine: a bank moving
 * money across shards atomically, and the coordinator stopped at each point
 * of the protocol (its fiber interrupted, a participant lost after the
 * decision, the process killed with SIGKILL) and recovered.
 *
 * @since 0.3.0
 */
import { Db, DbError } from "@effect-dal/core"
import type { DbService } from "@effect-dal/core"
import { Sharding } from "@effect-dal/routing"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as MetricLabel from "effect/MetricLabel"
import * as Scope from "effect/Scope"
import { spawn } from "node:child_process"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import type { Endpoint, NodeLayer } from "./AtomicCoordinator.js"
import { transfer } from "./AtomicCoordinator.js"
import * as FaultProxy from "./FaultProxy.js"
import { until } from "./Traffic.js"

/**
 * What the suite needs of an engine.
 *
 * @since 0.3.0
 */
export interface AtomicProfile {
  readonly name: string
  readonly shards: number
  /** The server the shards' databases live on (with prepared transactions enabled), for the suite's duration. */
  readonly server: Effect.Effect<{ readonly host: string; readonly port: number }, never, Scope.Scope>
  /** Creates a database on the server, dropped when the scope closes. */
  readonly createDatabase: (
    server: { readonly host: string; readonly port: number },
    name: string
  ) => Effect.Effect<void, never, Scope.Scope>
  /** The engine's layer for one node; `statementTimeout` bounds a statement sent to a lost node. */
  readonly layer: NodeLayer
  /** A statement that, inside a transaction, blocks other sessions' INSERTs into `table` until it ends. */
  readonly blockInserts: (table: string) => string
  /** The coordinator process of the kill tests: a script calling `AtomicCoordinator.main` with this engine's layer. */
  readonly fixture: string
}

const ACCOUNTS = 60
const OPENING = 1_000
const LOG = "dal_2pc_log"

/**
 * Registers the suite for one engine.
 *
 * @since 0.3.0
 */
export const suite = (profile: AtomicProfile): void => {
  const names = Array.from({ length: profile.shards }, (_, i) => `s${i + 1}`)
  const scope = Effect.runSync(Scope.make())
  const run = <A, E>(effect: Effect.Effect<A, E>) => Effect.runPromise(effect)
  const inScope = <A, E>(effect: Effect.Effect<A, E, Scope.Scope>) => run(Scope.extend(effect, scope))
  const endpoints: Record<string, Endpoint> = {}
  const nodes: Record<string, DbService> = {}
  let server: { host: string; port: number }
  let sharded: Sharding.Sharded
  // each test's router has its own name: the gids it recovers are only its own
  let counter = 0
  const routerName = () => `atomic_${process.pid}_${counter++}`
  const routerNames = { bank: routerName() }
  const nodeOf = (id: number) => Either.getOrThrow(sharded.nodeOf(id))
  /** Two accounts on different nodes, the second not on `notOn`. */
  const crossPair = (notOn?: string): [number, number] => {
    for (;;) {
      const a = 1 + Math.floor(Math.random() * ACCOUNTS)
      const b = 1 + Math.floor(Math.random() * ACCOUNTS)
      if (nodeOf(a) !== nodeOf(b) && nodeOf(b) !== notOn) return [a, b]
    }
  }
  const balances = async () => {
    const out = new Map<number, number>()
    for (const name of names) {
      for (const r of await run(nodes[name]!.execute<{ id: unknown; balance: unknown }>("SELECT [id], [balance] FROM [accounts]"))) {
        out.set(Number(r.id), Number(r.balance))
      }
    }
    return out
  }
  /** `amount` went from `from` to `to` since `before`. */
  const expectMoved = async (before: Map<number, number>, from: number, to: number, amount: number) => {
    const after = await balances()
    expect([after.get(from), after.get(to)]).toEqual([before.get(from)! - amount, before.get(to)! + amount])
  }
  const total = async () => [...(await balances()).values()].reduce((a, b) => a + b, 0)
  const ledger = async () => {
    const ids: Array<number> = []
    for (const name of names) {
      for (const r of await run(nodes[name]!.execute<{ transfer: unknown }>("SELECT [transfer] FROM [ledger]"))) ids.push(Number(r.transfer))
    }
    return ids.sort((a, b) => a - b)
  }
  /** Prepared branches of ours, on every node. */
  const prepared = async () => {
    const all: Array<string> = []
    for (const name of names) all.push(...(await run(nodes[name]!.twoPhase.prepared)).filter((g) => g.startsWith("dal_")))
    return [...new Set(all)]
  }
  /** Prepared branches that were not there at `baseline`. */
  const preparedSince = async (baseline: ReadonlyArray<string>) => (await prepared()).filter((g) => !baseline.includes(g))
  const decisions = async () =>
    run(nodes[names[0]!]!.execute<{ txid: string; decision: string }>(`SELECT [txid], [decision] FROM [${LOG}]`))
  /** Holds the log's insert lock in a transaction of its own until `release` is called. */
  const blockLog = async () => {
    let release!: () => void
    const released = new Promise<void>((r) => (release = r))
    let locked!: () => void
    const isLocked = new Promise<void>((r) => (locked = r))
    const holder = run(nodes[names[0]!]!.withTransaction(Effect.gen(function*() {
      yield* Db.execute(profile.blockInserts(LOG))
      locked()
      yield* Effect.promise(() => released)
    })).pipe(Effect.provideService(Db, nodes[names[0]!]!)))
    await isLocked
    return async () => {
      release()
      await holder
    }
  }
  const makeRouter = (over: Record<string, DbService> = nodes, name = routerName()) =>
    Sharding.make({ name, nodes: over, keyType: "bigint" })

  describe(`two-phase commit: ${profile.name}, ${profile.shards} shards`, () => {
    beforeAll(async () => {
      server = await inScope(profile.server)
      for (const name of names) {
        const database = `atomic_${name}_${process.pid}`
        await inScope(profile.createDatabase(server, database))
        endpoints[name] = { ...server, database }
        nodes[name] = await inScope(Effect.map(Layer.build(profile.layer(endpoints[name]!, name)), (ctx) => Context.get(ctx, Db)))
        await run(nodes[name]!.execute("CREATE TABLE [accounts] ([id] bigint PRIMARY KEY, [balance] int NOT NULL)"))
        await run(nodes[name]!.execute("CREATE TABLE [ledger] ([transfer] int PRIMARY KEY, [amount] int NOT NULL)"))
      }
      sharded = makeRouter(nodes, routerNames.bank)
      for (let id = 1; id <= ACCOUNTS; id++) {
        await run(sharded.execute(id, "INSERT INTO [accounts] ([id], [balance]) VALUES (?, ?)", [id, OPENING]))
      }
      // the log exists before the tests lock it: one atomic transaction over two nodes writes it
      const [a, b] = crossPair()
      await run(sharded.withAtomicTransaction(Effect.zipRight(
        sharded.execute(a, "SELECT [id] FROM [accounts] WHERE [id] = ? FOR UPDATE", [a]),
        sharded.execute(b, "SELECT [id] FROM [accounts] WHERE [id] = ? FOR UPDATE", [b])
      )))
    }, 120_000)

    afterAll(async () => {
      // a failed test must not leave branches prepared on a shared server
      for (const gid of await prepared().catch(() => [])) {
        for (const name of names) await run(Effect.ignore(nodes[name]!.twoPhase.rollbackPrepared(gid)))
      }
      await run(Scope.close(scope, Exit.void))
    }, 60_000)

    it("a bank moving money across shards keeps its total; every committed transfer is in the ledger once; no branch is left prepared", async () => {
      const committedOutcomes = Sharding.metrics.outcomes.pipe(
        Metric.taggedWithLabels([MetricLabel.make("sharding.name", routerNames.bank), MetricLabel.make("outcome", "committed")])
      )
      const committedBefore = (await run(Metric.value(committedOutcomes))).count
      const moved: Array<number> = []
      const abandoned: Array<number> = []
      let insufficient = 0
      let next = 1_000
      await run(Effect.forEach(Array.from({ length: 8 }), () =>
        Effect.forEach(Array.from({ length: 20 }), () => {
          const id = next++
          const [from, to] = crossPair()
          const abandon = Math.random() < 0.15
          return Effect.either(transfer(sharded, id, from, to, 1 + Math.floor(Math.random() * 300), abandon)).pipe(
            Effect.map((result) => {
              if (Either.isRight(result) && result.right === "moved") moved.push(id)
              else if (Either.isRight(result)) insufficient++
              else if (Either.isLeft(result) && result.left === "abandoned") abandoned.push(id)
              else if (Either.isLeft(result)) throw result.left
            })
          )
        }, { discard: true }), { concurrency: 8, discard: true }))
      expect(moved.length).toBeGreaterThan(50)
      expect(abandoned.length).toBeGreaterThan(0)
      expect(await total()).toBe(ACCOUNTS * OPENING)
      expect(await ledger()).toEqual([...moved].sort((a, b) => a - b))
      expect(await prepared()).toEqual([])
      // committed transfers leave no decision behind; nothing was left for recovery
      expect((await decisions()).filter((d) => d.decision === "commit")).toEqual([])
      expect((await run(Metric.value(committedOutcomes))).count - committedBefore).toBe(moved.length + insufficient)
    }, 120_000)

    it("a body that fails after writing on two nodes changes nothing; one node commits without a prepare", async () => {
      const [a, b] = crossPair()
      const before = await balances()
      const failed = await run(Effect.either(sharded.withAtomicTransaction(Effect.zipRight(
        Effect.zipRight(
          sharded.execute(a, "UPDATE [accounts] SET [balance] = [balance] - 1 WHERE [id] = ?", [a]),
          sharded.execute(b, "UPDATE [accounts] SET [balance] = [balance] + 1 WHERE [id] = ?", [b])
        ),
        Effect.fail("boom" as const)
      ))))
      expect(failed).toEqual(Either.left("boom"))
      expect(await balances()).toEqual(before)
      await run(sharded.withAtomicTransaction(sharded.execute(a, "UPDATE [accounts] SET [balance] = [balance] WHERE [id] = ?", [a])))
      expect(await prepared()).toEqual([])
    })

    it("the coordinator's fiber interrupted between PREPARE and the decision: every branch is rolled back", async () => {
      const router = makeRouter()
      const [from, to] = crossPair()
      const before = await total()
      const baseline = await prepared()
      const unblock = await blockLog()
      const fiber = Effect.runFork(transfer(router, 90_001, from, to, 5))
      // both branches prepared, the decision waiting for the log
      await until(async () => (await preparedSince(baseline)).length === 2, 20_000)
      const interrupted = Effect.runPromise(Fiber.interrupt(fiber))
      // the interruption cancels the waiting decision on the server (a cancel request of its own) before the lock goes
      await new Promise((resolve) => setTimeout(resolve, 1_000))
      await unblock()
      const exit = await interrupted
      expect(Exit.isInterrupted(exit)).toBe(true)
      expect(await prepared()).toEqual([])
      expect(await total()).toBe(before)
      expect((await ledger()).includes(90_001)).toBe(false)
    }, 60_000)

    it("a participant lost between the decision and its COMMIT: the transaction commits, and recovery finishes it (one that cannot reports the branch failed)", async () => {
      // the second node is reached through a proxy that the test makes lose it
      const proxied = { ...nodes }
      // the decision log's node (the first) stays reachable
      const [from, to] = crossPair(names[0])
      const lost = nodeOf(to)
      const proxy = await inScope(FaultProxy.make({ host: server.host, port: server.port }))
      proxied[lost] = await inScope(Effect.map(
        Layer.build(profile.layer({ ...endpoints[lost]!, host: proxy.host, port: proxy.port }, lost, "1 second")),
        (ctx) => Context.get(ctx, Db)
      ))
      const name = routerName()
      const router = makeRouter(proxied, name)
      const before = await balances()
      const baseline = await prepared()
      const unblock = await blockLog()
      const outcome = Effect.runPromise(Effect.either(transfer(router, 90_002, from, to, 7)))
      await until(async () => (await preparedSince(baseline)).length === 2, 20_000)
      await run(proxy.setMode(FaultProxy.blackhole))
      await unblock()
      // the decision is durable: the call reports the transfer committed although one COMMIT did not reach its node
      expect(await outcome).toEqual(Either.right("moved"))
      expect((await decisions()).some((d) => d.decision === "commit")).toBe(true)
      await run(proxy.setMode(FaultProxy.reset))
      await run(proxy.setMode(FaultProxy.pass))
      // a recovery whose COMMIT PREPARED keeps failing counts the branch as failed and leaves it prepared
      const refusing: DbService = {
        ...nodes[lost]!,
        twoPhase: {
          ...nodes[lost]!.twoPhase,
          commitPrepared: () =>
            Effect.fail(new DbError.ConnectionError({ phase: "query", transient: true, code: undefined, sql: undefined, cause: "refused by the test" }))
        }
      }
      const refused = await run(makeRouter({ ...nodes, [lost]: refusing }, name).recover())
      expect(refused).toMatchObject({ committed: 0, rolledBack: 0, failed: 1, unreachable: [] })
      expect(await preparedSince(baseline)).toHaveLength(1)
      const report = await run(makeRouter(nodes, name).recover())
      expect(report).toMatchObject({ committed: 1, failed: 0 })
      expect(await prepared()).toEqual([])
      await expectMoved(before, from, to, 7)
      expect((await ledger()).filter((id) => id === 90_002)).toHaveLength(1)
      // the next recovery forgets the decision: nothing is left to decide
      await run(makeRouter(nodes, name).recover())
      expect((await decisions()).filter((d) => d.decision === "commit")).toEqual([])
    }, 60_000)

    const spawnCoordinator = (
      name: string,
      over: Record<string, Endpoint>,
      t: { id: number; from: number; to: number; amount: number },
      log?: Endpoint
    ) => {
      const config = JSON.stringify({ name, nodes: over, log, transfer: t })
      const child = spawn(process.execPath, ["--import", "tsx", profile.fixture, config], {
        stdio: ["ignore", "pipe", "inherit"]
      })
      const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)))
      return { child, exited }
    }

    it("the coordinator process killed (SIGKILL) between PREPARE and the decision: recovery rolls every branch back", async () => {
      const name = routerName()
      const [from, to] = crossPair()
      const before = await balances()
      // the coordinator reaches its decision log through a proxy that drops everything: its decision never lands
      const proxy = await inScope(FaultProxy.make({ host: server.host, port: server.port }))
      await run(proxy.setMode(FaultProxy.blackhole))
      const baseline = await prepared()
      const { child, exited } = spawnCoordinator(name, endpoints, { id: 90_003, from, to, amount: 11 }, {
        ...endpoints[names[0]!]!,
        host: proxy.host,
        port: proxy.port
      })
      await until(async () => (await preparedSince(baseline)).length === 2, 60_000)
      child.kill("SIGKILL")
      await exited
      const report = await run(makeRouter(nodes, name).recover())
      expect(report.rolledBack).toBe(2)
      const recovered = Metric.taggedWithLabels(Sharding.metrics.recovered, [
        MetricLabel.make("sharding.name", name),
        MetricLabel.make("action", "rollback")
      ])
      expect((await run(Metric.value(recovered))).count).toBe(2)
      expect(await prepared()).toEqual([])
      expect(await balances()).toEqual(before)
      expect((await decisions()).filter((d) => d.decision === "commit")).toEqual([])
    }, 90_000)

    it("the coordinator process killed (SIGKILL) between the decision and the COMMITs: recovery commits what is left", async () => {
      const name = routerName()
      const [from, to] = crossPair(names[0])
      const lost = nodeOf(to)
      const proxy = await inScope(FaultProxy.make({ host: server.host, port: server.port }))
      const before = await balances()
      const baseline = await prepared()
      const unblock = await blockLog()
      const via = { ...endpoints[lost]!, host: proxy.host, port: proxy.port }
      const { child, exited } = spawnCoordinator(name, { ...endpoints, [lost]: via }, {
        id: 90_004,
        from,
        to,
        amount: 13
      })
      await until(async () => (await preparedSince(baseline)).length === 2, 60_000)
      await run(proxy.setMode(FaultProxy.blackhole))
      await unblock()
      // the decision written, then the other branch committed: only the lost node's branch is still prepared
      await until(async () => (await decisions()).some((d) => d.decision === "commit") && (await preparedSince(baseline)).length === 1, 30_000)
      child.kill("SIGKILL")
      await exited
      await run(proxy.setMode(FaultProxy.reset))
      const report = await run(makeRouter(nodes, name).recover())
      expect(report.committed).toBe(1)
      expect(await prepared()).toEqual([])
      await expectMoved(before, from, to, 13)
      expect(await total()).toBe(ACCOUNTS * OPENING)
    }, 90_000)
  })
}

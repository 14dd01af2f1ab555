import { describe, expect, it } from "@effect/vitest"
import { DbError, Pool } from "@effect-dal/core"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"

interface FakeConn {
  readonly id: number
  broken: boolean
  dirty: boolean
  closed: boolean
}

/** An in-memory driver: connections are plain objects; creation can be made to fail. */
const fake = (options: { failCreate?: () => boolean; recycleFails?: boolean } = {}) => {
  let next = 0
  const created: Array<FakeConn> = []
  const hooks: Pool.PoolHooks<FakeConn> = {
    create: Effect.suspend(() => {
      if (options.failCreate?.()) {
        return Effect.fail(
          new DbError.ConnectionError({
            phase: "connect",
            transient: true,
            code: "ECONNREFUSED",
            sql: undefined,
            cause: new Error("connect ECONNREFUSED")
          })
        )
      }
      const conn = { id: next++, broken: false, dirty: false, closed: false }
      created.push(conn)
      return Effect.succeed(conn)
    }),
    destroy: (c) => Effect.sync(() => void (c.closed = true)),
    validate: (c) =>
      c.broken
        ? Effect.fail(
          new DbError.ConnectionError({ phase: "query", transient: true, code: undefined, sql: undefined, cause: "x" })
        )
        : Effect.void,
    isBroken: (c) => c.broken,
    recycle: (c) =>
      c.dirty
        ? options.recycleFails
          ? Effect.fail(new DbError.QueryError({ category: "unknown", code: undefined, transient: false, sql: undefined, cause: "x" }))
          : Effect.sync(() => void (c.dirty = false))
        : undefined
  }
  return { hooks, created }
}

const makePool = (options: Pool.PoolOptions, hooks: Pool.PoolHooks<FakeConn>) =>
  Effect.acquireRelease(
    Pool.make({ alias: "fake", config: Pool.resolveOptions(options), hooks }),
    (pool) => pool.close
  )

describe("Pool", () => {
  it.live("a connection still being cleaned when the pool closes is counted out once: close does not wait for closeTimeout", () =>
    Effect.gen(function*() {
      const { hooks } = fake()
      // the cleanup of a returned connection (a rollback, a cancel settling) takes 30 ms in the background
      const slowClean: Pool.PoolHooks<FakeConn> = { ...hooks, recycle: () => Effect.sleep(30) }
      const pool = yield* Pool.make({
        alias: "fake",
        config: Pool.resolveOptions({ min: 0, max: 2, closeTimeout: "5 seconds" }),
        hooks: slowClean
      })
      const lease = yield* pool.acquire
      yield* pool.release(lease)
      expect(pool.stats().active).toBe(1) // still being cleaned
      const start = Date.now()
      yield* pool.close
      expect(Date.now() - start).toBeLessThan(1_000)
      expect(pool.stats()).toMatchObject({ active: 0, size: 0 })
    }))

  it.live("keeps min connections warm and grows on demand up to max", () =>
    Effect.scoped(
    Effect.gen(function*() {
      const { hooks } = fake()
      const pool = yield* makePool({ min: 2, max: 4 }, hooks)
      yield* Effect.sleep(20)
      expect(pool.stats()).toMatchObject({ size: 2, idle: 2, active: 0 })
      const held = yield* Effect.forEach([1, 2, 3, 4], () => pool.acquire)
      expect(pool.stats()).toMatchObject({ size: 4, active: 4, idle: 0 })
      yield* Effect.forEach(held, pool.release)
      expect(pool.stats()).toMatchObject({ size: 4, active: 0, idle: 4 })
    })))

  it.live("serves waiters first-come first-served", () =>
    Effect.scoped(Effect.gen(function*() {
      const { hooks } = fake()
      const pool = yield* makePool({ min: 1, max: 1 }, hooks)
      const first = yield* pool.acquire
      const order: Array<number> = []
      const fibers = yield* Effect.forEach([0, 1, 2, 3, 4], (i) =>
        Effect.fork(pool.withConnection(() => Effect.sync(() => order.push(i)))).pipe(
          Effect.zipLeft(Effect.sleep(2))
        ))
      expect(pool.stats().pending).toBe(5)
      yield* pool.release(first)
      yield* Fiber.joinAll(fibers)
      expect(order).toEqual([0, 1, 2, 3, 4])
    })))

  it.live("fails a waiter with PoolTimeout 'exhausted' after acquireTimeout, with the busy and waiting counts", () =>
    Effect.scoped(Effect.gen(function*() {
      const { hooks } = fake()
      const pool = yield* makePool({ min: 0, max: 2, acquireTimeout: 100, closeTimeout: 50 }, hooks)
      yield* pool.acquire
      yield* pool.acquire
      const start = Date.now()
      const first = yield* Effect.fork(Effect.flip(pool.acquire))
      yield* Effect.sleep(10)
      const other = yield* Effect.fork(pool.acquire)
      const error = yield* Fiber.join(first)
      const elapsed = Date.now() - start
      expect(error._tag).toBe("PoolTimeout")
      const timeout = error as DbError.PoolTimeout
      expect(timeout.reason).toBe("exhausted")
      expect(timeout.busy).toBe(2)
      expect(timeout.waiting).toBe(2)
      expect(timeout.message).toContain("2 busy of max 2")
      expect(elapsed).toBeGreaterThanOrEqual(95)
      expect(elapsed).toBeLessThan(300)
      yield* Fiber.await(other)
      expect(pool.stats().pending).toBe(0)
    })))

  it.live("reports 'unavailable' with the last connect error when connections cannot be made", () =>
    Effect.scoped(Effect.gen(function*() {
      const { hooks } = fake({ failCreate: () => true })
      const pool = yield* makePool({ min: 0, max: 2, acquireTimeout: 150, connectBackoffBase: 10 }, hooks)
      const error = yield* Effect.flip(pool.acquire)
      expect(error).toMatchObject({ _tag: "PoolTimeout", reason: "unavailable", category: "unavailable" })
      expect((error as DbError.PoolTimeout).cause).toMatchObject({ _tag: "ConnectionError", code: "ECONNREFUSED" })
      expect(error.message).toContain("ECONNREFUSED")
    })))

  it.live("recovers once connections can be made again", () =>
    Effect.scoped(Effect.gen(function*() {
      let down = true
      const { hooks } = fake({ failCreate: () => down })
      const pool = yield* makePool({ min: 1, max: 2, acquireTimeout: 2000, connectBackoffBase: 5, connectBackoffCap: 40 }, hooks)
      yield* Effect.sleep(100)
      expect(pool.stats().size).toBe(0)
      down = false
      const conn = yield* pool.withConnection((c) => Effect.succeed(c.id))
      expect(conn).toBeGreaterThanOrEqual(0)
    })))

  it.live("destroys a broken connection instead of returning it", () =>
    Effect.scoped(Effect.gen(function*() {
      const { hooks, created } = fake()
      const pool = yield* makePool({ min: 0, max: 1 }, hooks)
      yield* pool.withConnection((c) => Effect.sync(() => void (c.broken = true)))
      expect(created[0]!.closed).toBe(true)
      const id = yield* pool.withConnection((c) => Effect.succeed(c.id))
      expect(id).toBe(1)
    })))

  it.live("cleans a dirty connection before reuse, and destroys it when cleaning fails", () =>
    Effect.scoped(Effect.gen(function*() {
      const clean = fake()
      const pool = yield* makePool({ min: 0, max: 1 }, clean.hooks)
      yield* pool.withConnection((c) => Effect.sync(() => void (c.dirty = true)))
      expect(clean.created[0]).toMatchObject({ dirty: false, closed: false })
      expect(pool.stats().idle).toBe(1)

      const failing = fake({ recycleFails: true })
      const pool2 = yield* makePool({ min: 0, max: 1 }, failing.hooks)
      yield* pool2.withConnection((c) => Effect.sync(() => void (c.dirty = true)))
      expect(failing.created[0]!.closed).toBe(true)
      expect(pool2.stats().size).toBe(0)
    })))

  it.live("replaces a dead idle connection found by validation", () =>
    Effect.scoped(Effect.gen(function*() {
      const { hooks, created } = fake()
      const pool = yield* makePool({ min: 0, max: 1, validationWindow: 10 }, hooks)
      yield* pool.withConnection(() => Effect.void)
      created[0]!.broken = false
      yield* Effect.sleep(30)
      created[0]!.broken = true // dies while idle
      const id = yield* pool.withConnection((c) => Effect.succeed(c.id))
      expect(id).toBe(1)
      expect(created[0]!.closed).toBe(true)
    })))

  it.live("an interrupted waiter leaves nothing behind", () =>
    Effect.scoped(Effect.gen(function*() {
      const { hooks } = fake()
      const pool = yield* makePool({ min: 0, max: 1 }, hooks)
      const held = yield* pool.acquire
      const waiter = yield* Effect.fork(pool.acquire)
      yield* Effect.sleep(5)
      expect(pool.stats().pending).toBe(1)
      yield* Fiber.interrupt(waiter)
      expect(pool.stats().pending).toBe(0)
      yield* pool.release(held)
      expect(pool.stats()).toMatchObject({ size: 1, idle: 1, active: 0 })
    })))

  describe("borrow (the callback lane)", () => {
    type Lease = Pool.Lease<FakeConn>
    const borrow = (pool: Pool.Pool<FakeConn>, onLease: (l: Lease) => void, onError: (e: DbError.DbError) => void = () => {}) =>
      Effect.withFiberRuntime<(() => void) | undefined>((fiber) =>
        Effect.succeed(pool.borrow(fiber, undefined, undefined, onLease, onError))
      )

    it.live("lends an idle connection at once, and a returned one straight to the next caller, in order", () =>
      Effect.scoped(Effect.gen(function*() {
        const { hooks } = fake()
        const pool = yield* makePool({ min: 1, max: 1 }, hooks)
        yield* Effect.sleep(10)
        const got: Array<string> = []
        const leases: Record<string, Lease> = {}
        for (const name of ["a", "b", "c"]) {
          yield* borrow(pool, (l) => {
            got.push(name)
            leases[name] = l
          })
        }
        expect(got).toEqual(["a"])
        expect(pool.stats().pending).toBe(2)
        // synchronously: no fiber runs between the return and the next caller's turn
        pool.releaseNow(leases["a"]!)
        expect(got).toEqual(["a", "b"])
        pool.releaseNow(leases["b"]!)
        expect(got).toEqual(["a", "b", "c"])
        pool.releaseNow(leases["c"]!)
        expect(pool.stats()).toMatchObject({ size: 1, idle: 1, active: 0, pending: 0 })
      })))

    it.live("a withdrawn caller leaves the queue and its turn goes to the next", () =>
      Effect.scoped(Effect.gen(function*() {
        const { hooks } = fake()
        const pool = yield* makePool({ min: 1, max: 1 }, hooks)
        yield* Effect.sleep(10)
        let held: Lease | undefined
        const got: Array<string> = []
        yield* borrow(pool, (l) => (held = l))
        const withdraw = yield* borrow(pool, () => got.push("withdrawn"))
        yield* borrow(pool, (l) => {
          got.push("next")
          pool.releaseNow(l)
        })
        withdraw!()
        expect(pool.stats().pending).toBe(1)
        pool.releaseNow(held!)
        expect(got).toEqual(["next"])
        expect(pool.stats()).toMatchObject({ idle: 1, active: 0, pending: 0 })
      })))

    it.live("a waiting caller gets PoolTimeout after acquireTimeout, and PoolClosed when the pool closes", () =>
      Effect.gen(function*() {
        const { hooks } = fake()
        const pool = yield* Pool.make({ alias: "fake", config: Pool.resolveOptions({ min: 1, max: 1, acquireTimeout: 50, closeTimeout: 10 }), hooks })
        yield* Effect.sleep(10)
        yield* borrow(pool, () => {}) // held for good
        const errors: Array<string> = []
        yield* borrow(pool, () => errors.push("leased"), (e) => errors.push(e._tag))
        yield* Effect.sleep(100)
        expect(errors).toEqual(["PoolTimeout"])
        yield* borrow(pool, () => errors.push("leased"), (e) => errors.push(e._tag))
        yield* pool.close
        expect(errors).toEqual(["PoolTimeout", "PoolClosed"])
        yield* borrow(pool, () => errors.push("leased"), (e) => errors.push(e._tag))
        expect(errors).toEqual(["PoolTimeout", "PoolClosed", "PoolClosed"])
      }))

    it.live("ten thousand callers that hand the connection back at once are all served, without growing the stack", () =>
      Effect.scoped(Effect.gen(function*() {
        const { hooks } = fake()
        const pool = yield* makePool({ min: 1, max: 1 }, hooks)
        yield* Effect.sleep(10)
        let held: Lease | undefined
        yield* borrow(pool, (l) => (held = l))
        let served = 0
        for (let i = 0; i < 10_000; i++) {
          // like a statement that fails synchronously: the connection goes back inside the hand-off
          yield* borrow(pool, (l) => {
            served++
            pool.releaseNow(l)
          })
        }
        pool.releaseNow(held!)
        yield* Effect.sleep(50)
        expect(served).toBe(10_000)
        expect(pool.stats()).toMatchObject({ idle: 1, active: 0, pending: 0 })
      })))

    it.live("sends the caller to the effect lane when the idle connection must be validated first", () =>
      Effect.scoped(Effect.gen(function*() {
        const { hooks } = fake()
        const pool = yield* makePool({ min: 1, max: 1, validationWindow: 10 }, hooks)
        yield* Effect.sleep(40)
        let leased = false
        const result = yield* borrow(pool, () => (leased = true))
        expect(result).toBeUndefined()
        expect(leased).toBe(false)
        expect(pool.stats()).toMatchObject({ idle: 1, active: 0, pending: 0 })
      })))
  })

  it.live("close drains borrowed connections up to closeTimeout, then closes everything", () =>
    Effect.gen(function*() {
      const { hooks, created } = fake()
      const pool = yield* Pool.make({ alias: "fake", config: Pool.resolveOptions({ min: 0, max: 2, closeTimeout: 100 }), hooks })
      const a = yield* pool.acquire
      yield* pool.acquire // never released: force-closed after closeTimeout
      const start = Date.now()
      const closing = yield* Effect.fork(pool.close)
      yield* Effect.sleep(20)
      yield* pool.release(a)
      expect(created[0]!.closed).toBe(true)
      yield* Fiber.join(closing)
      expect(Date.now() - start).toBeGreaterThanOrEqual(95)
      expect(created.every((c) => c.closed)).toBe(true)
      expect(pool.stats().size).toBe(0)
      const after = yield* Effect.exit(pool.acquire)
      expect(Exit.isFailure(after) && after.cause._tag === "Fail" && after.cause.error._tag).toBe("PoolClosed")
    }))

  it.live("shrinks back to min after idleTimeout", () =>
    Effect.scoped(Effect.gen(function*() {
      const { hooks } = fake()
      const pool = yield* makePool({ min: 1, max: 5, idleTimeout: 100 }, hooks)
      const held = yield* Effect.forEach([1, 2, 3, 4, 5], () => pool.acquire)
      yield* Effect.forEach(held, pool.release)
      expect(pool.stats().size).toBe(5)
      yield* Effect.sleep(400)
      expect(pool.stats()).toMatchObject({ size: 1, idle: 1 })
    })))
})

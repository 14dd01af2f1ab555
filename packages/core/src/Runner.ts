/**
 * Runs a `Db`'s effects for code without Effect: the Promise API and the
 * driver-compatible pools. One `ManagedRuntime` per database holds the
 * layer (pool, breaker, metrics); each call runs as a fiber of it, an
 * `AbortSignal` interrupts that fiber (which cancels the statement on the
 * server), and a failure comes back as the `Error` it is.
 *
 * @since 0.3.0
 */
import * as Cause from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Fiber from "effect/Fiber"
import type * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import type * as Option from "effect/Option"
import * as Runtime from "effect/Runtime"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import type { DbService } from "./Db.js"
import { Db } from "./Db.js"
import { PoolClosed } from "./DbError.js"

/**
 * Options of one call.
 *
 * @since 0.3.0
 */
export interface CallOptions {
  /** Aborting interrupts the call: a running statement is cancelled on the server. */
  readonly signal?: AbortSignal | undefined
}

/**
 * A database run from Promise-based code.
 *
 * @since 0.3.0
 */
export interface Runner {
  /** The database, built on first use (the layer connects then). */
  readonly db: () => Promise<DbService>
  /** Runs `f`'s effect; the promise rejects with the failure itself (an `Error`), or the signal's reason. */
  readonly run: <A, E>(f: (db: DbService) => Effect.Effect<A, E>, options?: CallOptions) => Promise<A>
  /** `run` with a Node-style callback, for driver APIs that take one. */
  readonly runCallback: <A, E>(
    f: (db: DbService) => Effect.Effect<A, E>,
    done: (error: unknown, value?: A) => void,
    options?: CallOptions
  ) => void
  /**
   * A stream as an async iterable, pulled chunk by chunk (back-pressure);
   * leaving a `for await` loop early, or aborting, ends the stream and frees
   * its connection. A failure is thrown from the loop.
   */
  readonly iterate: <A, E>(f: (db: DbService) => Stream.Stream<A, E>, options?: CallOptions) => AsyncIterable<A>
  /** Closes the database: waits for borrowed connections (up to the pool's `closeTimeout`), then closes them. */
  readonly close: () => Promise<void>
  /** Whether the database is closed (`close` has finished). */
  readonly closed: () => boolean
}

/**
 * What a promise rejects with for a failed call: the failure itself (our
 * errors are `Error`s), a defect as an `Error`, or the signal's reason when
 * it was aborted.
 *
 * @since 0.3.0
 */
export const failureOf = <E>(cause: Cause.Cause<E>, signal?: AbortSignal | undefined): unknown => {
  const failure = Cause.failureOption(cause)
  const defect = failure._tag === "Some" ? failure : Cause.dieOption(cause)
  if (defect._tag === "Some") {
    const value = defect.value
    return value instanceof Error ? value : new Error(String(value), { cause: value })
  }
  if (signal?.aborted === true) return signal.reason
  return new Error(`interrupted: ${Cause.pretty(cause)}`)
}

type Ready = {
  readonly runFork: <A, E>(effect: Effect.Effect<A, E, Db>) => Fiber.RuntimeFiber<A, E>
  readonly db: DbService
}

/**
 * Makes a runner over a database layer. Nothing connects until the first call.
 *
 * @since 0.3.0
 */
export const make = <E>(layer: Layer.Layer<Db, E>): Runner => {
  const managed = ManagedRuntime.make(layer)
  let ready: Ready | undefined
  let starting: Promise<Ready> | undefined
  let closed = false
  let closing: Promise<void> | undefined

  // a layer that fails to build (invalid options) fails every call with its error
  const start = (): Promise<Ready> =>
    starting ??= managed.runPromiseExit(Db).then(async (exit) => {
      if (Exit.isFailure(exit)) throw failureOf(exit.cause, undefined)
      const runtime = await managed.runtime()
      const fork = Runtime.runFork(runtime)
      // started by Effect's scheduler rather than on the caller's tick: calls made while one batch of
      // results is being handled go out together, as they do from fibers (measured: 10–20% more
      // point selects per second than starting each at once)
      ready = { runFork: (effect) => fork(effect, { immediate: false }), db: exit.value }
      return ready
    })

  /** Reports a call's exit to its callback. */
  const report = <A, E2>(exit: Exit.Exit<A, E2>, done: (error: unknown, value?: A) => void, signal: AbortSignal | undefined) =>
    exit._tag === "Success" ? done(undefined, exit.value) : done(failureOf(exit.cause, signal))

  // Calls without a signal run on long-lived worker fibers, one call at a time each: a fiber per call
  // would copy the runtime's FiberRefs and allocate its scheduler state every time. A worker waits
  // for its next call suspended (there are as many as calls ever ran at once) and resumes straight
  // into that call's effect: three steps of the run loop a call (the handler, the wait, the
  // resumption), where `exit`, `map`, `zipRight` and `iterate` took ten.
  type Job = { readonly effect: Effect.Effect<unknown, unknown>; readonly done: (exit: Exit.Exit<unknown, unknown>) => void }
  const idle: Array<(job: Job) => void> = []
  const next: Effect.Effect<never> = Effect.async<never>((resume) => {
    idle.push((job) => resume(serve(job)))
  })
  const serve = (job: Job): Effect.Effect<never> =>
    Effect.matchCauseEffect(job.effect, {
      onFailure: (cause) => {
        job.done(Exit.failCause(cause))
        return next
      },
      onSuccess: (value) => {
        job.done(Exit.succeed(value))
        return next
      }
    })

  /** Runs `effect` on a worker (or, with a signal to interrupt it, a fiber of its own); reports its exit to `done`. */
  const fork = <A, E2>(
    { runFork }: Ready,
    effect: Effect.Effect<A, E2>,
    done: (error: unknown, value?: A) => void,
    signal: AbortSignal | undefined
  ) => {
    if (signal === undefined) {
      const job: Job = { effect, done: (exit) => report(exit as Exit.Exit<A, E2>, done, undefined) }
      const free = idle.pop()
      if (free !== undefined) free(job)
      else runFork(serve(job))
      return
    }
    const fiber = runFork(effect)
    const abort = () => fiber.unsafeInterruptAsFork(fiber.id())
    signal.addEventListener("abort", abort, { once: true })
    fiber.addObserver((exit) => {
      signal.removeEventListener("abort", abort)
      report(exit, done, signal)
    })
  }

  const runCallback = <A, E2>(
    f: (db: DbService) => Effect.Effect<A, E2>,
    done: (error: unknown, value?: A) => void,
    options?: CallOptions
  ): void => {
    const signal = options?.signal
    if (closed) return done(new PoolClosed({ alias: ready?.db.alias ?? "database" }))
    if (signal?.aborted === true) return done(signal.reason)
    if (ready !== undefined) return fork(ready, f(ready.db), done, signal)
    start().then(
      (started) => {
        if (signal?.aborted === true) return done(signal.reason)
        fork(started, f(started.db), done, signal)
      },
      done
    )
  }

  const run = <A, E2>(f: (db: DbService) => Effect.Effect<A, E2>, options?: CallOptions): Promise<A> =>
    new Promise((resolve, reject) =>
      runCallback(f, (error, value) => (error === undefined ? resolve(value!) : reject(error)), options)
    )

  const iterate = <A, E2>(f: (db: DbService) => Stream.Stream<A, E2>, options?: CallOptions): AsyncIterable<A> => ({
    [Symbol.asyncIterator]: () => {
      const signal = options?.signal
      let opened: Promise<{ scope: Scope.CloseableScope; pull: Effect.Effect<Chunk.Chunk<A>, Option.Option<E2>> }> | undefined
      let buffer: ReadonlyArray<A> = []
      let index = 0
      let finished = false
      const open = () =>
        opened ??= run((db) =>
          Effect.flatMap(Scope.make(), (scope) =>
            Effect.map(Scope.extend(Stream.toPull(f(db)), scope), (pull) => ({ scope, pull })))
        )
      const finish = async (): Promise<IteratorResult<A>> => {
        finished = true
        if (opened !== undefined) {
          const { scope } = await opened
          await run(() => Scope.close(scope, Exit.void))
        }
        return { done: true, value: undefined }
      }
      const next = async (): Promise<IteratorResult<A>> => {
        if (index < buffer.length) return { done: false, value: buffer[index++]! }
        if (finished) return { done: true, value: undefined }
        const { pull } = await open()
        // the pull itself is interrupted by the signal; the stream's scope is closed either way
        const chunk = await run(() => Effect.either(pull), { signal }).catch(async (error) => {
          await finish()
          throw error
        })
        if (chunk._tag === "Left") {
          await finish()
          if (chunk.left._tag === "None") return { done: true, value: undefined }
          throw failureOf(Cause.fail(chunk.left.value), signal)
        }
        buffer = Chunk.toReadonlyArray(chunk.right)
        index = 0
        return next()
      }
      return { next, return: finish }
    }
  })

  return {
    db: () => start().then((r) => r.db),
    iterate,
    run,
    runCallback,
    // calls keep running while the pool drains (a checked-out client may still finish its work);
    // the pool itself refuses new acquisitions from the start
    close: () => {
      closing ??= managed.dispose().then(() => {
        closed = true
      })
      return closing
    },
    closed: () => closed
  }
}

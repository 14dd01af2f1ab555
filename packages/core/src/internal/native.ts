/**
 * The native lane: statements in the driver's own SQL and options, for the
 * driver-compatible pools, on the same pool, breaker, retries and metrics.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import type { NativeConnection, NativeLane } from "../Native.js"
import type { DbCore } from "./core.js"
import type { Statements } from "./statements.js"

/**
 * Builds the native lane of a database.
 *
 * @internal
 */
export const makeNative = (core: DbCore, statements: Statements): NativeLane => {
  const { pool, poolListeners, statementTimeout, tagged, taggedHere } = core
  return {
    execute: (sql, params, options, call) =>
      Effect.withFiberRuntime((fiber) =>
        tagged(
          fiber,
          statements.autocommit(fiber, sql, params, call, statementTimeout(call), { native: options }, true),
          call,
          sql
        )
      ),
    checkout: Effect.map(core.acquire, (lease): NativeConnection => {
      let released = false
      // the pool hands a connection back synchronously (its cleanup, if any, runs in the background)
      const releaseNow = (discard?: boolean) => {
        if (released) return
        released = true
        if (discard === true) pool.invalidateNow(lease)
        else pool.releaseNow(lease)
      }
      return {
        driver: lease.conn.driver,
        execute: (sql, params, options, call) =>
          taggedHere(lease.conn.run(sql, params, { native: options }, true, statementTimeout(call)), call, sql),
        release: (discard) => Effect.sync(() => releaseNow(discard)),
        releaseNow
      }
    }),
    subscribe: (listener) => {
      poolListeners.add(listener)
      return () => poolListeners.delete(listener)
    }
  }
}

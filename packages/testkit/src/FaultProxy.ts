/**
 * A TCP proxy for fault tests: it sits between the pool and a real server
 * and can pass traffic through, delay it, blackhole it (accept, never
 * forward) or reset connections.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as net from "node:net"

/**
 * How the proxy treats traffic.
 *
 * @since 0.1.0
 */
export type Mode =
  | { readonly _tag: "pass" }
  | { readonly _tag: "latency"; readonly millis: number }
  | { readonly _tag: "blackhole" }
  | { readonly _tag: "reset" }

/**
 * A running proxy.
 *
 * @since 0.1.0
 */
export interface FaultProxy {
  readonly host: string
  readonly port: number
  /** Switches how new and existing connections behave. `reset` also resets every open connection. */
  readonly setMode: (mode: Mode) => Effect.Effect<void>
  /** Resets every open connection once, leaving the mode as it is. */
  readonly resetAll: Effect.Effect<void>
  /** Open client connections. */
  readonly connections: () => number
}

/** @since 0.1.0 */
export const pass: Mode = { _tag: "pass" }
/** @since 0.1.0 */
export const blackhole: Mode = { _tag: "blackhole" }
/** @since 0.1.0 */
export const reset: Mode = { _tag: "reset" }
/** @since 0.1.0 */
export const latency = (millis: number): Mode => ({ _tag: "latency", millis })

/**
 * Starts a proxy to `target` on a free loopback port, closed with the scope.
 *
 * @since 0.1.0
 */
export const make = (target: { readonly host: string; readonly port: number }): Effect.Effect<FaultProxy, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.async<{ server: net.Server; proxy: FaultProxy; sockets: Set<net.Socket> }>((resume) => {
      let mode: Mode = pass
      const sockets = new Set<net.Socket>()
      const pairs = new Set<{ client: net.Socket; upstream: net.Socket | undefined }>()

      const forward = (to: () => net.Socket | undefined) => (chunk: Buffer) => {
        switch (mode._tag) {
          case "blackhole":
            return // dropped: the other side never hears of it
          case "latency":
            setTimeout(() => to()?.write(chunk), mode.millis)
            return
          default:
            to()?.write(chunk)
        }
      }

      const server = net.createServer((client) => {
        sockets.add(client)
        client.on("close", () => sockets.delete(client))
        client.on("error", () => {})
        if (mode._tag === "reset") {
          client.resetAndDestroy()
          return
        }
        const pair: { client: net.Socket; upstream: net.Socket | undefined } = { client, upstream: undefined }
        pairs.add(pair)
        const pending: Array<Buffer> = []
        const connectUpstream = () => {
          const upstream = net.connect(target.port, target.host)
          pair.upstream = upstream
          sockets.add(upstream)
          upstream.on("close", () => {
            sockets.delete(upstream)
            client.destroy()
          })
          upstream.on("error", () => client.destroy())
          upstream.on("data", forward(() => client))
          for (const chunk of pending) upstream.write(chunk)
          pending.length = 0
        }
        client.on("close", () => {
          pairs.delete(pair)
          pair.upstream?.destroy()
        })
        client.on("data", (chunk) => {
          if (pair.upstream === undefined) {
            if (mode._tag !== "blackhole") pending.push(chunk)
            return
          }
          forward(() => pair.upstream)(chunk)
        })
        // a blackholed connection is accepted but never reaches the server
        if (mode._tag !== "blackhole") connectUpstream()
      })

      const resetAll = Effect.sync(() => {
        for (const pair of pairs) {
          pair.client.resetAndDestroy()
          pair.upstream?.destroy()
        }
        pairs.clear()
      })

      server.listen(0, "127.0.0.1", () => {
        const address = server.address() as net.AddressInfo
        resume(Effect.succeed({
          server,
          sockets,
          proxy: {
            host: "127.0.0.1",
            port: address.port,
            setMode: (next) =>
              Effect.suspend(() => {
                mode = next
                return next._tag === "reset" ? resetAll : Effect.void
              }),
            resetAll,
            connections: () => pairs.size
          }
        }))
      })
    }),
    ({ server, sockets }) =>
      Effect.async<void>((resume) => {
        for (const socket of sockets) socket.destroy()
        server.close(() => resume(Effect.void))
      })
  ).pipe(Effect.map(({ proxy }) => proxy))

import { PgDatabase } from "@effect-dal/pg"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Net from "node:net"
import * as Pg from "pg"

/** The shared local server; tests isolate themselves by schema and alias. */
export const PG_URL = process.env["TEST_PG_URL"] ?? "postgres://postgres@127.0.0.1:5432/test"

let counter = 0
/** A name unique to this process and call, usable as an identifier and an application_name. */
export const unique = (prefix: string): string =>
  `${prefix}_${process.pid}_${Date.now().toString(36)}_${(counter++).toString(36)}`

/** Runs `f` on a short-lived admin connection that is not ours, to the shared server or to `url`. */
export const admin = <A>(f: (client: Pg.Client) => Promise<A>, url: string = PG_URL): Effect.Effect<A> =>
  Effect.promise(async () => {
    const client = new Pg.Client({ connectionString: url, application_name: "effect-dal-test-admin" })
    await client.connect()
    try {
      return await f(client)
    } finally {
      await client.end()
    }
  })

/** Our server-side connections, found by application_name. */
export const backends = (applicationName: string) =>
  admin(async (c) =>
    (await c.query<{ pid: number; state: string | null; query: string }>(
      "SELECT pid, state, query FROM pg_stat_activity WHERE application_name = $1",
      [applicationName]
    )).rows
  )

/** Makes a schema for one test file and drops it afterwards. */
export const schemaFor = (name: string) => ({
  create: admin((c) => c.query(`CREATE SCHEMA IF NOT EXISTS "${name}"`)),
  drop: admin((c) => c.query(`DROP SCHEMA IF EXISTS "${name}" CASCADE`))
})

/** Runs one statement on the server at `url` as an admin; its rows. */
export const on = (url: string, sql: string, params: Array<unknown> = []) =>
  admin(async (c) => (await c.query(sql, params)).rows, url)

/** A shard node of the 2PC suite: one database on a server, its own small pool. */
export const shardNodeLayer = (
  endpoint: { readonly host: string; readonly port: number; readonly database: string },
  alias: string,
  statementTimeout?: Duration.DurationInput
) =>
  PgDatabase.layer({
    url: `postgres://postgres@${endpoint.host}:${endpoint.port}/${endpoint.database}`,
    alias,
    pool: { min: 1, max: 10 },
    statementTimeout
  })

/**
 * A TCP proxy to the shared server that counts the frontend messages of
 * each type (after the startup message), for tests of what goes on the wire.
 */
export const countingProxy = Effect.acquireRelease(
  Effect.async<{
    readonly url: string
    readonly counts: Map<string, number>
    readonly server: Net.Server
    readonly sockets: Set<Net.Socket>
  }>((resume) => {
    const target = new URL(PG_URL)
    const counts = new Map<string, number>()
    const sockets = new Set<Net.Socket>()
    const server = Net.createServer((client) => {
      const upstream = Net.connect(Number(target.port || 5432), target.hostname)
      sockets.add(client).add(upstream)
      let pending = Buffer.alloc(0)
      let started = false
      client.on("data", (chunk: Buffer) => {
        pending = Buffer.concat([pending, chunk])
        for (;;) {
          const header = started ? 5 : 4
          if (pending.length < header) break
          const length = started ? pending.readInt32BE(1) + 1 : pending.readInt32BE(0)
          if (pending.length < length) break
          if (started) {
            const type = String.fromCharCode(pending[0]!)
            counts.set(type, (counts.get(type) ?? 0) + 1)
          }
          started = true
          pending = pending.subarray(length)
        }
        upstream.write(chunk)
      })
      upstream.pipe(client)
      client.on("error", () => upstream.destroy())
      upstream.on("error", () => client.destroy())
      client.on("close", () => upstream.destroy())
      upstream.on("close", () => client.destroy())
    })
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as Net.AddressInfo
      resume(Effect.succeed({ url: `postgres://postgres@127.0.0.1:${port}${target.pathname}`, counts, server, sockets }))
    })
  }),
  ({ server, sockets }) =>
    Effect.async<void>((resume) => {
      for (const socket of sockets) socket.destroy()
      server.close(() => resume(Effect.void))
    })
)

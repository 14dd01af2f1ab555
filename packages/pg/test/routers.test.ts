/**
 * Two replica routers in one program, over different databases: each
 * router's statements run on its own database, whatever transaction of the
 * other router the fiber is in.
 */
import { Db } from "@effect-dal/core"
import type { DbService } from "@effect-dal/core"
import { PgDatabase } from "@effect-dal/pg"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { admin, PG_URL, schemaFor, unique } from "./helpers.js"

const OTHER_URL = PG_URL.replace(/\/[^/?]+(\?|$)/, "/postgres$1")
const schema = unique("dal_routers")
const { create, drop } = schemaFor(schema)
beforeAll(() => Effect.runPromise(Effect.zipRight(create, admin((c) => c.query(`CREATE SCHEMA "${schema}"`), OTHER_URL))))
afterAll(() => Effect.runPromise(Effect.zipRight(drop, admin((c) => c.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`), OTHER_URL))))

/** A router whose one replica is its primary's own server: reads and writes both reach `url`'s database. */
const router = (url: string) =>
  Effect.map(
    Layer.build(PgDatabase.layer({ url: Redacted.make(url), alias: unique("r"), pool: { max: 3 }, replicas: [{ url: Redacted.make(url), alias: unique("rr") }] })),
    (context) => Context.get(context, Db) as DbService
  )

const database = (db: DbService) => Effect.map(db.execute<{ name: string }>("SELECT current_database() AS name"), (rows) => rows[0]!.name)

describe("PostgreSQL: two replica routers over different databases", () => {
  it("inside one router's transaction, the other's reads and writes run on its own database, outside that transaction", async () => {
    const table = `${schema}.${unique("t")}`
    const result = await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const a = yield* router(PG_URL)
      const b = yield* router(OTHER_URL)
      yield* b.execute(`CREATE TABLE [${table}] (id int PRIMARY KEY)`)
      const seen = yield* Effect.flip(a.withTransaction(Effect.gen(function*() {
        const inA = yield* database(a)
        const inB = yield* database(b)
        // a write through the other router: its own database, committed on its own
        yield* b.execute(`INSERT INTO [${table}] VALUES (?)`, [1])
        return yield* Effect.fail({ inA, inB })
      })))
      const kept = yield* b.execute<{ n: number }>(`SELECT count(*)::int AS n FROM [${table}]`)
      // and the other way round, with `Db.transaction` (scoped)
      const scoped = yield* Effect.scoped(Effect.flatMap(b.transaction, () => Effect.all([database(a), database(b)])))
      return { seen, kept: kept[0]!.n, scoped }
    })))
    expect(result.seen).toEqual({ inA: "test", inB: "postgres" })
    expect(result.kept).toBe(1)
    expect(result.scoped).toEqual(["test", "postgres"])
  })
})

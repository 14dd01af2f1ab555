import { describe, expect, it } from "@effect/vitest"
import { Db } from "@effect-dal/core"
import { PgliteDatabase } from "@effect-dal/pglite"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"

describe("PgliteDatabase", () => {
  it.live("keeps data in dataDir across layers, and layers on one dataDir share one database", () => {
    const dir = mkdtempSync(join(tmpdir(), "dal-pglite-"))
    const layer = PgliteDatabase.layer({ dataDir: dir })
    return Effect.gen(function*() {
      yield* Db.execute("CREATE TABLE [kept] (id int)").pipe(Effect.provide(layer))
      yield* Db.execute("INSERT INTO [kept] VALUES (?)", [1]).pipe(Effect.provide(layer))
      // two layers at once on the same directory see the same rows
      const both = Layer.merge(layer, PgliteDatabase.layer({ dataDir: dir }))
      const rows = yield* Db.execute("SELECT id FROM [kept]").pipe(Effect.provide(both))
      expect(rows).toEqual([{ id: 1 }])
    }).pipe(Effect.ensuring(Effect.sync(() => rmSync(dir, { recursive: true, force: true }))))
  }, 60_000)

  it.live("two in-memory layers are two separate databases", () =>
    Effect.gen(function*() {
      yield* Db.execute("CREATE TABLE [only_here] (id int)").pipe(Effect.provide(PgliteDatabase.layer()))
      const exit = yield* Effect.exit(Db.execute("SELECT * FROM [only_here]").pipe(Effect.provide(PgliteDatabase.layer())))
      expect(Exit.isFailure(exit)).toBe(true)
    }), 60_000)

  it.live("DDL rolls back inside a transaction, as on PostgreSQL", () =>
    Effect.gen(function*() {
      yield* Effect.exit(Db.withTransaction(Effect.zipRight(Db.execute("CREATE TABLE [gone] (id int)"), Effect.fail("x"))))
      const exit = yield* Effect.exit(Db.execute("SELECT * FROM [gone]"))
      expect(Exit.isFailure(exit) && exit.cause._tag === "Fail" && exit.cause.error).toMatchObject({ code: "42P01" })
    }).pipe(Effect.provide(PgliteDatabase.layer())), 60_000)
})

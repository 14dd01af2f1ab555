import { PgliteDatabase } from "@effect-dal/pglite"
import { Db } from "@effect-dal/core"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
const L = PgliteDatabase.layer()
const p = Effect.gen(function*() {
  console.log(yield* Db.execute("SELECT 1 AS x, ?::text AS y, 9007199254740993::int8 AS big", ["hi"]))
  yield* Db.execute("CREATE TABLE [dbg_t] (id int primary key, v text)")
  console.log(yield* Db.executeMany("INSERT INTO [dbg_t] VALUES (?, ?)", [[1, "a"], [2, "b"]]))
  console.log(yield* Db.execute("SELECT 1 AS a; SELECT 2 AS b"))
  const e2 = yield* Effect.flip(Db.execute("INSERT INTO dbg_t VALUES (?, ?)", [1, "secret"]))
  console.log(e2._tag, e2.message)
  const sql = yield* SqlClient.SqlClient
  console.log(yield* sql`SELECT ${1}::int AS one`)
  console.log(yield* Stream.runCollect(sql`SELECT * FROM dbg_t`.stream))
  yield* Db.withTransaction(Effect.gen(function*() {
    console.log(yield* Db.execute("SHOW transaction_isolation"))
  }), { isolation: "serializable" })
})
Effect.runPromise(p.pipe(Effect.provide(L))).then(() => console.log("ok"), (e) => console.error("ERR", e))

/**
 * `insertMany` on PostgreSQL sends one array per column (`INSERT … SELECT *
 * FROM unnest($1::type[], …)`), typed from the table's catalog: a handful
 * of parameters however many rows.
 */
import { Db, Metrics } from "@effect-dal/core"
import { PgDatabase } from "@effect-dal/pg"
import * as Effect from "effect/Effect"
import * as Redacted from "effect/Redacted"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { copyData, Refused } from "../src/internal/copyData.js"
import { PG_URL, schemaFor, unique } from "./helpers.js"

const schema = unique("dal_insert")
const { create, drop } = schemaFor(schema)
beforeAll(() => Effect.runPromise(create))
afterAll(() => Effect.runPromise(drop))

const run = <A, E>(effect: Effect.Effect<A, E, Db>) =>
  Effect.runPromise(Effect.provide(effect, PgDatabase.layer({ url: Redacted.make(PG_URL), alias: unique("ins"), pool: { max: 3 } })))

/** Statements the database observed so far. */
const statements = Effect.flatMap(Db, (db) =>
  Effect.map(Metrics.samples(db.metricLabels), (samples) =>
    samples.filter((s) => s.name === "db.client.operation.duration")
      .reduce((n, s) => n + (s.value as { readonly count: number }).count, 0)))

/** A row type declared as an interface: it has no index signature, and `insertMany` takes it as it is. */
interface Event {
  readonly id: number
  readonly v: string
}

describe("insertMany on PostgreSQL: one array per column", () => {
  it("takes rows declared with an interface, through the arrays and through COPY", async () => {
    const table = `${schema}.${unique("iface")}`
    const events: ReadonlyArray<Event> = Array.from({ length: 4 }, (_, i) => ({ id: i, v: `event ${i}` }))
    const seen = await run(Effect.gen(function*() {
      yield* Db.execute(`CREATE TABLE [${table}] (id int PRIMARY KEY, v text NOT NULL)`)
      const arrays = yield* Db.insertMany(table, events.slice(0, 2), { copyThreshold: Infinity })
      const copied = yield* Db.insertMany(table, events.slice(2), { copyThreshold: 2 })
      const rows = yield* Db.execute<Event>(`SELECT id, v FROM [${table}] ORDER BY id`)
      return { inserted: [arrays.inserted, copied.inserted], rows }
    }))
    expect(seen).toEqual({ inserted: [2, 2], rows: events })
  })

  it("100,000 rows go in one statement, whatever the parameter limit; the catalog is read once per table", async () => {
    const table = `${schema}.${unique("big")}`
    const seen = await run(Effect.gen(function*() {
      yield* Db.execute(`CREATE TABLE [${table}] (id int PRIMARY KEY, v text NOT NULL)`)
      const rows = Array.from({ length: 100_000 }, (_, i) => ({ id: i, v: `row ${i}` }))
      const before = yield* statements
      // with VALUES, 2 columns would allow 32,767 rows per statement: 4 statements
      const first = yield* Db.insertMany(table, rows, { chunkSize: 100_000, copyThreshold: Infinity })
      const afterFirst = yield* statements
      const second = yield* Db.insertMany(table, rows.map((r) => ({ id: r.id + 100_000, v: r.v })), {
        chunkSize: 100_000,
        copyThreshold: Infinity
      })
      const afterSecond = yield* statements
      const [{ n }] = yield* Db.execute<{ n: string }>(`SELECT count(*) AS n FROM [${table}]`)
      return { first: first.inserted, second: second.inserted, firstStatements: afterFirst - before, secondStatements: afterSecond - afterFirst, n }
    }))
    // the first: the catalog read, then the insert; the second: the insert alone
    expect(seen).toEqual({ first: 100_000, second: 100_000, firstStatements: 2, secondStatements: 1, n: "200000" })
  })

  for (const [way, copyThreshold] of [["unnest", Infinity], ["COPY", 2]] as const) {
    it(`values keep their types through ${way}: json (objects, arrays, text), bytea, timestamptz, numeric, an enum, booleans, NULLs, escapes`, async () => {
      const table = `${schema}.${unique("types")}`
      const mood = `${schema}.${unique("mood")}`
      const rows = Array.from({ length: 50 }, (_, i) => ({
        doc: i % 3 === 0 ? { n: i, tags: ["a", "b"] } : i % 3 === 1 ? [i, { x: "y\tz" }] : i % 5 === 0 ? null : `{"s":${i}}`,
        bin: i % 4 === 0 ? null : Buffer.from([i, 255 - i, 0, 92, 10]),
        at: new Date(Date.UTC(2026, 0, 1, 0, 0, i)),
        amount: `${i}.25`,
        feeling: i % 2 === 0 ? "happy" : "sad",
        ok: i % 3 === 0,
        note: i % 7 === 0 ? null : `note "${i}" with 'quotes', commas, {braces}, a \\ backslash,\ta tab and\na newline`
      }))
      const back = await run(Effect.gen(function*() {
        yield* Db.execute(`CREATE TYPE [${mood}] AS ENUM ('happy', 'sad')`)
        yield* Db.execute(
          `CREATE TABLE [${table}] (id serial PRIMARY KEY, doc jsonb, bin bytea, at timestamptz NOT NULL, amount numeric(10,2) NOT NULL, ` +
            `feeling [${mood}] NOT NULL, ok boolean NOT NULL, note varchar(200))`
        )
        // COPY returns no keys: with `returning`, the rows go through unnest whatever the threshold
        const result = yield* Db.insertMany(table, rows, way === "unnest" ? { returning: "id", copyThreshold } : { copyThreshold })
        const stored = yield* Db.execute<Record<string, unknown>>(`SELECT * FROM [${table}] ORDER BY id`)
        return { result, stored }
      }))
      expect(back.result.inserted).toBe(50)
      expect(back.result.keys).toEqual(way === "unnest" ? back.stored.map((r) => r["id"]) : [])
      const expected = rows.map((r) => ({ ...r, doc: typeof r.doc === "string" ? JSON.parse(r.doc) : r.doc }))
      expect(back.stored.map(({ id: _, ...rest }) => rest)).toEqual(expected)
    })
  }

  it("COPY goes in binary where every column's type and value has an exact binary form, else as text; both store what INSERT stores", async () => {
    const columns = "s smallint, i integer, b bigint, t text, v varchar(20), ok boolean, d double precision, bin bytea"
    const long = "é".repeat(40_000) // one row past a 64 KiB chunk
    const rows = Array.from({ length: 40 }, (_, i) => ({
      s: i % 5 === 0 ? null : i - 20,
      i: i % 2 === 0 ? -2_147_483_648 + i : 2_147_483_647 - i,
      b: i % 3 === 0 ? BigInt("-9223372036854775808") + BigInt(i) : i % 3 === 1 ? Number.MAX_SAFE_INTEGER - i : -i * 4_294_967_297,
      t: i === 7 ? long : i % 4 === 0 ? null : `text ${i}: ASCII, é, 漢字, 😀, a\ttab`,
      v: i % 6 === 0 ? "" : `varchar ${i} ☃`,
      ok: i % 3 === 0 ? null : i % 2 === 0,
      d: [0.1, Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, -1e300, 5e-324, 1 / 3][i % 7]! * (i % 2 === 0 ? 1 : -1),
      bin: i % 5 === 1 ? null : Buffer.from([i, 0, 255, 92, 10])
    }))
    const names = ["s", "i", "b", "t", "v", "ok", "d", "bin"]
    const types = ["smallint", "integer", "bigint", "text", "character varying", "boolean", "double precision", "bytea"]
    const sql = "COPY t (s, i, b, t, v, ok, d, bin) FROM STDIN"
    // a -0 (whose text is "0"), or a string for an integer column, leaves the whole load to the text format
    expect([
      copyData(sql, rows, names, types).sql,
      copyData(sql, [...rows, { ...rows[1]!, d: -0 }], names, types).sql,
      copyData(sql, [...rows, { ...rows[1]!, i: "5" }], names, types).sql,
      copyData(sql, rows, names, [...types.slice(0, 7), "numeric"]).sql
    ]).toEqual([`${sql} (FORMAT binary)`, sql, sql, sql])
    // each run of a load starts its data afresh
    const data = copyData(sql, rows, names, types)
    const bytes = () => Buffer.concat(Array.from({ [Symbol.iterator]: data.chunks }, (c) => Buffer.from(c)))
    const first = bytes()
    expect(first.length).toBeGreaterThan(80_000)
    expect(bytes().equals(first)).toBe(true)
    const tables = Array.from({ length: 3 }, () => `${schema}.${unique("binary")}`)
    const seen = await run(Effect.gen(function*() {
      for (const table of tables) yield* Db.execute(`CREATE TABLE [${table}] (id serial PRIMARY KEY, ${columns})`)
      const inserted = yield* Db.insertMany(tables[0]!, rows, { copyThreshold: Infinity })
      const binary = yield* Db.insertMany(tables[1]!, rows, { copyThreshold: 2 })
      const text = yield* Db.insertMany(tables[2]!, [...rows, { ...rows[1]!, d: -0 }], { copyThreshold: 2 })
      const stored = yield* Effect.forEach(tables, (table) => Db.execute(`SELECT ${names.join(", ")} FROM [${table}] ORDER BY id`))
      // too long for varchar(20): the same typed error as an INSERT's, nothing loaded
      const tooLong = [...rows, { ...rows[1]!, v: "x".repeat(21) }]
      const errors = yield* Effect.forEach([Infinity, 2], (copyThreshold) =>
        Effect.flip(Db.insertMany(tables[0]!, tooLong, { copyThreshold })))
      const [{ n }] = yield* Db.execute<{ n: string }>(`SELECT count(*) AS n FROM [${tables[0]}]`)
      return { counts: [inserted.inserted, binary.inserted, text.inserted], stored, errors: errors.map((e) => e._tag), n }
    }))
    expect(seen.counts).toEqual([40, 40, 41])
    expect(seen.stored[1]).toEqual(seen.stored[0])
    expect(seen.stored[2]).toEqual([...seen.stored[0]!, { ...seen.stored[0]![1], d: 0 }])
    expect(seen.stored[0]![7]!["t"]).toBe(long)
    expect(seen.errors[1]).toBe(seen.errors[0])
    expect(seen.n).toBe("40")
  })

  it("checked as it goes, a load begun in binary that meets a value with no binary form goes as INSERT instead, whole", async () => {
    const sql = "COPY t (i, t) FROM STDIN"
    const rows: Array<Record<string, unknown>> = Array.from({ length: 5_000 }, (_, i) => ({ i, t: `t ${i}` }))
    const misfit = [...rows.slice(0, 4_500), { i: "4500", t: "a string for an integer" }, ...rows.slice(4_501)]
    const ranges: Array<[number, number]> = []
    const check = (from: number, to: number) => void ranges.push([from, to])
    // the format follows the first rows: a string for an integer past them is met on the way
    const data = copyData(sql, misfit, ["i", "t"], ["integer", "text"], check)
    expect(data.sql).toBe(`${sql} (FORMAT binary)`)
    let refusal: unknown
    try {
      for (const _ of { [Symbol.iterator]: data.chunks });
    } catch (thrown) {
      refusal = thrown
    }
    expect(refusal).toBeInstanceOf(Refused)
    expect((refusal as Refused<unknown>).error).toBeUndefined()
    expect(ranges).toEqual([[0, 2_000], [2_000, 4_000], [4_000, 5_000]])
    // the check's own refusal ends the chunks with its error, before any row of its range is written
    const refusing = copyData(sql, rows, ["i", "t"], ["integer", "text"], (from) => from >= 2_000 ? "bad" : undefined)
    const written: Array<Buffer | string> = []
    const thrown = (() => {
      try {
        for (const chunk of { [Symbol.iterator]: refusing.chunks }) written.push(chunk)
      } catch (e) {
        return e
      }
    })()
    expect(thrown).toEqual(new Refused("bad"))
    expect(Buffer.concat(written.map((c) => Buffer.from(c))).length).toBeLessThan(2_000 * 20)
    const table = `${schema}.${unique("misfit")}`
    const seen = await run(Effect.gen(function*() {
      yield* Db.execute(`CREATE TABLE [${table}] (id serial PRIMARY KEY, i integer NOT NULL, t text NOT NULL)`)
      const result = yield* Db.insertMany(table, misfit, { copyThreshold: 2 })
      const stored = yield* Db.execute<{ i: number; t: string }>(`SELECT i, t FROM [${table}] ORDER BY id`)
      return { inserted: result.inserted, stored }
    }))
    expect(seen.inserted).toBe(5_000)
    expect(seen.stored).toEqual(misfit.map((r) => ({ i: Number(r["i"]), t: r["t"] })))
  })

  it("past the threshold, rows are loaded with one COPY; onConflict and returning keep them on INSERT", async () => {
    const table = `${schema}.${unique("copy")}`
    const seen = await run(Effect.gen(function*() {
      yield* Db.execute(`CREATE TABLE [${table}] (id int PRIMARY KEY, v text NOT NULL)`)
      const rows = Array.from({ length: 50_000 }, (_, i) => ({ id: i, v: `row ${i}` }))
      yield* Db.insertMany(table, [{ id: -1, v: "a" }, { id: -2, v: "b" }]) // the catalog read
      const before = yield* statements
      const copied = yield* Db.insertMany(table, rows)
      const afterCopy = yield* statements
      // an upsert cannot be a COPY: the same rows again, skipped
      const ignored = yield* Db.insertMany(table, rows, { onConflict: { keys: ["id"], action: "ignore" } })
      // a failing COPY loads nothing and leaves the pool healthy
      const failed = yield* Effect.flip(Db.insertMany(table, [{ id: 60_000, v: "x" }, ...rows.slice(0, 5_000)]))
      const [{ n }] = yield* Db.execute<{ n: string }>(`SELECT count(*) AS n FROM [${table}]`)
      return { copied: copied.inserted, statements: afterCopy - before, ignored: ignored.inserted, failed: failed._tag, n }
    }))
    expect(seen).toEqual({ copied: 50_000, statements: 1, ignored: 0, failed: "ConstraintViolation", n: "50002" })
  })

  it("onConflict works through the arrays; a table with an array column, or one just created in the transaction, is handled", async () => {
    const table = `${schema}.${unique("conflict")}`
    const arrays = `${schema}.${unique("arrays")}`
    const fresh = `${schema}.${unique("fresh")}`
    const seen = await run(Effect.gen(function*() {
      yield* Db.execute(`CREATE TABLE [${table}] (id int PRIMARY KEY, v text NOT NULL)`)
      yield* Db.insertMany(table, [{ id: 1, v: "one" }, { id: 2, v: "two" }])
      const ignored = yield* Db.insertMany(table, [{ id: 2, v: "TWO" }, { id: 3, v: "three" }], {
        onConflict: { keys: ["id"], action: "ignore" }
      })
      const updated = yield* Db.insertMany(table, [{ id: 1, v: "ONE" }, { id: 4, v: "four" }], {
        onConflict: { keys: ["id"], action: "update" }
      })
      const conflicted = yield* Db.execute<{ id: number; v: string }>(`SELECT id, v FROM [${table}] ORDER BY id`)
      // an int[] column: the rows go as VALUES (arrays of arrays would flatten)
      yield* Db.execute(`CREATE TABLE [${arrays}] (id int PRIMARY KEY, tags int[])`)
      yield* Db.insertMany(arrays, [{ id: 1, tags: [1, 2] }, { id: 2, tags: [3] }])
      const tags = yield* Db.execute<{ tags: Array<number> }>(`SELECT tags FROM [${arrays}] ORDER BY id`)
      // a table created in the same transaction is read on the transaction's connection
      const inTx = yield* Db.withTransaction(Effect.gen(function*() {
        yield* Db.execute(`CREATE TABLE [${fresh}] (id int PRIMARY KEY, v text)`)
        return yield* Db.insertMany(fresh, [{ id: 1, v: "a" }, { id: 2, v: "b" }])
      }))
      // a column added later is read again
      yield* Db.execute(`ALTER TABLE [${table}] ADD COLUMN w int`)
      yield* Db.insertMany(table, [{ id: 10, v: "ten", w: 10 }, { id: 11, v: "eleven", w: 11 }])
      const added = yield* Db.execute<{ w: number }>(`SELECT w FROM [${table}] WHERE id >= 10 ORDER BY id`)
      return { ignored: ignored.inserted, updated: updated.inserted, conflicted, tags: tags.map((t) => t.tags), inTx: inTx.inserted, added }
    }))
    expect(seen).toEqual({
      ignored: 1,
      updated: 2, // one row updated, one inserted
      conflicted: [{ id: 1, v: "ONE" }, { id: 2, v: "two" }, { id: 3, v: "three" }, { id: 4, v: "four" }],
      tags: [[1, 2], [3]],
      inTx: 2,
      added: [{ w: 10 }, { w: 11 }]
    })
  })
})

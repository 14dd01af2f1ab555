import { describe, expect, it } from "@effect/vitest"
import { Dialect, PortableSql } from "@effect-dal/core"


const pg = (sql: string) => {
  const t = PortableSql.translateUncached(sql, Dialect.postgres)
  if (PortableSql.isFailure(t)) throw new Error(t.detail)
  return t
}

describe("PortableSql (PostgreSQL)", () => {
  it("numbers ? placeholders and quotes [identifiers]", () => {
    const t = pg("SELECT * FROM [users] WHERE id = ? AND name = ?")
    expect(t.sql).toBe("SELECT * FROM \"users\" WHERE id = $1 AND name = $2")
    expect(t.parameterCount).toBe(2)
    expect(t.placeholders).toBe("portable")
  })

  it("turns ?? into a literal ?", () => {
    expect(pg("SELECT '{\"a\":1}'::jsonb ?? 'a' AND x = ?").sql).toBe("SELECT '{\"a\":1}'::jsonb ? 'a' AND x = $1")
  })

  it("leaves ? and [ inside string literals alone", () => {
    const t = pg("SELECT 'what? [no]', E'it\\'s ? here', x FROM t WHERE y = ?")
    expect(t.sql).toBe("SELECT 'what? [no]', E'it\\'s ? here', x FROM t WHERE y = $1")
    expect(t.parameterCount).toBe(1)
  })

  it("handles doubled quotes inside literals", () => {
    expect(pg("SELECT 'it''s ?' , ?").sql).toBe("SELECT 'it''s ?' , $1")
  })

  it("leaves ? inside line and block comments alone, including nested block comments", () => {
    const t = pg("SELECT 1 -- why?\n, /* what? /* nested? */ still? */ ?")
    expect(t.sql).toBe("SELECT 1 -- why?\n, /* what? /* nested? */ still? */ $1")
    expect(t.parameterCount).toBe(1)
  })

  it("leaves ? inside dollar-quoted bodies alone", () => {
    const body = "CREATE FUNCTION f() RETURNS text AS $$ SELECT 'a?' || [x] $$ LANGUAGE sql"
    expect(pg(body).sql).toBe(body)
    expect(pg(body).parameterCount).toBe(0)
    const tagged = "DO $fn$ BEGIN PERFORM ?; END $fn$; SELECT ?"
    expect(pg(tagged).sql).toBe("DO $fn$ BEGIN PERFORM ?; END $fn$; SELECT $1")
  })

  it("passes native $n placeholders and \"quoted\" identifiers through", () => {
    const t = pg("SELECT \"Weird?Name\" FROM \"t\" WHERE a = $1 AND b = $2 OR c = $1")
    expect(t.sql).toBe("SELECT \"Weird?Name\" FROM \"t\" WHERE a = $1 AND b = $2 OR c = $1")
    expect(t.parameterCount).toBe(2)
    expect(t.placeholders).toBe("native")
  })

  it("does not mistake array subscripts and types for identifiers", () => {
    expect(pg("SELECT arr[1], ARRAY[a, b], '{}'::int[] FROM [t]").sql).toBe(
      "SELECT arr[1], ARRAY[a, b], '{}'::int[] FROM \"t\""
    )
    expect(pg("SELECT (x)[idx] FROM t").sql).toBe("SELECT (x)[idx] FROM t")
  })

  it("quotes schema-qualified names and escapes embedded quotes", () => {
    expect(pg("SELECT * FROM [app.users]").sql).toBe("SELECT * FROM \"app\".\"users\"")
    expect(Dialect.quoteIdentifier(Dialect.postgres, "a\"b")).toBe("\"a\"\"b\"")
  })

  it("rejects empty SQL and mixed placeholder styles", () => {
    expect(PortableSql.translateUncached("   \n", Dialect.postgres)).toMatchObject({ reason: "empty" })
    expect(PortableSql.translateUncached("SELECT ?, $1", Dialect.postgres)).toMatchObject({
      reason: "mixedPlaceholders"
    })
  })

  it("does not treat identifiers containing $ as dollar quotes", () => {
    expect(pg("SELECT a$b$, ? FROM t").sql).toBe("SELECT a$b$, $1 FROM t")
  })
})

describe("PortableSql (MySQL)", () => {
  it("keeps ? placeholders and quotes identifiers with backticks", () => {
    const t = PortableSql.translateUncached("SELECT [id] FROM [app.users] WHERE id = ?", Dialect.mysql)
    expect(t).toMatchObject({ sql: "SELECT `id` FROM `app`.`users` WHERE id = ?", parameterCount: 1 })
  })

  it("honours backslash escapes and double-quoted strings", () => {
    const t = PortableSql.translateUncached("SELECT 'a\\'?', \"b?\" , ? # c?\n", Dialect.mysql)
    expect(t).toMatchObject({ parameterCount: 1 })
  })
})

describe("Translator cache", () => {
  it("returns the same translation object for a repeated statement and stays bounded", () => {
    const tr = PortableSql.makeTranslator(Dialect.postgres, 2)
    const a = tr.translate("SELECT ?")
    expect(tr.translate("SELECT ?")).toBe(a)
    tr.translate("SELECT 1")
    tr.translate("SELECT 2")
    // evicted as the oldest: a new object is made
    expect(tr.translate("SELECT ?")).not.toBe(a)
  })
})

describe("changesSessionState", () => {
  it("sees session changes by their first words, comments first included, and nothing else", () => {
    for (
      const sql of [
        "SET search_path TO app",
        "  set timezone = 'UTC'",
        "RESET ALL",
        "CREATE TEMP TABLE t (id int)",
        "create temporary table t (id int)",
        "CREATE GLOBAL TEMPORARY TABLE t (id int)",
        "LISTEN jobs",
        "LOAD 'auto_explain'",
        "PREPARE q AS SELECT 1",
        "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
        "USE other",
        "/* tagged */ SET search_path TO app",
        "-- a note\nSET statement_timeout = 0"
      ]
    ) expect([sql, PortableSql.changesSessionState(sql)]).toEqual([sql, true])
    for (
      const sql of [
        "SELECT 1",
        "SETTINGS",
        "INSERT INTO t VALUES (1)",
        "UPDATE t SET a = 1",
        "DELETE FROM t",
        "DROP TABLE t",
        "DECLARE c CURSOR FOR SELECT 1",
        "SET LOCAL statement_timeout = 0",
        "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        "CREATE TABLE t (id int)",
        "COMMIT",
        "ROLLBACK",
        "RELEASE SAVEPOINT s",
        "LOCK TABLE t",
        "LOAD DATA LOCAL INFILE 'rows.tsv' INTO TABLE t",
        "load xml local infile 'rows.xml' into table t",
        "/* SET */ SELECT 1"
      ]
    ) expect([sql, PortableSql.changesSessionState(sql)]).toEqual([sql, false])
  })

  it("finds the DDL MySQL commits implicitly, past whitespace and comments, and nothing else", () => {
    for (
      const sql of [
        "CREATE TABLE t (id int)",
        "  alter table t add column b int",
        "\n\tDROP TABLE t",
        "truncate t",
        "RENAME TABLE a TO b",
        "/* tagged */ CREATE INDEX i ON t (a)",
        "-- a note\nDROP VIEW v",
        "(CREATE TABLE t (id int))"
      ]
    ) expect([sql, PortableSql.isImplicitCommitDdl(sql)]).toEqual([sql, true])
    for (
      const sql of [
        "SELECT 1",
        "  select * from created",
        "INSERT INTO t VALUES (1)",
        "UPDATE t SET a = 1",
        "DELETE FROM t",
        "BEGIN",
        "COMMIT",
        "CREATE TEMPORARY TABLE t (id int)",
        "drop temporary table t",
        "ROLLBACK",
        "KILL QUERY 5",
        "/* DROP */ SELECT 1",
        ""
      ]
    ) expect([sql, PortableSql.isImplicitCommitDdl(sql)]).toEqual([sql, false])
  })
})

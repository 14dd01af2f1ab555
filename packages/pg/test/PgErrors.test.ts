import { describe, expect, it } from "@effect/vitest"
import { PgErrors } from "@effect-dal/pg"

const pgError = (code: string, constraint?: string) =>
  Object.assign(new Error(`server error ${code}`), { code, ...(constraint ? { constraint } : {}) })
const classify = (code: string, constraint?: string) => PgErrors.classify(pgError(code, constraint), "SELECT 1", "query")

describe("PgErrors.classify", () => {
  const cases: Array<[string, Record<string, unknown>]> = [
    ["40001", { _tag: "QueryError", category: "serialization", transient: true }],
    ["40P01", { _tag: "QueryError", category: "deadlock", transient: true }],
    ["08000", { _tag: "ConnectionError", category: "connection", transient: true }],
    ["08003", { _tag: "ConnectionError", category: "connection", transient: true }],
    ["08006", { _tag: "ConnectionError", category: "connection", transient: true }],
    ["57P01", { _tag: "ConnectionError", category: "connection", transient: true }],
    ["57P02", { _tag: "ConnectionError", category: "connection", transient: true }],
    ["57P03", { _tag: "QueryError", category: "unavailable", transient: true }],
    ["57014", { _tag: "QueryError", category: "cancelled", transient: true }],
    ["53300", { _tag: "QueryError", category: "resource", transient: true }],
    ["53100", { _tag: "QueryError", category: "resource", transient: false }],
    ["55P03", { _tag: "QueryError", category: "serialization", transient: true }],
    ["23505", { _tag: "ConstraintViolation", category: "constraint", kind: "unique", transient: false }],
    ["23503", { _tag: "ConstraintViolation", category: "constraint", kind: "foreignKey", transient: false }],
    ["23502", { _tag: "ConstraintViolation", category: "constraint", kind: "notNull", transient: false }],
    ["23514", { _tag: "ConstraintViolation", category: "constraint", kind: "check", transient: false }],
    ["42601", { _tag: "QueryError", category: "syntax", transient: false }],
    ["42P01", { _tag: "QueryError", category: "syntax", transient: false }],
    ["42501", { _tag: "QueryError", category: "permission", transient: false }],
    ["22P02", { _tag: "QueryError", category: "data", transient: false }]
  ]
  for (const [code, expected] of cases) {
    it(`maps SQLSTATE ${code}`, () => {
      expect(classify(code)).toMatchObject({ ...expected, code })
    })
  }

  it("keeps the constraint name", () => {
    expect(classify("23505", "users_email_key")).toMatchObject({ constraint: "users_email_key" })
  })

  it("maps socket errors and pg's code-less termination to connection errors", () => {
    const reset = Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" })
    expect(PgErrors.classify(reset, "SELECT 1", "query")).toMatchObject({ _tag: "ConnectionError", code: "ECONNRESET" })
    expect(PgErrors.classify(new Error("Connection terminated unexpectedly"), "SELECT 1", "query")).toMatchObject({
      _tag: "ConnectionError"
    })
  })

  it("tells bad credentials at connect apart from a transient failure", () => {
    expect(PgErrors.classify(pgError("28P01"), undefined, "connect")).toMatchObject({
      _tag: "ConnectionError",
      transient: false
    })
    expect(PgErrors.classify(pgError("57P03"), undefined, "connect")).toMatchObject({
      _tag: "ConnectionError",
      transient: true
    })
  })
})

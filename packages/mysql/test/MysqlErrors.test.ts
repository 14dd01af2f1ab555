import { describe, expect, it } from "@effect/vitest"
import { MysqlErrors } from "@effect-dal/mysql"

const mysqlError = (errno: number, message = `server error ${errno}`) => Object.assign(new Error(message), { errno })
const classify = (errno: number, message?: string) => MysqlErrors.classify(mysqlError(errno, message), "SELECT 1", "query")

describe("MysqlErrors.classify", () => {
  const cases: Array<[number, Record<string, unknown>]> = [
    [1213, { _tag: "QueryError", category: "deadlock", transient: true }],
    [1205, { _tag: "QueryError", category: "serialization", transient: true }],
    [1040, { _tag: "QueryError", category: "resource", transient: true }],
    [2006, { _tag: "ConnectionError", category: "connection", transient: true }],
    [2013, { _tag: "ConnectionError", category: "connection", transient: true }],
    [1062, { _tag: "ConstraintViolation", kind: "unique", transient: false }],
    [1451, { _tag: "ConstraintViolation", kind: "foreignKey", transient: false }],
    [1452, { _tag: "ConstraintViolation", kind: "foreignKey", transient: false }],
    [1048, { _tag: "ConstraintViolation", kind: "notNull", transient: false }],
    [4025, { _tag: "ConstraintViolation", kind: "check", transient: false }],
    [1064, { _tag: "QueryError", category: "syntax", transient: false }],
    [1146, { _tag: "QueryError", category: "syntax", transient: false }],
    [1142, { _tag: "QueryError", category: "permission", transient: false }],
    [3024, { _tag: "QueryError", category: "cancelled", transient: true }],
    [1969, { _tag: "QueryError", category: "cancelled", transient: true }],
    [1317, { _tag: "QueryError", category: "cancelled", transient: true }],
    [1366, { _tag: "QueryError", category: "data", transient: false }]
  ]
  for (const [errno, expected] of cases) {
    it(`maps error ${errno}`, () => {
      expect(classify(errno)).toMatchObject({ ...expected, code: String(errno) })
    })
  }

  it("extracts constraint names and keeps values out of messages", () => {
    const dup = classify(1062, "Duplicate entry 'alice@example.com' for key 'users.uq_email'")
    expect(dup).toMatchObject({ constraint: "users.uq_email" })
    expect(dup.message).not.toContain("alice@example.com")
    const fk = classify(
      1452,
      "Cannot add or update a child row: a foreign key constraint fails (`test`.`c`, CONSTRAINT `fk_parent` FOREIGN KEY (`p`) REFERENCES `p` (`id`))"
    )
    expect(fk).toMatchObject({ constraint: "fk_parent" })
  })

  it("maps driver connection codes", () => {
    const lost = Object.assign(new Error("Connection lost"), { code: "PROTOCOL_CONNECTION_LOST", fatal: true })
    expect(MysqlErrors.classify(lost, "SELECT 1", "query")).toMatchObject({ _tag: "ConnectionError", transient: true })
  })
})

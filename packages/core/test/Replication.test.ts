import { describe, expect, it } from "@effect/vitest"
import { DatabaseConfig, Replication } from "@effect-dal/core"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Effect from "effect/Effect"
import * as Redacted from "effect/Redacted"

const lsnLike = (p: string) => /^[0-9A-F]+\/[0-9A-F]+$/i.test(p)

describe("Replication", () => {
  it("classifies what may run on a replica: plain reads only", () => {
    for (const sql of ["SELECT 1", "  select * from t where a = ?", "(SELECT 1) UNION (SELECT 2)", "SHOW server_version", "VALUES (1)", "TABLE t"]) {
      expect(Replication.isReplicaRead(sql), sql).toBe(true)
    }
    for (
      const sql of [
        "SELECT * FROM t FOR UPDATE",
        "select * from t for share",
        "SELECT * FROM t FOR NO KEY UPDATE",
        "SELECT * FROM t LOCK IN SHARE MODE",
        "SELECT * INTO new_t FROM t",
        "WITH moved AS (DELETE FROM a RETURNING *) INSERT INTO b SELECT * FROM moved",
        "WITH x AS (SELECT 1) SELECT * FROM x",
        "INSERT INTO t VALUES (1)",
        "UPDATE t SET a = 1",
        "EXPLAIN ANALYZE DELETE FROM t",
        "CALL p()"
      ]
    ) {
      expect(Replication.isReplicaRead(sql), sql).toBe(false)
    }
  })

  it.effect("commit tokens round-trip, are safe in a header or a cookie, and a malformed one is a typed error", () =>
    Effect.gen(function*() {
      for (const position of ["16/B374D848", "0-1-42,1-2-7"]) {
        const token = Replication.encodeToken(position)
        expect(token).toMatch(/^dal1\.[A-Za-z0-9_-]+$/)
        expect(yield* Replication.decodeToken(token, () => true)).toBe(position)
      }
      for (const bad of ["", "dal1.", "dal2.MC8x", "dal1.not base64!", Replication.encodeToken("0-1-42")]) {
        const error = yield* Effect.flip(Replication.decodeToken(bad, lsnLike))
        expect(error).toBeInstanceOf(Replication.InvalidCommitToken)
        expect(error.message).toContain("invalid commit token")
      }
    }))

  it.effect("DATABASE_REPLICA_URLS becomes replicas; a replica's options go over the primary's", () =>
    Effect.gen(function*() {
      const options = yield* DatabaseConfig.fromEnv.pipe(
        Effect.withConfigProvider(ConfigProvider.fromMap(
          new Map([
            ["DATABASE_URL", "postgres://app@primary:5432/shop"],
            ["DATABASE_REPLICA_URLS", "postgres://app@r1:5432/shop, postgres://app@r2:5432/shop,"]
          ])
        ))
      )
      expect(options.replicas?.map((r) => Redacted.value(r.url as Redacted.Redacted))).toEqual([
        "postgres://app@r1:5432/shop",
        "postgres://app@r2:5432/shop"
      ])
      const primary: DatabaseConfig.DatabaseOptions = {
        host: "primary",
        database: "shop",
        statementTimeout: "5 seconds",
        pool: { max: 20 },
        replicas: [{ url: "postgres://app@r1/shop" }],
        replication: { waitForReplica: "10 millis" }
      }
      const replica = DatabaseConfig.replicaOptions(primary, "main", { url: "postgres://app@r1/shop", weight: 2, pool: { max: 5 } }, 0)
      expect(replica).toMatchObject({ url: "postgres://app@r1/shop", host: undefined, database: undefined, statementTimeout: "5 seconds", pool: { max: 5 }, alias: "main_replica_1" })
      expect(replica.replicas).toBeUndefined()
      expect(replica.replication).toBeUndefined()
      expect("weight" in replica).toBe(false)
      // without a url, the replica keeps the primary's address but for what it changes
      expect(DatabaseConfig.replicaOptions(primary, "main", { host: "r2", alias: "r2" }, 1)).toMatchObject({ host: "r2", database: "shop", alias: "r2" })
    }))
})

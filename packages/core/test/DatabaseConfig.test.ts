import { describe, expect, it } from "@effect/vitest"
import { DatabaseConfig } from "@effect-dal/core"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Effect from "effect/Effect"
import * as Redacted from "effect/Redacted"

const engine: DatabaseConfig.EngineDefaults = { engine: "pg", port: 5432, schemes: ["postgres", "postgresql"] }
const resolve = (options: DatabaseConfig.DatabaseOptions) => DatabaseConfig.resolve(options, engine)

describe("DatabaseConfig", () => {
  it.effect("applies the defaults", () =>
    Effect.gen(function*() {
      const c = yield* resolve({ database: "app" })
      expect(c.host).toBe("localhost")
      expect(c.port).toBe(5432)
      expect(c.alias).toBe("app")
      expect(c.env).toBe("prod")
      expect(c.pool.max).toBeGreaterThanOrEqual(c.pool.min)
    }))

  it.effect("reads a url, and explicit fields win over it", () =>
    Effect.gen(function*() {
      const c = yield* resolve({ url: Redacted.make("postgres://bob:s%40cret@db.example:6543/shop?sslmode=require") })
      expect(c).toMatchObject({ host: "db.example", port: 6543, database: "shop", user: "bob" })
      expect(Redacted.value(c.password!)).toBe("s@cret")
      expect(c.params["sslmode"]).toBe("require")
      const d = yield* resolve({ url: "postgres://bob@db.example:6543/shop", port: 7000, database: "other" })
      expect(d).toMatchObject({ port: 7000, database: "other" })
    }))

  it.effect("reads libpq's multi-host URLs and target_session_attrs; hosts and targetRole win", () =>
    Effect.gen(function*() {
      const c = yield* resolve({ url: "postgres://bob@h1:5432,h2:5433,[::1]/shop?target_session_attrs=read-write" })
      expect(c.hosts).toEqual([{ host: "h1", port: 5432 }, { host: "h2", port: 5433 }, { host: "::1", port: 5432 }])
      expect(c).toMatchObject({ host: "h1", port: 5432, database: "shop", user: "bob", targetRole: "read-write" })
      const d = yield* resolve({ database: "shop", hosts: [{ host: "a" }, { host: "b", port: 6000 }], targetRole: "prefer-standby" })
      expect(d.hosts).toEqual([{ host: "a", port: 5432 }, { host: "b", port: 6000 }])
      expect(d.targetRole).toBe("prefer-standby")
      expect(d.hash).not.toBe((yield* resolve({ database: "shop", hosts: [{ host: "a" }] })).hash)
      const single = yield* resolve({ database: "shop", host: "db", port: 7000 })
      expect(single).toMatchObject({ hosts: [{ host: "db", port: 7000 }], targetRole: "any" })
      const bad = yield* Effect.flip(resolve({ database: "shop", targetRole: "leader" as never }))
      expect(String(bad)).toContain("targetRole")
      const badHost = yield* Effect.flip(resolve({ url: "postgres://h1:5432,:5433/shop" }))
      expect(String(badHost)).toContain("url")
    }))

  it.effect("has a stable hash that ignores the password", () =>
    Effect.gen(function*() {
      const a = yield* resolve({ database: "app", user: "u", password: Redacted.make("one") })
      const b = yield* resolve({ database: "app", user: "u", password: Redacted.make("two") })
      const c = yield* resolve({ database: "app", user: "u", pool: { max: 3 } })
      expect(a.hash).toBe(b.hash)
      expect(a.hash).not.toBe(c.hash)
      expect(a.hash).toMatch(/^[0-9a-f]{16}$/)
    }))

  const invalid = (options: DatabaseConfig.DatabaseOptions, field: string) =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(resolve(options))
      expect(error._op).toBe("InvalidData")
      expect(error._op === "InvalidData" && error.path).toEqual([field])
    })

  it.effect("rejects an empty database", () => invalid({ database: "  " }, "database"))
  it.effect("rejects a missing database", () => invalid({ host: "h" }, "database"))
  it.effect("rejects a port out of range", () => invalid({ database: "a", port: 70000 }, "port"))
  it.effect("rejects an unparsable url", () => invalid({ url: "not a url" }, "url"))
  it.effect("rejects a url of another engine", () => invalid({ url: "mysql://h/db" }, "url"))
  it.effect("rejects min above max", () => invalid({ database: "a", pool: { min: 5, max: 2 } }, "pool.min"))
  it.effect("rejects a max below one", () => invalid({ database: "a", pool: { max: 0 } }, "pool.max"))

  it.effect("reads options from the environment", () =>
    Effect.gen(function*() {
      const options = yield* DatabaseConfig.fromEnv.pipe(
        Effect.withConfigProvider(ConfigProvider.fromMap(
          new Map([
            ["DATABASE_URL", "postgres://u@h:1234/envdb"],
            ["DATABASE_ALIAS", "main_db"],
            ["DATABASE_POOL_MAX", "7"]
          ])
        ))
      )
      const c = yield* resolve(options)
      expect(c).toMatchObject({ host: "h", port: 1234, database: "envdb", alias: "main_db" })
      expect(c.pool.max).toBe(7)
    }))
})

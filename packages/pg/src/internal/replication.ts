import type { DbError, Replication } from "@effect-dal/core"
import * as Effect from "effect/Effect"

/** An LSN (`16/B374D848`) as a number of bytes. */
const lsn = (text: string): bigint => {
  const slash = text.indexOf("/")
  return (BigInt(`0x${text.slice(0, slash)}`) << 32n) + BigInt(`0x${text.slice(slash + 1)}`)
}

const LSN = /^[0-9A-F]{1,8}\/[0-9A-F]{1,8}$/i

/** How often a read waiting for a replica asks it again. */
const POLL_MILLIS = 2

/**
 * PostgreSQL's replication positions: WAL LSNs. The commit position is
 * `pg_current_wal_insert_lsn()` after the commit (at or past the commit
 * record), a replica's is `pg_last_wal_replay_lsn()`; waiting polls it, as
 * PostgreSQL 15 has no server-side wait.
 *
 * @internal
 */
export const replication: Replication.Replication = {
  currentPositionSql: "SELECT pg_current_wal_insert_lsn()::text AS position",
  replicaStatus: (execute) =>
    Effect.map(
      execute<{ position: string | null; lag_millis: number | null }>(
        "SELECT pg_last_wal_replay_lsn()::text AS position, " +
          "(extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp()) * 1000)::float8 AS lag_millis"
      ),
      (rows) => ({ position: rows[0]?.position ?? undefined, lagMillis: rows[0]?.lag_millis ?? undefined })
    ),
  waitFor: (execute, position, timeoutMillis) => {
    const deadline = Date.now() + timeoutMillis
    const check = execute<{ ok: boolean | null }>("SELECT pg_last_wal_replay_lsn() >= ?::pg_lsn AS ok", [position])
    const loop: Effect.Effect<boolean, DbError.DbError> = Effect.flatMap(check, (rows) => {
      if (rows[0]?.ok === true) return Effect.succeed(true)
      if (Date.now() + POLL_MILLIS > deadline) return Effect.succeed(false)
      return Effect.zipRight(Effect.sleep(POLL_MILLIS), loop)
    })
    return loop
  },
  reached: (replayed, target) => lsn(replayed) >= lsn(target),
  merge: (a, b) => (lsn(a) >= lsn(b) ? a : b),
  distance: (current, replayed) => Math.max(0, Number(lsn(current) - lsn(replayed))),
  isPosition: (position) => LSN.test(position),
  isReadOnlyRejection: (error) => error.code === "25006"
}

import type { Replication } from "@effect-dal/core"
import * as Effect from "effect/Effect"

/** A MariaDB GTID position (`0-1-42,1-2-7`) as the last sequence number per replication domain. */
const domains = (position: string): Map<string, { server: string; seq: bigint }> => {
  const byDomain = new Map<string, { server: string; seq: bigint }>()
  for (const gtid of position.split(",")) {
    const [domain, server, seq] = gtid.trim().split("-")
    if (domain === undefined || server === undefined || seq === undefined) continue
    const before = byDomain.get(domain)
    if (before === undefined || BigInt(seq) > before.seq) byDomain.set(domain, { server, seq: BigInt(seq) })
  }
  return byDomain
}

const GTID_LIST = /^\d+-\d+-\d+(?:,\d+-\d+-\d+)*$/

/**
 * MariaDB's replication positions: GTID lists, one `domain-server-seq` per
 * replication domain. The commit position is `@@gtid_binlog_pos` after the
 * commit (at or past it in every domain), a replica's is `@@gtid_slave_pos`,
 * and waiting is `MASTER_GTID_WAIT`. MySQL's GTID sets are not handled.
 *
 * @internal
 */
export const replication: Replication.Replication = {
  currentPositionSql: "SELECT @@gtid_binlog_pos AS position",
  replicaStatus: (execute) =>
    Effect.zipWith(
      execute<{ position: string | null }>("SELECT @@gtid_slave_pos AS position"),
      execute<{ Seconds_Behind_Master: number | string | null }>("SHOW SLAVE STATUS"),
      (position, status) => {
        const seconds = status[0]?.Seconds_Behind_Master
        return {
          position: position[0]?.position || undefined,
          lagMillis: seconds === null || seconds === undefined ? undefined : Number(seconds) * 1000
        }
      }
    ),
  waitFor: (execute, position, timeoutMillis) =>
    Effect.map(
      execute<{ r: number | string }>("SELECT MASTER_GTID_WAIT(?, ?) AS r", [position, timeoutMillis / 1000]),
      (rows) => Number(rows[0]?.r) === 0
    ),
  reached: (replayed, target) => {
    const have = domains(replayed)
    for (const [domain, { seq }] of domains(target)) {
      if ((have.get(domain)?.seq ?? -1n) < seq) return false
    }
    return true
  },
  merge: (a, b) => {
    const merged = domains(a)
    for (const [domain, gtid] of domains(b)) {
      if ((merged.get(domain)?.seq ?? -1n) < gtid.seq) merged.set(domain, gtid)
    }
    return Array.from(merged, ([domain, { server, seq }]) => `${domain}-${server}-${seq}`).join(",")
  },
  distance: () => undefined,
  isPosition: (position) => GTID_LIST.test(position),
  isReadOnlyRejection: (error) => error.code === "1290" || error.code === "1836"
}

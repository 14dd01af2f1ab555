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

/** A position from its latest GTID per domain. */
const render = (byDomain: ReadonlyMap<string, { server: string; seq: bigint }>): string =>
  Array.from(byDomain, ([domain, { server, seq }]) => `${domain}-${server}-${seq}`).join(",")

const GTID_LIST = /^\d+-\d+-\d+(?:,\d+-\d+-\d+)*$/
const ONE_GTID = /^\d+-\d+-\d+$/

/**
 * The latest GTID per replication domain that the primary reported with its
 * commits (`last_gtid`, tracked by the session), over every connection of a
 * driver. A write's own GTID is in it once the write's reply is: a replica
 * at this position has the write, and reads need no `@@gtid_binlog_pos`.
 *
 * @internal
 */
export class ReportedPositions {
  private readonly byDomain = new Map<string, { server: string; seq: bigint }>()
  private text: string | undefined = undefined

  /** One reported `domain-server-seq`; anything else is ignored. */
  report(gtid: string): void {
    if (!ONE_GTID.test(gtid)) return
    const [domain, server, seq] = gtid.split("-") as [string, string, string]
    const n = BigInt(seq)
    if ((this.byDomain.get(domain)?.seq ?? -1n) >= n) return
    this.byDomain.set(domain, { server, seq: n })
    this.text = undefined
  }

  /** The GTID list of every domain's latest; `undefined` before any report. */
  current(): string | undefined {
    if (this.text === undefined && this.byDomain.size > 0) this.text = render(this.byDomain)
    return this.text
  }
}

/**
 * Makes a MariaDB session report `last_gtid` with each commit's reply.
 * Appended to the tracked variables (a name given twice is kept once).
 *
 * @internal
 */
export const TRACK_GTID_SQL =
  "SET SESSION session_track_system_variables = CONCAT_WS(',', NULLIF(@@session_track_system_variables, ''), 'last_gtid')"

/**
 * Whether a server can track `last_gtid` (MariaDB 10.3 and later), from its handshake's version.
 *
 * @internal
 */
export const tracksGtid = (serverVersion: string | undefined): boolean => {
  const m = /(\d+)\.(\d+)\.\d+-MariaDB/i.exec(serverVersion ?? "")
  return m !== null && (Number(m[1]) > 10 || (Number(m[1]) === 10 && Number(m[2]) >= 3))
}

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
    return render(merged)
  },
  distance: () => undefined,
  isPosition: (position) => GTID_LIST.test(position),
  isReadOnlyRejection: (error) => error.code === "1290" || error.code === "1836"
}

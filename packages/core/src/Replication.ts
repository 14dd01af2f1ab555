/**
 * What read/write splitting needs from the core: the engine capability a
 * driver offers (commit positions, replay positions, waiting for a
 * position, read-only rejections), the routing state that travels with a
 * fiber (pinned to the primary or opted into replicas, the commit token of
 * the last write), and commit tokens as strings for other processes.
 *
 * The router itself lives in `@effect-dal/routing`; the engine parts in each
 * engine's driver.
 *
 * @since 0.2.0
 */
import * as Data from "effect/Data"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import type { DbError } from "./DbError.js"

/**
 * How reads find replicas.
 *
 * @since 0.2.0
 */
export interface ReplicationOptions {
  /** Over either limit a replica gets no reads; it rejoins below half of both. Default: 16 MB and 10 s. */
  readonly maxLag?: {
    readonly bytes?: number | undefined
    readonly time?: Duration.DurationInput | undefined
  } | undefined
  /** How often each replica's lag is measured; default 1 second. */
  readonly lagCheckInterval?: Duration.DurationInput | undefined
  /**
   * After a write, how the fiber's reads see it: `position` (default) from
   * the commit position, `delay` by staying on the primary for
   * `stickyDelay`, or `false` for not at all.
   */
  readonly readYourWrites?: "position" | "delay" | false | undefined
  /** With `readYourWrites: "delay"`, how long reads stay on the primary after a write; default 2 seconds. */
  readonly stickyDelay?: Duration.DurationInput | undefined
  /** How long a read may wait for a replica to catch up before it goes to the primary; default 50 ms. */
  readonly waitForReplica?: Duration.DurationInput | undefined
}

/**
 * A read's view of the database: the state of one replica.
 *
 * @since 0.2.0
 */
export interface ReplicaStatus {
  /** The position the replica has replayed up to; `undefined` when it cannot tell. */
  readonly position: string | undefined
  /** How long ago the last replayed transaction committed on the primary, in ms, when the engine says. */
  readonly lagMillis: number | undefined
}

/**
 * An engine's replication capability (PostgreSQL LSNs, MySQL/MariaDB GTIDs).
 * Statements go through the node's own `execute`, so they have its pool,
 * breaker and timeouts.
 *
 * @since 0.2.0
 */
export interface Replication {
  /** Native SQL returning one row `{ position }`: the primary's current write position. */
  readonly currentPositionSql: string
  /** Reads a replica's replay position and lag. */
  readonly replicaStatus: (
    execute: <A extends object>(sql: string, params?: ReadonlyArray<unknown>) => Effect.Effect<ReadonlyArray<A>, DbError>
  ) => Effect.Effect<ReplicaStatus, DbError>
  /** Waits up to `timeoutMillis` on a replica until it has replayed `position`; whether it has. */
  readonly waitFor: (
    execute: <A extends object>(sql: string, params?: ReadonlyArray<unknown>) => Effect.Effect<ReadonlyArray<A>, DbError>,
    position: string,
    timeoutMillis: number
  ) => Effect.Effect<boolean, DbError>
  /** Whether a replica at `replayed` has everything up to `target`. */
  readonly reached: (replayed: string, target: string) => boolean
  /** The later of two positions (for GTID sets, their union). */
  readonly merge: (a: string, b: string) => string
  /** How many bytes `replayed` is behind `current`, where positions measure bytes (PostgreSQL). */
  readonly distance: (current: string, replayed: string) => number | undefined
  /** Whether the position parses; a token with a malformed one is refused. */
  readonly isPosition: (position: string) => boolean
  /** Whether an error is a replica refusing a write (PostgreSQL `25006`, MySQL `1290` / `1836`). */
  readonly isReadOnlyRejection: (error: DbError) => boolean
}

/**
 * Where a fiber's reads may go: `auto` (the routing rules), `primary`
 * (everything on the primary) or `replica` (reads may go to a replica even
 * right after a write; stale is fine).
 *
 * @since 0.2.0
 */
export type RoutingMode = "auto" | "primary" | "replica"

/**
 * The fiber's routing mode; forked fibers inherit it.
 *
 * @since 0.2.0
 */
export const currentMode: FiberRef.FiberRef<RoutingMode> = FiberRef.unsafeMake<RoutingMode>("auto")

/**
 * The fiber's read-your-writes state, per database alias: the commit
 * position of its last write (`position` mode), or until when its reads
 * stay on the primary (`delay` mode, epoch ms).
 *
 * @since 0.2.0
 */
export interface WriteMark {
  readonly position?: string | undefined
  /** A write committed since `position` was read: the next read reads the primary's position first. */
  readonly pending?: boolean | undefined
  readonly stickyUntil?: number | undefined
}

/**
 * The fiber's write marks by database alias; forked fibers inherit them and
 * joined fibers hand theirs back.
 *
 * @since 0.2.0
 */
export const currentWrites: FiberRef.FiberRef<ReadonlyMap<string, WriteMark>> = FiberRef.unsafeMake<
  ReadonlyMap<string, WriteMark>
>(new Map())

/**
 * Runs `effect` with every statement on the primary.
 *
 * @since 0.2.0
 */
export const primary = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.locally(effect, currentMode, "primary")

/**
 * Runs `effect` with its reads allowed on replicas even right after a write:
 * the explicit "stale is fine". A read-only transaction inside runs on a
 * replica, as one consistent snapshot there.
 *
 * @since 0.2.0
 */
export const replica = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.locally(effect, currentMode, "replica")

/**
 * A commit token that is not one: not made by `Db.commitToken`, or for
 * another engine.
 *
 * @since 0.2.0
 */
export class InvalidCommitToken extends Data.TaggedError("InvalidCommitToken")<{
  readonly token: string
  readonly detail: string
}> {
  /** @since 0.2.0 */
  readonly category = "invalidInput" as const
  override get message(): string {
    return `invalid commit token (${this.detail})`
  }
}

const PREFIX = "dal1."

/**
 * A commit position as a token safe in a header or a cookie: `dal1.` and
 * base64url.
 *
 * @since 0.2.0
 */
export const encodeToken = (position: string): string => PREFIX + Buffer.from(position, "utf8").toString("base64url")

/**
 * The position in a token, or the reason it is not a token.
 *
 * @since 0.2.0
 */
export const decodeToken = (
  token: string,
  isPosition: (position: string) => boolean
): Effect.Effect<string, InvalidCommitToken> => {
  if (!token.startsWith(PREFIX)) {
    return Effect.fail(new InvalidCommitToken({ token, detail: `it does not start with "${PREFIX}"` }))
  }
  const body = token.slice(PREFIX.length)
  if (!/^[A-Za-z0-9_-]+$/.test(body)) return Effect.fail(new InvalidCommitToken({ token, detail: "it is not base64url" }))
  const position = Buffer.from(body, "base64url").toString("utf8")
  return isPosition(position)
    ? Effect.succeed(position)
    : Effect.fail(new InvalidCommitToken({ token, detail: "it holds no commit position of this engine" }))
}

const LOCKING_READ = /\bFOR\s+(?:UPDATE|SHARE|NO\s+KEY\s+UPDATE|KEY\s+SHARE)\b|\bLOCK\s+IN\s+SHARE\s+MODE\b|\bINTO\b/i
const READ = /^\s*(?:\(\s*)*(?:SELECT|SHOW|VALUES|TABLE)\b/i

/**
 * Whether a statement may run on a replica: a plain read. Locking reads
 * (`FOR UPDATE` / `FOR SHARE`), `SELECT … INTO`, CTEs (which may write) and
 * anything not recognised stay on the primary.
 *
 * @since 0.2.0
 */
export const isReplicaRead = (sql: string): boolean => READ.test(sql) && !LOCKING_READ.test(sql)

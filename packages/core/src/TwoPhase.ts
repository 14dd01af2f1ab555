/**
 * Two-phase commit branches: one database's part of a transaction that spans
 * several databases (PostgreSQL `PREPARE TRANSACTION`, MySQL/MariaDB XA).
 * The coordinator that decides (the routing package's
 * `Sharding.withAtomicTransaction`) is built on this seam; the core knows
 * nothing of decisions.
 *
 * @since 0.3.0
 */
import type * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type { DbError } from "./DbError.js"

/**
 * One database's branch of a distributed transaction, on a connection of its
 * own.
 *
 * @since 0.3.0
 */
export interface Branch {
  /** The global id the branch is prepared under. */
  readonly gid: string
  /** Runs `effect` inside the branch: this database's `Db` calls and `sql` templates run on its connection. */
  readonly run: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  /** Ends the branch's work and prepares it: from then on it survives a crash of this process, until decided. */
  readonly prepare: Effect.Effect<void, DbError>
  /** Commits: a prepared branch with `COMMIT PREPARED`, one never prepared in one phase. */
  readonly commit: Effect.Effect<void, DbError>
  /** Rolls back, prepared or not. */
  readonly rollback: Effect.Effect<void, DbError>
}

/**
 * A database's two-phase commit operations.
 *
 * @since 0.3.0
 */
export interface TwoPhase {
  /**
   * Starts a branch named `gid` (`[A-Za-z0-9_]`, at most 64 characters) on
   * a connection held until the scope closes. A branch neither prepared nor
   * decided by then is rolled back; a prepared one left undecided stays
   * prepared on the server, for recovery to decide.
   */
  readonly begin: (gid: string) => Effect.Effect<Branch, DbError, Scope.Scope>
  /** Commits a prepared branch from any session (recovery). */
  readonly commitPrepared: (gid: string) => Effect.Effect<void, DbError>
  /** Rolls back a prepared branch from any session (recovery). */
  readonly rollbackPrepared: (gid: string) => Effect.Effect<void, DbError>
  /** The branches prepared and undecided on this database's server (on MySQL, every database of the server). */
  readonly prepared: Effect.Effect<ReadonlyArray<string>, DbError>
}

/**
 * Whether `gid` is a valid branch id: it is written into SQL as a literal.
 *
 * @since 0.3.0
 */
export const isValidGid = (gid: string): boolean => /^[A-Za-z0-9_]{1,64}$/.test(gid)

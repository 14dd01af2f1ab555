/**
 * What a write makes stale, and when that is announced: only once the write
 * is committed. Keys are `@effect/experimental` `Reactivity` keys (`["users"]`
 * for a whole table, `{ users: [id] }` for rows). A statement declares them
 * with `invalidates`; inside a transaction they wait for its COMMIT and are
 * dropped by its ROLLBACK. Listeners (a cache) and the database's
 * `Reactivity` (which `sql` templates' `reactive` and `Reactivity.mutation`
 * use) hear them then.
 *
 * @since 0.3.0
 */
import type * as Reactivity from "@effect/experimental/Reactivity"

/**
 * Invalidation keys: a list (`["users"]`), or ids by table (`{ users: [1, 2] }`).
 *
 * @since 0.3.0
 */
export type Keys = ReadonlyArray<unknown> | Readonly<Record<string, ReadonlyArray<unknown>>>

/**
 * Who hears of committed invalidations.
 *
 * @since 0.3.0
 */
export interface Invalidations {
  /** Calls `listener` with the keys of every committed write; returns the unsubscribe. */
  readonly subscribe: (listener: (keys: Keys) => void) => () => void
  /** The database's `Reactivity`: its `invalidate` and `mutation` wait for the fiber's transaction to commit. */
  readonly reactivity: Reactivity.Reactivity["Type"]
}

/**
 * The keys as strings: whole tables (a list key, `["users"]`), and rows
 * (`"users:1"` for `{ users: [1] }`) with the tables they are in. A table
 * change makes everything read from the table stale; a row change makes that
 * row's reads stale, and reads of the table as a whole (lists, counts).
 * Strings and numbers keep their text; other values are JSON-encoded.
 *
 * @since 0.3.0
 */
export const normalize = (
  keys: Keys
): { readonly tables: ReadonlyArray<string>; readonly rows: ReadonlyArray<string>; readonly rowTables: ReadonlyArray<string> } => {
  if (Array.isArray(keys)) return { tables: keys.map(text), rows: [], rowTables: [] }
  const rows: Array<string> = []
  const rowTables: Array<string> = []
  for (const [table, ids] of Object.entries(keys as Record<string, ReadonlyArray<unknown>>)) {
    rowTables.push(table)
    for (const id of ids) rows.push(`${table}:${text(id)}`)
  }
  return { tables: [], rows, rowTables }
}

const text = (u: unknown): string =>
  typeof u === "string" ? u : typeof u === "number" || typeof u === "bigint" ? String(u) : JSON.stringify(u)

/**
 * A per-connection LRU of prepared statements, for driver authors: it names
 * statements, keeps at most `capacity`, and reports evictions so the driver
 * can free them on the server. Hits, misses and evictions are counted in a
 * `Stats` object shared by all connections of a pool.
 *
 * @since 0.1.0
 */

/**
 * Counters of every statement cache of one pool.
 *
 * @since 0.1.0
 */
export interface Stats {
  hits: number
  misses: number
  evictions: number
}

/**
 * Fresh counters.
 *
 * @since 0.1.0
 */
export const makeStats = (): Stats => ({ hits: 0, misses: 0, evictions: 0 })

let counter = 0

/**
 * The statement cache of one connection.
 *
 * @since 0.1.0
 */
export class StatementCache {
  // Map iteration order is insertion order: the first key is the least recently used
  private readonly names = new Map<string, string>()

  constructor(
    readonly capacity: number,
    private readonly stats: Stats,
    /** Frees an evicted statement on the server. */
    private readonly evict: (name: string) => void
  ) {}

  /** The prepared name of `sql`, preparing a new one on a miss; `undefined` when caching is off. */
  lookup(sql: string): string | undefined {
    if (this.capacity <= 0) return undefined
    const hit = this.names.get(sql)
    if (hit !== undefined) {
      this.stats.hits++
      this.names.delete(sql)
      this.names.set(sql, hit)
      return hit
    }
    this.stats.misses++
    if (this.names.size >= this.capacity) {
      const [oldSql, oldName] = this.names.entries().next().value!
      this.names.delete(oldSql)
      this.stats.evictions++
      this.evict(oldName)
    }
    const name = `dal_${(++counter).toString(36)}`
    this.names.set(sql, name)
    return name
  }

  /** Forgets `sql` (its plan went stale), freeing it on the server. */
  invalidate(sql: string): void {
    const name = this.names.get(sql)
    if (name === undefined) return
    this.names.delete(sql)
    this.evict(name)
  }

  get size(): number {
    return this.names.size
  }
}

/**
 * The pool's queue of callers waiting for a connection: first come, first
 * served, with withdrawn and timed-out callers skipped lazily.
 *
 * @internal
 */
import type { DbError } from "../DbError.js"

/** How deep deliveries may nest (a statement that fails synchronously hands its connection on at once). @internal */
export const MAX_NESTED_DELIVERIES = 16

/**
 * A caller waiting for a connection. `handed`: a connection is assigned but
 * not yet passed on (deliveries nested too deep are deferred a microtask).
 *
 * @internal
 */
export class Waiter<T> {
  state: "waiting" | "handed" | "delivered" | "withdrawn" | "failed" = "waiting"
  entry: T | undefined = undefined
  timer: ReturnType<typeof setTimeout> | undefined = undefined
  constructor(
    readonly deliver: (entry: T) => void,
    readonly fail: (error: DbError) => void
  ) {}
}

/**
 * A FIFO of waiters on a plain array with a moving head: O(1) at both ends,
 * compacted once the consumed prefix is both large and most of the array.
 *
 * @internal
 */
export class WaitQueue<T> {
  private items: Array<Waiter<T> | undefined> = []
  private head = 0

  push(w: Waiter<T>): void {
    this.items.push(w)
  }

  /** The first caller still waiting, taken off the queue; the others before it are dropped. */
  next(): Waiter<T> | undefined {
    while (this.head < this.items.length) {
      const w = this.items[this.head]!
      this.items[this.head] = undefined
      this.head++
      if (this.head > 1024 && this.head * 2 > this.items.length) {
        this.items = this.items.slice(this.head)
        this.head = 0
      }
      if (w.state === "waiting") return w
    }
    return undefined
  }
}

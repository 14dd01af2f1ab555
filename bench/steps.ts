/**
 * `node --conditions=dist --import tsx bench/steps.ts [point|transfer] [effect|routed]`:
 * how many steps of Effect's run loop one operation takes on the in-memory
 * driver (`bench/fake.ts`), by kind of instruction. On a machine whose
 * client CPU bounds the point select, each step costs about 0.5 µs of it, so
 * this count is the part of the Effect runtime's cost that effect-dal
 * decides, free of the machine's noise. `SHOW=1` lists the steps of one
 * operation, with the function each one runs.
 */
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as RuntimeFlags from "effect/RuntimeFlags"
import * as RuntimeFlagsPatch from "effect/RuntimeFlagsPatch"
import * as Supervisor from "effect/Supervisor"
import { fakeLayer } from "./fake.js"
import type { Op } from "./systems.js"
import { dalWorkloads } from "./systems.js"

const workload = process.argv[2] === "transfer" ? "transfer" : "point"
const routed = process.argv[3] === "routed"
const OPS = 1_000

/** A step as the run loop sees it: its instruction and the function it runs, where it has one. */
type Step = { readonly _op: string; readonly effect_instruction_i0?: unknown; readonly effect_instruction_i1?: unknown }
const describe = (x: unknown): string =>
  typeof x === "function" ? (x.name || String(x).slice(0, 100).replace(/\s+/g, " ")) : ""

let steps = 0
/** The operation running; the one in the middle of the run is the one `SHOW` lists. */
let current = -1
const byKind = new Map<string, number>()
const shown: Array<string> = []

/** The supervisor that the `OpSupervision` flag asks about every step. */
class Counter extends Supervisor.AbstractSupervisor<void> {
  get value() {
    return Effect.void
  }
  override onEffect<A, E>(_fiber: Fiber.RuntimeFiber<A, E>, effect: Effect.Effect<any, any, any>) {
    steps++
    const step = effect as unknown as Step
    byKind.set(step._op, (byKind.get(step._op) ?? 0) + 1)
    if (process.env["SHOW"] === "1" && current === OPS / 2) {
      shown.push(`${step._op} ${describe(step.effect_instruction_i0) || describe(step.effect_instruction_i1)}`)
    }
  }
}

const ops = dalWorkloads("")
const next = (i: number) => (workload === "point" ? ops.pointSelect(i) : ops.transfer(i, i + 1, 1)) as Extract<Op, { _tag: "effect" }>
const runtime = ManagedRuntime.make(fakeLayer(routed))
const loop = (n: number) =>
  Effect.gen(function*() {
    for (let i = 0; i < n; i++) {
      current = i
      yield* next(i).run
    }
  })
// unsupervised first: the pool filled, the statements prepared
await runtime.runPromise(loop(100))
await runtime.runPromise(
  loop(OPS).pipe(
    Effect.supervised(new Counter()),
    Effect.withRuntimeFlagsPatch(RuntimeFlagsPatch.enable(RuntimeFlags.OpSupervision))
  )
)
console.log(
  `${workload}${routed ? ", routed" : ""}: ${(steps / OPS).toFixed(1)} steps per operation (`
    + [...byKind].filter(([, n]) => n >= OPS / 2).map(([kind, n]) => `${kind} ${(n / OPS).toFixed(1)}`).join(", ")
    + ")"
)
if (shown.length > 0) console.log(shown.join("\n"))
await runtime.dispose()

/**
 * `node --conditions=dist --expose-gc --import tsx bench/cpu.ts`: where the
 * CPU of one operation goes, client against server. Linux only (it reads
 * `/proc`), with the database server on this machine.
 *
 * On a machine whose client and server share a few cores, throughput follows
 * the CPU an operation costs both of them together: a client that spends more
 * of its own CPU to save the server's can come out even. This prints, per
 * system and turn, the operations per second and the CPU per operation of the
 * client's main thread, of the whole client process (GC helper threads too),
 * of the server's processes, and of the rest of the machine.
 *
 * Environment: `ENGINE` pg (default) or mysql; `WORKLOAD` transfer (default),
 * point or top (the shard fan-out); `SYSTEMS`, indexes into the engine's
 * makers (default `0,3` on pg: raw `pg.Pool` and effect-dal; `0,2` on
 * mysql), or into the shard comparison's with `SET=shard` (the replica
 * router's with `SET=routing`, the Promise API's with `SET=promise`); `ROUNDS` (4) and
 * `SECONDS` (3) per turn.
 */
import { readdirSync, readFileSync } from "node:fs"
import { drive, randomId, randomTransfer } from "./drive.js"
import type { Engine, Op, System } from "./systems.js"
import { cleanup, makers, prepare, promiseMakers, routingMakers, settle, shardMakers } from "./systems.js"

const ENGINE: Engine = process.env["ENGINE"] === "mysql" ? "mysql" : "pg"
const WORKLOAD = process.env["WORKLOAD"] ?? "transfer"
const SECONDS = Number(process.env["SECONDS"] ?? 3)
const ROUNDS = Number(process.env["ROUNDS"] ?? 4)
const CONCURRENCY = 20
/** `/proc` counts CPU time in ticks of 1/100 s (USER_HZ). */
const TICK_MICROS = 10_000
const SERVER = ENGINE === "pg" ? /^postgres/ : /^(mariadbd|mysqld)$/

/** utime + stime of one `/proc/…/stat` line, in ticks. */
const ticksOf = (stat: string) => {
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
  return Number(fields[11]) + Number(fields[12])
}

/** The CPU ticks of the server's processes (by their names). */
const serverTicks = () => {
  let ticks = 0
  for (const pid of readdirSync("/proc")) {
    if (!/^\d+$/.test(pid)) continue
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
      if (SERVER.test(stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")")))) ticks += ticksOf(stat)
    } catch {
      // the process ended while we looked
    }
  }
  return ticks
}
const mainThreadTicks = () => ticksOf(readFileSync(`/proc/self/task/${process.pid}/stat`, "utf8"))
/** Busy ticks of the whole machine: user, nice, system, irq, softirq. */
const machineTicks = () => {
  const f = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number)
  return f[0]! + f[1]! + f[2]! + f[5]! + f[6]!
}

const next = (s: System): Op =>
  WORKLOAD === "point" ? s.workloads.pointSelect(randomId()) : WORKLOAD === "top" ? s.workloads.top100!() : randomTransfer(s)

const main = async () => {
  const sets: Record<string, ReadonlyArray<() => Promise<System>>> = { shard: shardMakers, routing: routingMakers, promise: promiseMakers }
  const set = process.env["SET"]
  if (set !== undefined && !(set in sets)) throw new Error(`SET=${set}: expected one of ${Object.keys(sets).join(", ")}`)
  const pool = set === undefined ? makers[ENGINE] : sets[set]!
  await prepare()
  const picked = (process.env["SYSTEMS"] ?? (ENGINE === "pg" ? "0,3" : "0,2")).split(",").map(Number)
  const systems: Array<System> = []
  for (const i of picked) systems.push(await pool[i]!())
  try {
    for (const s of systems) {
      await settle(ENGINE)
      await drive(s, () => next(s), CONCURRENCY, 1)
    }
    console.log("system | ops/s | µs of CPU per op: client main thread, client process, server, rest of the machine")
    for (let round = 0; round < ROUNDS; round++) {
      for (const s of systems) {
        await settle(ENGINE)
        const main0 = mainThreadTicks()
        const process0 = process.cpuUsage()
        const server0 = serverTicks()
        const machine0 = machineTicks()
        const start = performance.now()
        const sample = await drive(s, () => next(s), CONCURRENCY, SECONDS)
        const ops = sample.ops * ((performance.now() - start) / 1000)
        const machine = machineTicks() - machine0
        const server = serverTicks() - server0
        const usage = process.cpuUsage(process0)
        const client = (usage.user + usage.system) / TICK_MICROS
        const perOp = (ticks: number) => ((ticks * TICK_MICROS) / ops).toFixed(0)
        console.log(
          `${s.name} | ${sample.ops.toFixed(0)} | ${perOp(mainThreadTicks() - main0)}, ${perOp(client)}, ${perOp(server)}, ${
            perOp(machine - client - server)
          }`
        )
      }
    }
  } finally {
    for (const s of systems) await s.close()
    await cleanup()
  }
}
main()

import { describe, expect, it } from "vitest"
import { replication } from "../src/internal/replication.js"

describe("MariaDB replication positions (GTID lists)", () => {
  it("a replica has reached a position when it is at or past it in every replication domain", () => {
    expect(replication.reached("0-1-42", "0-1-42")).toBe(true)
    expect(replication.reached("0-1-43", "0-1-42")).toBe(true)
    expect(replication.reached("0-1-41", "0-1-42")).toBe(false)
    // sequence numbers compare as numbers
    expect(replication.reached("0-1-100", "0-1-99")).toBe(true)
    // every domain of the target counts; one the replica never saw is not reached
    expect(replication.reached("0-1-50,1-2-7", "0-1-42,1-2-7")).toBe(true)
    expect(replication.reached("0-1-50", "0-1-42,1-2-7")).toBe(false)
    expect(replication.merge("0-1-42,1-2-9", "0-1-50,2-3-1")).toBe("0-1-50,1-2-9,2-3-1")
    expect(replication.distance("0-1-50", "0-1-42")).toBeUndefined()
    expect(replication.isPosition("0-1-42,1-2-7")).toBe(true)
    for (const bad of ["", "0-1", "0/16B3748", "a-b-c", "0-1-42,"]) expect(replication.isPosition(bad), bad).toBe(false)
  })
})

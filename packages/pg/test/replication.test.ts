import { describe, expect, it } from "vitest"
import { replication } from "../src/internal/replication.js"

describe("PostgreSQL replication positions (LSNs)", () => {
  it("compares, merges and measures LSNs as 64-bit byte positions, not as text", () => {
    expect(replication.reached("0/16B3748", "0/16B3748")).toBe(true)
    expect(replication.reached("0/16B3749", "0/16B3748")).toBe(true)
    expect(replication.reached("0/16B3747", "0/16B3748")).toBe(false)
    // "0/FFFFFFFF" < "1/0" although it sorts after it as text
    expect(replication.reached("1/0", "0/FFFFFFFF")).toBe(true)
    expect(replication.reached("0/FFFFFFFF", "1/0")).toBe(false)
    expect(replication.merge("0/FFFFFFFF", "1/0")).toBe("1/0")
    expect(replication.distance("1/0", "0/FFFFFFFF")).toBe(1)
    expect(replication.distance("0/10", "0/20")).toBe(0)
    expect(replication.isPosition("16/B374D848")).toBe(true)
    for (const bad of ["", "16", "x/1", "0-1-5", "1/2/3"]) expect(replication.isPosition(bad), bad).toBe(false)
  })
})

import { describe, expect, it } from "vitest"
import { replication, ReportedPositions, tracksGtid } from "../src/internal/replication.js"

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

  it("the GTIDs commits report keep each domain's latest; what is not a GTID is ignored", () => {
    const reported = new ReportedPositions()
    expect(reported.current()).toBeUndefined()
    reported.report("0-1-42")
    reported.report("0-1-41") // a reply that arrived after a later commit's
    reported.report("1-2-7")
    reported.report("0-2-43") // another server of the same domain, after a promotion
    for (const bad of ["", "0-1", "x-1-2", "0-1-2,1-2-3"]) reported.report(bad)
    expect(reported.current()).toBe("0-2-43,1-2-7")
    expect(replication.reached("0-2-43,1-2-7", reported.current()!)).toBe(true)
  })

  it("last_gtid is tracked on MariaDB 10.3 and later only", () => {
    expect(tracksGtid("5.5.5-10.11.19-MariaDB-0+deb12u1")).toBe(true)
    expect(tracksGtid("11.4.2-MariaDB")).toBe(true)
    expect(tracksGtid("10.2.44-MariaDB")).toBe(false)
    expect(tracksGtid("8.0.36")).toBe(false)
    expect(tracksGtid(undefined)).toBe(false)
  })
})

// `npm test` needs, beyond the npm packages, a headless Chromium: one test renders the capacity
// check's report in it. This brings it on a fresh machine (Debian's package, when run as root),
// or stops at once with one line saying what is missing and how to install it.
import { execFileSync } from "node:child_process"
import { existsSync } from "node:fs"

const candidates = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
const found = () => candidates.some((path) => existsSync(path))

if (!found()) {
  const install = "apt-get update && apt-get install -y --no-install-recommends chromium"
  const isRoot = typeof process.getuid === "function" && process.getuid() === 0
  if (!isRoot || !existsSync("/usr/bin/apt-get")) {
    console.error(`npm test needs Debian's chromium (the capacity-check report test renders in it): run \`sudo sh -c '${install}'\``)
    process.exit(1)
  }
  console.log("npm test: installing Debian's chromium (about 15 s), which the capacity-check report test renders in")
  try {
    execFileSync("sh", ["-c", install], { stdio: ["ignore", "ignore", "inherit"], env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" } })
  } catch {
    console.error(`npm test: installing chromium failed; run \`${install}\` and try again`)
    process.exit(1)
  }
  if (!found()) {
    console.error(`npm test: chromium is still missing after \`${install}\``)
    process.exit(1)
  }
}

import * as Mysql from "mysql2/promise"
const pool = Mysql.createPool({ uri: "mysql://root@127.0.0.1:3306/test", connectionLimit: 20, supportBigNumbers: true })
const n = Number(process.env.QUERIES ?? 40000)
const start = performance.now()
await Promise.all(Array.from({ length: 20 }, async () => {
  for (let i = 0; i < n / 20; i++) {
    const id = 1 + Math.floor(Math.random() * 9999)
    const conn = await pool.getConnection()
    try {
      await conn.query("START TRANSACTION")
      await conn.execute("UPDATE bench_accounts SET balance = balance - ? WHERE id = ?", [1, id])
      await conn.execute("UPDATE bench_accounts SET balance = balance + ? WHERE id = ?", [1, id + 1])
      await conn.query("COMMIT")
    } catch (e) { await conn.query("ROLLBACK") } finally { conn.release() }
  }
}))
console.log("raw transfer", Math.round(n / ((performance.now() - start) / 1000)))
await pool.end()

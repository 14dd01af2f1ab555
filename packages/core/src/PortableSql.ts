/**
 * Portable SQL: `?` is a value placeholder, `??` a literal `?`, and `[name]`
 * a quoted identifier. Native placeholders (`$1`) and native quoting pass
 * through. Nothing inside string literals, quoted identifiers, comments or
 * dollar-quoted bodies is touched.
 *
 * Translations are cached per dialect, because the same few statement shapes
 * are translated on every call of a hot path.
 *
 * @since 0.1.0
 */
import type { Dialect } from "./Dialect.js"
import { quoteIdentifier } from "./Dialect.js"

/**
 * The result of translating one portable statement.
 *
 * @since 0.1.0
 */
export interface Translated {
  /** The statement in the dialect's native syntax. */
  readonly sql: string
  /** How many parameters the statement expects. */
  readonly parameterCount: number
  /** How the statement spelled its placeholders. */
  readonly placeholders: "portable" | "native" | "none"
}

/**
 * Why a statement cannot be translated.
 *
 * @since 0.1.0
 */
export interface TranslateFailure {
  readonly _tag: "TranslateFailure"
  readonly reason: "empty" | "mixedPlaceholders"
  readonly detail: string
}

const isIdentStart = (c: number): boolean =>
  (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 95 || c > 127
const isIdentChar = (c: number): boolean => isIdentStart(c) || (c >= 48 && c <= 57) || c === 36
const isDigit = (c: number): boolean => c >= 48 && c <= 57
const isSpace = (c: number): boolean => c === 32 || c === 9 || c === 10 || c === 13 || c === 12
const upper = (c: number): number => (c >= 97 && c <= 122 ? c - 32 : c)

/** `[a]`, `[a.b]`, `[my col]`: letters, digits, `_`, `$`, `.` and spaces, starting with a letter or `_`. */
const bracketIdentifierEnd = (sql: string, open: number): number => {
  const first = sql.charCodeAt(open + 1)
  if (!isIdentStart(first)) return -1
  for (let i = open + 2; i < sql.length; i++) {
    const c = sql.charCodeAt(i)
    if (c === 93) return i
    if (!(isIdentChar(c) || c === 46 || c === 32)) return -1
  }
  return -1
}

/** An identifier or `)` / `]` right before `[` means an array subscript, not a quoted name. */
const isSubscript = (sql: string, open: number): boolean => {
  if (open === 0) return false
  const prev = sql.charCodeAt(open - 1)
  return isIdentChar(prev) || prev === 41 || prev === 93
}

/** End (exclusive) of a `$tag$` opener at `i`, or -1. */
const dollarTagEnd = (sql: string, i: number): number => {
  let j = i + 1
  if (j < sql.length && sql.charCodeAt(j) === 36) return j + 1
  if (!isIdentStart(sql.charCodeAt(j))) return -1
  j++
  while (j < sql.length && isIdentChar(sql.charCodeAt(j)) && sql.charCodeAt(j) !== 36) j++
  return j < sql.length && sql.charCodeAt(j) === 36 ? j + 1 : -1
}

/**
 * Translates portable SQL to the dialect, without caching.
 *
 * @since 0.1.0
 */
export const translateUncached = (sql: string, dialect: Dialect): Translated | TranslateFailure => {
  let start = 0
  while (start < sql.length && isSpace(sql.charCodeAt(start))) start++
  if (start === sql.length) {
    return { _tag: "TranslateFailure", reason: "empty", detail: "the SQL text is empty" }
  }
  let out = ""
  let last = 0
  let portable = 0
  let nativeMax = 0
  let nativeSeen = false
  const n = sql.length
  let i = 0
  const skipQuoted = (quote: number, backslash: boolean): number => {
    let j = i + 1
    while (j < n) {
      const c = sql.charCodeAt(j)
      if (backslash && c === 92) {
        j += 2
        continue
      }
      if (c === quote) {
        if (sql.charCodeAt(j + 1) === quote) {
          j += 2
          continue
        }
        return j + 1
      }
      j++
    }
    return n
  }
  while (i < n) {
    const c = sql.charCodeAt(i)
    switch (c) {
      case 39: { // '
        const prev = i > 0 ? sql.charCodeAt(i - 1) : 0
        const escapeString = dialect.backslashEscapes ||
          ((prev === 69 || prev === 101) && !(i > 1 && isIdentChar(sql.charCodeAt(i - 2))))
        i = skipQuoted(39, escapeString)
        continue
      }
      case 34: // "
        i = skipQuoted(34, dialect.doubleQuoteIsString && dialect.backslashEscapes)
        continue
      case 96: // `
        if (dialect.identifierQuote === "`") {
          i = skipQuoted(96, false)
          continue
        }
        break
      case 45: // -- comment
        if (sql.charCodeAt(i + 1) === 45) {
          const end = sql.indexOf("\n", i + 2)
          i = end === -1 ? n : end + 1
          continue
        }
        break
      case 35: // # comment (MySQL)
        if (dialect.name === "mysql") {
          const end = sql.indexOf("\n", i + 1)
          i = end === -1 ? n : end + 1
          continue
        }
        break
      case 47: // /* comment */, nested in PostgreSQL
        if (sql.charCodeAt(i + 1) === 42) {
          let depth = 1
          let j = i + 2
          while (j < n && depth > 0) {
            if (sql.charCodeAt(j) === 42 && sql.charCodeAt(j + 1) === 47) {
              depth--
              j += 2
            } else if (dialect.name === "pg" && sql.charCodeAt(j) === 47 && sql.charCodeAt(j + 1) === 42) {
              depth++
              j += 2
            } else j++
          }
          i = j
          continue
        }
        break
      case 36: { // $1 or $tag$
        if (i > 0 && isIdentChar(sql.charCodeAt(i - 1))) break
        if (dialect.nativePlaceholders === "dollar" && isDigit(sql.charCodeAt(i + 1))) {
          let j = i + 1
          let value = 0
          while (j < n && isDigit(sql.charCodeAt(j))) {
            value = value * 10 + (sql.charCodeAt(j) - 48)
            j++
          }
          nativeSeen = true
          if (value > nativeMax) nativeMax = value
          i = j
          continue
        }
        if (dialect.dollarQuotes) {
          const tagEnd = dollarTagEnd(sql, i)
          if (tagEnd !== -1) {
            const tag = sql.slice(i, tagEnd)
            const close = sql.indexOf(tag, tagEnd)
            i = close === -1 ? n : close + tag.length
            continue
          }
        }
        break
      }
      case 63: { // ?
        if (sql.charCodeAt(i + 1) === 63) {
          out += sql.slice(last, i) + "?"
          i += 2
          last = i
          continue
        }
        portable++
        if (dialect.nativePlaceholders === "question") {
          i++
          continue
        }
        out += sql.slice(last, i) + dialect.placeholder(portable)
        i++
        last = i
        continue
      }
      case 91: { // [name]
        if (isSubscript(sql, i)) break
        const end = bracketIdentifierEnd(sql, i)
        if (end === -1) break
        out += sql.slice(last, i) + quoteIdentifier(dialect, sql.slice(i + 1, end))
        i = end + 1
        last = i
        continue
      }
    }
    i++
  }
  if (portable > 0 && nativeSeen) {
    return {
      _tag: "TranslateFailure",
      reason: "mixedPlaceholders",
      detail: "use either portable `?` placeholders or native `$n` placeholders in one statement, not both"
    }
  }
  const translated = last === 0 ? sql : out + sql.slice(last)
  return {
    sql: translated,
    parameterCount: nativeSeen ? nativeMax : portable,
    placeholders: nativeSeen ? "native" : portable > 0 ? "portable" : "none"
  }
}

/**
 * A bounded translation cache for one dialect.
 *
 * @since 0.1.0
 */
export interface Translator {
  readonly dialect: Dialect
  readonly translate: (sql: string) => Translated | TranslateFailure
}

/**
 * Makes a translator that remembers up to `capacity` distinct statements,
 * dropping the oldest.
 *
 * @since 0.1.0
 */
export const makeTranslator = (dialect: Dialect, capacity = 2048): Translator => {
  const cache = new Map<string, Translated | TranslateFailure>()
  return {
    dialect,
    translate(sql) {
      // on a hit, no recency refresh: it would cost two Map writes per statement, and a
      // full cache dropping its oldest entry merely re-translates it
      const hit = cache.get(sql)
      if (hit !== undefined) return hit
      const result = translateUncached(sql, dialect)
      if (cache.size >= capacity) cache.delete(cache.keys().next().value!)
      cache.set(sql, result)
      return result
    }
  }
}

/**
 * Whether a translation failed.
 *
 * @since 0.1.0
 */
export const isFailure = (t: Translated | TranslateFailure): t is TranslateFailure => "_tag" in t

const leadingWords = (sql: string, count: number): Array<string> => {
  const words: Array<string> = []
  let i = 0
  const n = sql.length
  while (i < n && words.length < count) {
    const c = sql.charCodeAt(i)
    if (isSpace(c) || c === 40 || c === 59) {
      i++
    } else if (c === 45 && sql.charCodeAt(i + 1) === 45) {
      const end = sql.indexOf("\n", i)
      i = end === -1 ? n : end + 1
    } else if (c === 35) {
      const end = sql.indexOf("\n", i)
      i = end === -1 ? n : end + 1
    } else if (c === 47 && sql.charCodeAt(i + 1) === 42) {
      const end = sql.indexOf("*/", i + 2)
      i = end === -1 ? n : end + 2
    } else if (isIdentStart(c)) {
      let j = i + 1
      while (j < n && isIdentChar(sql.charCodeAt(j))) j++
      words.push(sql.slice(i, j).toUpperCase())
      i = j
    } else {
      break
    }
  }
  return words
}

const IMPLICIT_COMMIT = new Set(["CREATE", "ALTER", "DROP", "TRUNCATE", "RENAME"])

/**
 * Whether a statement is DDL that MySQL commits implicitly: `CREATE`,
 * `ALTER`, `DROP`, `TRUNCATE` or `RENAME`, except temporary tables, which do
 * not commit.
 *
 * @since 0.1.0
 */
export const isImplicitCommitDdl = (sql: string): boolean => {
  let i = 0
  while (i < sql.length && isSpace(sql.charCodeAt(i))) i++
  // every statement of a MySQL transaction comes here: a look at the first letter keeps SELECT, INSERT, UPDATE … off the word scan
  switch (upper(sql.charCodeAt(i))) {
    case 83: // S
    case 73: // I
    case 85: // U
    case 66: // B
    case 75: // K
      return false
  }
  const [first, second] = leadingWords(sql, 2)
  if (first === undefined || !IMPLICIT_COMMIT.has(first)) return false
  return !((first === "CREATE" || first === "DROP") && second === "TEMPORARY")
}


/**
 * Whether a statement changes session state that would outlive it and leak
 * to the next borrower of the connection: `SET` (but not `SET LOCAL`,
 * `SET TRANSACTION` or `SET CONSTRAINTS`, which end with the transaction),
 * `RESET`, `CREATE TEMP[ORARY]`, `LISTEN`, `PREPARE` (not `PREPARE TRANSACTION`), `DECLARE … WITH HOLD`,
 * `LOAD` (PostgreSQL's, not MySQL's `LOAD DATA`) and MySQL's `USE`. It looks at the first words only, so a change made
 * inside a function (`set_config(…, false)`) is not seen.
 *
 * @since 0.1.0
 */
export const changesSessionState = (sql: string): boolean => {
  let i = 0
  while (i < sql.length && isSpace(sql.charCodeAt(i))) i++
  // a look at the first letters keeps this off the path of SELECT, INSERT, UPDATE, DELETE, BEGIN, COMMIT …
  const c0 = upper(sql.charCodeAt(i))
  const c1 = upper(sql.charCodeAt(i + 1))
  switch (c0) {
    case 83: // SET, not SELECT
      if (c1 !== 69 || upper(sql.charCodeAt(i + 2)) !== 84 || isIdentChar(sql.charCodeAt(i + 3))) return false
      break
    case 82: // RESET
    case 80: // PREPARE
    case 67: // CREATE
      if (c1 !== (c0 === 82 ? 69 : 82)) return false
      break
    case 76: // LISTEN, LOAD
      if (c1 !== 73 && c1 !== 79) return false
      break
    case 68: // DECLARE, not DELETE or DROP
      if (c1 !== 69 || upper(sql.charCodeAt(i + 2)) !== 67) return false
      break
    case 85: // USE, not UPDATE
      if (c1 !== 83) return false
      break
    case 47: // a comment first: read the words properly
    case 45:
    case 35:
      break
    default:
      return false
  }
  const [first, second, third] = leadingWords(sql, 3)
  switch (first) {
    case "SET":
      return second !== "LOCAL" && second !== "TRANSACTION" && second !== "CONSTRAINTS" &&
        !(second === "SESSION" && third === "CHARACTERISTICS")
    case "PREPARE":
      // PREPARE TRANSACTION hands the transaction to the server and leaves the session as it was
      return second !== "TRANSACTION"
    case "LOAD":
      // PostgreSQL's LOAD 'library' stays loaded; MySQL's LOAD DATA and LOAD XML only insert rows
      return second !== "DATA" && second !== "XML"
    case "RESET":
    case "LISTEN":
    case "USE":
      return true
    case "CREATE":
      return second === "TEMP" || second === "TEMPORARY" || (second === "GLOBAL" || second === "LOCAL") && third !== undefined && third.startsWith("TEMP")
    case "DECLARE":
      return /\bWITH\s+HOLD\b/i.test(sql)
    default:
      return false
  }
}

/**
 * The first parameter that no engine can bind the same way: `undefined`
 * (PostgreSQL would send NULL, MySQL refuses it), a function or a symbol.
 * `null` is NULL. Returns what is wrong, naming the 1-based position, or
 * `undefined` when every value is bindable. One rule for every engine, as
 * postgres.js has it.
 *
 * @since 0.2.0
 */
export const unbindableParameter = (params: ReadonlyArray<unknown>): string | undefined => {
  for (let i = 0; i < params.length; i++) {
    const type = typeof params[i]
    if (type === "undefined") return `parameter ${i + 1} is undefined (use null for SQL NULL)`
    if (type === "function" || type === "symbol") return `parameter ${i + 1} is a ${type}, which no engine can bind`
  }
  return undefined
}

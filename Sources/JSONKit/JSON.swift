/// The one JSON value of the host and the plugins, without Foundation: what gateway APIs and the
/// Graph API speak, and what `tracking:{token}` holds in Redis.
///
/// Numbers keep their literal text so money and int64 ids never go through floating point: read
/// them with `int64`, or `centsFromReais` for decimal amounts. Objects serialize with sorted keys,
/// so the same value always gives the same bytes.
public enum JSON: Sendable, Hashable {
    case null
    case bool(Bool)
    /// The number's literal text, already validated as JSON.
    case number(String)
    case string(String)
    case array([JSON])
    case object([String: JSON])

    /// An integer number.
    public static func int(_ v: Int64) -> JSON { .number(String(v)) }

    /// A decimal number of reais from centavos (`1990` → `19.90`), exact.
    public static func reais(cents: Int64) -> JSON { .number(Decimal2.text(cents)) }

    public subscript(key: String) -> JSON? {
        if case .object(let o) = self { return o[key] }
        return nil
    }

    public subscript(index: Int) -> JSON? {
        if case .array(let a) = self, a.indices.contains(index) { return a[index] }
        return nil
    }

    /// The string, or `nil` for any other kind.
    public var string: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    /// A string, or a number's text (gateways send ids either way).
    public var text: String? {
        switch self {
        case .string(let s): s
        case .number(let n): n
        default: nil
        }
    }

    /// An integer number, or a string holding one (`"1990"`); `nil` for fractions and others.
    public var int64: Int64? {
        switch self {
        case .number(let n), .string(let n): Int64(n)
        default: nil
        }
    }

    /// A decimal amount of reais (number or numeric string) in centavos, exact; `nil` when it is
    /// not a plain decimal with at most 2 significant decimals.
    public var centsFromReais: Int64? {
        switch self {
        case .number(let n), .string(let n): Decimal2.cents(n)
        default: nil
        }
    }

    public var bool: Bool? {
        if case .bool(let b) = self { return b }
        return nil
    }

    public var object: [String: JSON]? {
        if case .object(let o) = self { return o }
        return nil
    }

    public var array: [JSON]? {
        if case .array(let a) = self { return a }
        return nil
    }

    /// Compact UTF-8 serialization (sorted keys).
    public var bytes: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(256)
        write(to: &out, scriptSafe: false)
        return out
    }

    public var serialized: String { String(decoding: bytes, as: UTF8.self) }

    /// `serialized`, also escaping `<`, `>`, `&`, U+2028 and U+2029 (as `\u003c`…), so the text can
    /// sit inside an HTML `<script>` block without ending it.
    public var scriptSafeSerialized: String {
        var out: [UInt8] = []
        out.reserveCapacity(256)
        write(to: &out, scriptSafe: true)
        return String(decoding: out, as: UTF8.self)
    }

    private func write(to out: inout [UInt8], scriptSafe: Bool) {
        switch self {
        case .null: out.append(contentsOf: "null".utf8)
        case .bool(let b): out.append(contentsOf: (b ? "true" : "false").utf8)
        case .number(let n): out.append(contentsOf: n.utf8)
        case .string(let s): Self.writeString(s, to: &out, scriptSafe: scriptSafe)
        case .array(let a):
            out.append(UInt8(ascii: "["))
            for (i, v) in a.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                v.write(to: &out, scriptSafe: scriptSafe)
            }
            out.append(UInt8(ascii: "]"))
        case .object(let o):
            out.append(UInt8(ascii: "{"))
            // By UTF-8 bytes: Swift's String order compares canonically ("e\u{301}" and "é@" are
            // neither < nor > each other), which is not a total order on the bytes we write.
            // The pairs themselves are sorted: no second hash lookup per key.
            for (i, pair) in o.sorted(by: { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }).enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                Self.writeString(pair.key, to: &out, scriptSafe: scriptSafe)
                out.append(UInt8(ascii: ":"))
                pair.value.write(to: &out, scriptSafe: scriptSafe)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    private static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)

    /// True when none of the eight bytes in `w` may need an escape: no control, `"` or `\`
    /// (and, script-safe, no `<`, `>`, `&` or 0xE2, the first byte of U+2028/U+2029). Exact, by
    /// the usual bit tricks: `hasLess` sees a byte below `n` (n ≤ 128), `has` a byte equal to `c`.
    @inline(__always)
    static func cleanWord(_ w: UInt64, scriptSafe: Bool) -> Bool {
        let ones: UInt64 = 0x0101_0101_0101_0101, highs: UInt64 = 0x8080_8080_8080_8080
        @inline(__always) func hasLess(_ n: UInt64) -> Bool { (w &- ones &* n) & ~w & highs != 0 }
        @inline(__always) func has(_ c: UInt8) -> Bool {
            let v = w ^ (ones &* UInt64(c))
            return (v &- ones) & ~v & highs != 0
        }
        if hasLess(0x20) || has(UInt8(ascii: "\"")) || has(UInt8(ascii: "\\")) { return false }
        return !scriptSafe || !(has(UInt8(ascii: "<")) || has(UInt8(ascii: ">")) || has(UInt8(ascii: "&")) || has(0xE2))
    }

    /// `s` as a JSON string. Works on the UTF-8 bytes: runs that need no escape are copied in
    /// one piece (most strings are one run). A Swift string is valid UTF-8, so the bytes to
    /// escape are exactly the scalars to escape: controls, `"` and `\\`; with `scriptSafe`
    /// also `<`, `>`, `&` and U+2028/U+2029 (E2 80 A8/A9), which end a `<script>` or a line.
    static func writeString(_ s: String, to out: inout [UInt8], scriptSafe: Bool) {
        out.append(UInt8(ascii: "\""))
        var s = s
        s.withUTF8 { bytes in
            let n = bytes.count
            var run = 0
            var i = 0
            let base = bytes.baseAddress
            while i < n {
                // Eight bytes at a time while none of them needs a look (most text is clean).
                if i + 8 <= n, let base, Self.cleanWord(UnsafeRawPointer(base + i).loadUnaligned(as: UInt64.self), scriptSafe: scriptSafe) {
                    i += 8
                    continue
                }
                let b = bytes[i]
                var scalar = UInt32(b)
                var width = 1
                if b >= 0x20 && b != UInt8(ascii: "\"") && b != UInt8(ascii: "\\") {
                    guard scriptSafe else { i += 1; continue }
                    if b == 0xE2, i + 2 < n, bytes[i + 1] == 0x80, bytes[i + 2] == 0xA8 || bytes[i + 2] == 0xA9 {
                        scalar = bytes[i + 2] == 0xA8 ? 0x2028 : 0x2029
                        width = 3
                    } else if b != UInt8(ascii: "<") && b != UInt8(ascii: ">") && b != UInt8(ascii: "&") {
                        i += 1
                        continue
                    }
                }
                out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[run..<i]))
                out.append(UInt8(ascii: "\\"))
                switch b {
                case UInt8(ascii: "\""): out.append(UInt8(ascii: "\""))
                case UInt8(ascii: "\\"): out.append(UInt8(ascii: "\\"))
                case UInt8(ascii: "\n"): out.append(UInt8(ascii: "n"))
                case UInt8(ascii: "\r"): out.append(UInt8(ascii: "r"))
                case UInt8(ascii: "\t"): out.append(UInt8(ascii: "t"))
                default:
                    let v = Int(scalar)
                    out.append(UInt8(ascii: "u"))
                    out.append(hexDigits[(v >> 12) & 0xF]); out.append(hexDigits[(v >> 8) & 0xF])
                    out.append(hexDigits[(v >> 4) & 0xF]); out.append(hexDigits[v & 0xF])
                }
                i += width
                run = i
            }
            out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[run..<n]))
        }
        out.append(UInt8(ascii: "\""))
    }
}

extension JSON: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral {
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int64) { self = .int(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
}

import Glibc

/// One statement parameter, sent in PostgreSQL's text format. `nil` in a parameter list is SQL
/// `NULL`.
///
/// `.text` is sent with an unspecified type, so the server infers it from context: the same
/// value can feed a `text`, `timestamptz`, `uuid`, `jsonb` or `numeric` column. The other cases
/// carry their type (`int8`, `bool`, `float8`, `bytea`) so `SELECT $1` returns what you passed.
public enum PGValue: Sendable, Hashable {
    /// Text; must not contain a NUL byte. Type inferred by the server.
    case text(String)
    /// Sent as `int8`.
    case int(Int64)
    /// Sent as `bool`.
    case bool(Bool)
    /// Sent as `float8` (NaN and infinities included).
    case double(Double)
    /// Sent as bytea hex text (`\x…`).
    case bytes([UInt8])

    /// The type OID sent with the parameter (0: let the server infer it).
    var typeOID: UInt32 {
        switch self {
        case .text: 0
        case .int: 20      // int8
        case .bool: 16     // bool
        case .double: 701  // float8
        case .bytes: 17    // bytea
        }
    }

    /// The text-format encoding, or nil when the value cannot be sent (a NUL byte in text:
    /// PostgreSQL text cannot hold one and libpq would silently cut the string there).
    var textEncoding: String? {
        switch self {
        case .text(let s): s.containsNUL ? nil : s
        case .int(let i): String(i)
        case .bool(let b): b ? "t" : "f"
        case .double(let d):
            d.isNaN ? "NaN" : d == .infinity ? "Infinity" : d == -.infinity ? "-Infinity" : String(d)
        case .bytes(let b): PGValue.hexBytea(b)
        }
    }

    static func hexBytea(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8](repeating: 0, count: 2 + bytes.count * 2)
        out[0] = UInt8(ascii: "\\")
        out[1] = UInt8(ascii: "x")
        for (i, b) in bytes.enumerated() {
            out[2 + 2 * i] = digits[Int(b >> 4)]
            out[3 + 2 * i] = digits[Int(b & 0xF)]
        }
        return String(decoding: out, as: UTF8.self)
    }
}

extension PGValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByFloatLiteral {
    public init(stringLiteral value: String) { self = .text(value) }
    public init(integerLiteral value: Int64) { self = .int(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
}

extension PGValue {
    /// Convenience for `Int` values.
    public static func int(_ value: Int) -> PGValue { .int(Int64(value)) }
}

extension String {
    /// True when the text holds a NUL byte (PostgreSQL text cannot): one `memchr` over the UTF-8
    /// bytes, not a walk through a generic sequence (batch INSERT texts run to many kilobytes).
    var containsNUL: Bool {
        var text = self  // withUTF8 copies only a string that is not already contiguous UTF-8
        return text.withUTF8 { bytes in
            guard let base = bytes.baseAddress, !bytes.isEmpty else { return false }
            return memchr(base, 0, bytes.count) != nil
        }
    }
}

/// A strict RFC 8259 parser: one value, UTF-8 only, no comments, trailing commas, `NaN`, BOM or
/// duplicate keys; lone surrogates in `\u` escapes are rejected; nesting is limited.
///
/// Errors name the zero-based byte offset: `invalid JSON at byte 17: expected ',' or '}'`.
/// The caller bounds the input size.
struct JSONParser {
    /// Arrays and objects nested deeper than this are rejected (the parser recurses).
    static let maxDepth = 64

    private let bytes: [UInt8]
    private var pos = 0

    private init(_ bytes: [UInt8]) { self.bytes = bytes }

    /// Parses exactly one JSON value, surrounded by optional whitespace.
    static func parse(_ bytes: [UInt8]) throws -> JSONValue {
        var parser = JSONParser(bytes)
        let value = try parser.value(depth: 0)
        parser.skipWhitespace()
        guard parser.pos == bytes.count else { throw parser.error("unexpected data after the JSON value") }
        return value
    }

    private func error(_ what: String, at offset: Int? = nil) -> ProtoCodecError {
        ProtoCodecError("invalid JSON at byte \(offset ?? pos): \(what)")
    }

    private mutating func skipWhitespace() {
        while pos < bytes.count, bytes[pos] == 0x20 || bytes[pos] == 0x0a || bytes[pos] == 0x0d || bytes[pos] == 0x09 {
            pos += 1
        }
    }

    private mutating func value(depth: Int) throws -> JSONValue {
        skipWhitespace()
        guard pos < bytes.count else { throw error("unexpected end of input, expected a value") }
        switch bytes[pos] {
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            guard depth < Self.maxDepth else {
                throw error("nesting deeper than \(Self.maxDepth) levels")
            }
            return bytes[pos] == UInt8(ascii: "{") ? try object(depth: depth + 1) : try array(depth: depth + 1)
        case UInt8(ascii: "\""): return .string(String(decoding: try string(), as: UTF8.self))
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            guard let end = Self.numberEnd(bytes, from: pos) else { throw error("invalid number") }
            let text = String(decoding: bytes[pos..<end], as: UTF8.self)
            pos = end
            return .number(text)
        default:
            throw error("unexpected \(describe(bytes[pos])), expected a value")
        }
    }

    private mutating func object(depth: Int) throws -> JSONValue {
        pos += 1  // "{"
        var members: [JSONMember] = []
        var keys: Set<[UInt8]> = []
        skipWhitespace()
        if pos < bytes.count, bytes[pos] == UInt8(ascii: "}") { pos += 1; return .object([]) }
        while true {
            skipWhitespace()
            guard pos < bytes.count, bytes[pos] == UInt8(ascii: "\"") else {
                throw error(members.isEmpty ? "expected a string key or '}'" : "expected a string key")
            }
            let keyStart = pos
            let key = try string()
            guard keys.insert(key).inserted else {
                throw error("duplicate key \(JSONWriter.quoted(String(decoding: key, as: UTF8.self)))", at: keyStart)
            }
            skipWhitespace()
            guard pos < bytes.count, bytes[pos] == UInt8(ascii: ":") else { throw error("expected ':'") }
            pos += 1
            members.append(JSONMember(String(decoding: key, as: UTF8.self), try value(depth: depth)))
            skipWhitespace()
            guard pos < bytes.count else { throw error("expected ',' or '}'") }
            pos += 1
            switch bytes[pos - 1] {
            case UInt8(ascii: ","): continue
            case UInt8(ascii: "}"): return .object(members)
            default: pos -= 1; throw error("expected ',' or '}'")
            }
        }
    }

    private mutating func array(depth: Int) throws -> JSONValue {
        pos += 1  // "["
        var items: [JSONValue] = []
        skipWhitespace()
        if pos < bytes.count, bytes[pos] == UInt8(ascii: "]") { pos += 1; return .array([]) }
        while true {
            items.append(try value(depth: depth))
            skipWhitespace()
            guard pos < bytes.count else { throw error("expected ',' or ']'") }
            pos += 1
            switch bytes[pos - 1] {
            case UInt8(ascii: ","): continue
            case UInt8(ascii: "]"): return .array(items)
            default: pos -= 1; throw error("expected ',' or ']'")
            }
        }
    }

    private mutating func literal(_ word: String) throws {
        let w = Array(word.utf8)
        guard bytes.count - pos >= w.count, bytes[pos..<pos + w.count].elementsEqual(w) else {
            throw error("invalid literal, expected \(word)")
        }
        pos += w.count
    }

    /// The string starting at the opening quote, as validated UTF-8 with escapes resolved.
    private mutating func string() throws -> [UInt8] {
        pos += 1  // opening quote
        var out: [UInt8] = []
        while true {
            guard pos < bytes.count else { throw error("unterminated string") }
            let b = bytes[pos]
            switch b {
            case UInt8(ascii: "\""):
                pos += 1
                return out
            case UInt8(ascii: "\\"):
                try escape(into: &out)
            case 0..<0x20:
                throw error("unescaped control character (\(describe(b))) in a string")
            case 0x20..<0x80:
                out.append(b)
                pos += 1
            default:
                let length = try utf8SequenceLength()
                out.append(contentsOf: bytes[pos..<pos + length])
                pos += length
            }
        }
    }

    private mutating func escape(into out: inout [UInt8]) throws {
        let start = pos
        guard pos + 1 < bytes.count else { throw error("unterminated string") }
        pos += 2
        let simple: UInt8?
        switch bytes[pos - 1] {
        case UInt8(ascii: "\""): simple = 0x22
        case UInt8(ascii: "\\"): simple = 0x5c
        case UInt8(ascii: "/"): simple = 0x2f
        case UInt8(ascii: "b"): simple = 0x08
        case UInt8(ascii: "f"): simple = 0x0c
        case UInt8(ascii: "n"): simple = 0x0a
        case UInt8(ascii: "r"): simple = 0x0d
        case UInt8(ascii: "t"): simple = 0x09
        case UInt8(ascii: "u"): simple = nil
        default: throw error("invalid escape sequence", at: start)
        }
        if let simple { out.append(simple); return }
        var scalar = try hex4(at: start)
        if (0xdc00...0xdfff).contains(scalar) { throw error("unpaired surrogate in \\u escape", at: start) }
        if (0xd800...0xdbff).contains(scalar) {
            guard pos + 1 < bytes.count, bytes[pos] == UInt8(ascii: "\\"), bytes[pos + 1] == UInt8(ascii: "u") else {
                throw error("unpaired surrogate in \\u escape", at: start)
            }
            pos += 2
            let low = try hex4(at: pos - 2)
            guard (0xdc00...0xdfff).contains(low) else { throw error("unpaired surrogate in \\u escape", at: start) }
            scalar = 0x10000 + ((scalar - 0xd800) << 10) + (low - 0xdc00)
        }
        out.append(contentsOf: Array(String(Unicode.Scalar(scalar)!).utf8))
    }

    private mutating func hex4(at escapeStart: Int) throws -> UInt32 {
        guard bytes.count - pos >= 4 else { throw error("invalid \\u escape", at: escapeStart) }
        var v: UInt32 = 0
        for b in bytes[pos..<pos + 4] {
            guard let digit = Self.hexDigit(b) else { throw error("invalid \\u escape", at: escapeStart) }
            v = v << 4 | digit
        }
        pos += 4
        return v
    }

    private static func hexDigit(_ b: UInt8) -> UInt32? {
        switch b {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): UInt32(b - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): UInt32(b - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): UInt32(b - UInt8(ascii: "A") + 10)
        default: nil
        }
    }

    /// Length of the well-formed UTF-8 sequence at `pos` (RFC 3629 table 3-7: no overlong
    /// forms, no surrogates, nothing above U+10FFFF), or an error at its first byte.
    private func utf8SequenceLength() throws -> Int {
        let lead = bytes[pos]
        let (length, second): (Int, ClosedRange<UInt8>)
        switch lead {
        case 0xc2...0xdf: (length, second) = (2, 0x80...0xbf)
        case 0xe0: (length, second) = (3, 0xa0...0xbf)
        case 0xe1...0xec, 0xee...0xef: (length, second) = (3, 0x80...0xbf)
        case 0xed: (length, second) = (3, 0x80...0x9f)
        case 0xf0: (length, second) = (4, 0x90...0xbf)
        case 0xf1...0xf3: (length, second) = (4, 0x80...0xbf)
        case 0xf4: (length, second) = (4, 0x80...0x8f)
        default: throw error("invalid UTF-8")
        }
        guard bytes.count - pos >= length, second.contains(bytes[pos + 1]),
              (2..<length).allSatisfy({ (0x80...0xbf).contains(bytes[pos + $0]) }) else {
            throw error("invalid UTF-8")
        }
        return length
    }

    private func describe(_ b: UInt8) -> String {
        (0x21..<0x7f).contains(b) ? "'\(Character(Unicode.Scalar(b)))'" : "byte 0x\(b < 0x10 ? "0" : "")\(String(b, radix: 16))"
    }

    /// Where the RFC 8259 number starting at `start` ends, `nil` if there is none:
    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    static func numberEnd(_ bytes: [UInt8], from start: Int) -> Int? {
        var i = start
        func digits() -> Int {
            let first = i
            while i < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[i]) { i += 1 }
            return i - first
        }
        if i < bytes.count, bytes[i] == UInt8(ascii: "-") { i += 1 }
        guard i < bytes.count else { return nil }
        if bytes[i] == UInt8(ascii: "0") {
            i += 1
        } else {
            guard digits() > 0 else { return nil }
        }
        if i < bytes.count, bytes[i] == UInt8(ascii: ".") {
            i += 1
            guard digits() > 0 else { return nil }
        }
        if i < bytes.count, bytes[i] == UInt8(ascii: "e") || bytes[i] == UInt8(ascii: "E") {
            i += 1
            if i < bytes.count, bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-") { i += 1 }
            guard digits() > 0 else { return nil }
        }
        return i
    }
}

/// A parsed JSON value, as `JSONParser` produces and `JSONWriter` renders it.
///
/// Numbers keep their literal text (already checked against the RFC 8259 grammar), so that the
/// field they land in decides how to read them: an int64 never goes through `Double`.
enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    /// The number's literal text, e.g. `"-12"`, `"1.5e3"`.
    case number(String)
    case string(String)
    case array([JSONValue])
    /// Members in source order; the parser has already rejected duplicate keys.
    case object([JSONMember])
}

/// One `"key": value` pair of a JSON object.
struct JSONMember: Sendable, Equatable {
    let key: String
    let value: JSONValue

    init(_ key: String, _ value: JSONValue) {
        self.key = key
        self.value = value
    }
}

extension JSONValue {
    /// A short rendering for error messages: scalars as written (long strings cut), containers
    /// by kind, so a message never echoes a whole document back.
    var summary: String {
        switch self {
        case .null: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .number(let text): return text.count > 40 ? String(text.prefix(40)) + "…" : text
        case .string(let s):
            let shown = s.count > 40 ? String(s.prefix(40)) + "…" : s
            return JSONWriter.quoted(shown)
        case .array: return "an array"
        case .object: return "an object"
        }
    }
}

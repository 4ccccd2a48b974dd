import JSONKit

/// `json`: JSONKit's strict parser (`JSON.parse`), the one JSON of the host and the plugins.
///
/// Input: the document. Invariants for what parses: its serialization parses to the same value
/// and serializes to the same bytes; the script-safe form holds no `<`, `>`, `&`, U+2028 or
/// U+2029 and parses to the same value; the value nests no deeper than it may; amounts read
/// as cents come back from their decimal text. For what does not parse: the error's offset is
/// inside the input.
let jsonTarget = FuzzTarget(name: "json", summary: "JSONKit JSON.parse; serialize/re-parse round trips", maxLength: 4096) {
    { bytes in
        let text = Array(bytes)
        let value: JSON
        do throws(JSON.ParseError) { value = try JSON.parse(text) } catch {
            require(error.offset >= 0 && error.offset <= text.count, "error offset \(error.offset) outside \(text.count) bytes")
            return
        }
        let serialized = value.bytes
        let again = parses(serialized, "its serialization")
        require(again == value, "serialize/parse changed the value: \(value.serialized.prefix(300))")
        require(again.bytes == serialized, "serialization is not stable: \(value.serialized.prefix(300))")

        let scriptSafe = value.scriptSafeSerialized
        require(!scriptSafe.unicodeScalars.contains { "<>&\u{2028}\u{2029}".unicodeScalars.contains($0) },
                "script-safe output holds a character that can end a <script>: \(scriptSafe.prefix(300))")
        require(parses(Array(scriptSafe.utf8), "its script-safe serialization") == value, "script-safe form parses to another value")

        require(depth(value) <= 65, "a value nested \(depth(value)) deep passed the 64-level limit")
        checkAmounts(value)
    }
}

private func parses(_ bytes: [UInt8], _ what: String) -> JSON {
    do { return try JSON.parse(bytes) } catch {
        require(false, "\(what) does not parse: \(error): \(String(decoding: bytes.prefix(300), as: UTF8.self))")
        return .null
    }
}

/// Levels of containers, the value itself being one.
private func depth(_ v: JSON) -> Int {
    switch v {
    case .array(let a): 1 + (a.map(depth).max() ?? 0)
    case .object(let o): 1 + (o.values.map(depth).max() ?? 0)
    default: 1
    }
}

/// Every number or string read as reais survives cents → text → cents.
private func checkAmounts(_ v: JSON) {
    switch v {
    case .number, .string:
        if let cents = v.centsFromReais {
            require(Decimal2.cents(Decimal2.text(cents)) == cents, "\(cents) cents do not survive Decimal2.text (\(Decimal2.text(cents)))")
        }
    case .array(let a): a.forEach(checkAmounts)
    case .object(let o): o.values.forEach(checkAmounts)
    case .null, .bool: break
    }
}

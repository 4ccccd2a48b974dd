/// `application/x-www-form-urlencoded` fields (query strings, beacon bodies) and `Cookie`
/// headers, parsed without Foundation. The first occurrence of a name wins; values are raw
/// bytes so each caller decides how strict to be about UTF-8.
struct FormFields {
    /// Cookie values by name.
    private var values: [String: [UInt8]] = [:]
    /// A query: the text, and where each field's name and value (nil: no `=`) are in its bytes.
    /// Nothing is decoded until a caller asks for a name: a click's query has a few fields and
    /// the route asks for a dozen names, most of them absent.
    private var query = ""
    private var fields: [(name: Range<Int>, value: Range<Int>?)] = []

    /// One pass over the bytes: fields split at `&` (empty ones skipped), name and value at the
    /// first `=`.
    init(query: String?) {
        self.init(text: query ?? "", from: 0)
    }

    /// The query of a request target (what follows its first `?`), read in place: the target is
    /// kept as it is, with no copy of its query made.
    init(target: String) {
        var t = target
        let mark = t.withUTF8 { $0.firstIndex(of: UInt8(ascii: "?")) }
        self.init(text: target, from: mark.map { $0 + 1 } ?? t.utf8.count)
    }

    private init(text: String, from first: Int) {
        var query = text
        guard query.utf8.count > first else { return }
        var found: [(name: Range<Int>, value: Range<Int>?)] = []
        found.reserveCapacity(8)
        query.withUTF8 { b in
            var start = first
            while start < b.count {
                var end = start
                while end < b.count && b[end] != UInt8(ascii: "&") { end += 1 }
                if end > start {
                    var eq = start
                    while eq < end && b[eq] != UInt8(ascii: "=") { eq += 1 }
                    found.append((start..<eq, eq < end ? (eq + 1)..<end : nil))
                }
                start = end + 1
            }
        }
        self.query = query
        fields = found
    }

    /// Calls `body` with the decoded bytes of the first field called `name`; nil when absent.
    /// A value without escapes is passed straight from the query's bytes, with no copy.
    private func value<R>(_ name: String, _ body: (UnsafeBufferPointer<UInt8>) -> R) -> R? {
        guard !fields.isEmpty else { return values[name].map { $0.withUnsafeBufferPointer(body) } }
        var q = query
        var n = name
        return q.withUTF8 { b in
            n.withUTF8 { want -> R? in
                for f in fields where Self.decodedEquals(UnsafeBufferPointer(rebasing: b[f.name]), want) {
                    guard let range = f.value else { return body(UnsafeBufferPointer(start: nil, count: 0)) }
                    let encoded = UnsafeBufferPointer(rebasing: b[range])
                    if !Self.hasEscapes(encoded) { return body(encoded) }
                    return Self.decode(encoded).withUnsafeBufferPointer(body)
                }
                return nil
            }
        }
    }

    private static func hasEscapes(_ b: UnsafeBufferPointer<UInt8>) -> Bool {
        b.contains { $0 == UInt8(ascii: "%") || $0 == UInt8(ascii: "+") }
    }

    /// Whether `encoded`, percent-decoded, is `want` (decoded only when it holds an escape).
    private static func decodedEquals(_ encoded: UnsafeBufferPointer<UInt8>, _ want: UnsafeBufferPointer<UInt8>) -> Bool {
        if !hasEscapes(encoded) { return encoded.elementsEqual(want) }
        return decode(encoded).elementsEqual(want)
    }

    init(cookieHeaders: [String]) {
        for header in cookieHeaders {
            for item in header.split(separator: ";") {
                let parts = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                guard parts.count == 2 else { continue }
                let name = String(parts[0].drop { $0 == " " })
                var value = Substring(parts[1])
                if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") { value = value.dropFirst().dropLast() }
                if values[name] == nil { values[name] = Array(value.utf8) }
            }
        }
    }

    /// The value as valid UTF-8, nil when absent or not UTF-8.
    func strict(_ name: String) -> String? {
        value(name) { String(validating: $0, as: UTF8.self) } ?? nil
    }

    /// The value with invalid UTF-8 replaced (U+FFFD), "" when absent.
    func lossy(_ name: String) -> String {
        value(name) { String(decoding: $0, as: UTF8.self) } ?? ""
    }

    func has(_ name: String) -> Bool { value(name) { _ in true } ?? false }

    /// Percent-decoding with `+` as space; a malformed escape is kept literally.
    static func decode(_ u: UnsafeBufferPointer<UInt8>) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(u.count)
        var i = 0
        while i < u.count {
            let b = u[i]
            if b == UInt8(ascii: "+") {
                out.append(0x20)
            } else if b == UInt8(ascii: "%"), i + 2 < u.count, let hi = hex(u[i + 1]), let lo = hex(u[i + 2]) {
                out.append(hi << 4 | lo)
                i += 2
            } else {
                out.append(b)
            }
            i += 1
        }
        return out
    }

    private static func hex(_ b: UInt8) -> UInt8? {
        switch b {
        case 0x30...0x39: b - 0x30
        case 0x61...0x66: b - 0x61 + 10
        case 0x41...0x46: b - 0x41 + 10
        default: nil
        }
    }
}

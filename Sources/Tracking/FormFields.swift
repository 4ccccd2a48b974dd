/// `application/x-www-form-urlencoded` fields (query strings, beacon bodies) and `Cookie`
/// headers, parsed without Foundation. The first occurrence of a name wins; values are raw
/// bytes so each caller decides how strict to be about UTF-8.
struct FormFields {
    private var values: [String: [UInt8]] = [:]

    init(query: String?) {
        guard let query else { return }
        for pair in query.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = String(decoding: Self.decode(parts[0]), as: UTF8.self)
            if values[name] == nil { values[name] = parts.count > 1 ? Self.decode(parts[1]) : [] }
        }
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
        values[name].flatMap { String(validating: $0, as: UTF8.self) }
    }

    /// The value with invalid UTF-8 replaced (U+FFFD), "" when absent.
    func lossy(_ name: String) -> String {
        values[name].map { String(decoding: $0, as: UTF8.self) } ?? ""
    }

    func has(_ name: String) -> Bool { values[name] != nil }

    /// Percent-decoding with `+` as space; a malformed escape is kept literally.
    static func decode(_ s: Substring) -> [UInt8] {
        var out: [UInt8] = []
        let u = Array(s.utf8)
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

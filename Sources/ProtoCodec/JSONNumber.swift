/// Exact conversions between JSON number text and protobuf's numeric types.
///
/// Integers are computed from the decimal digits (never through `Double`), so every int64 and
/// uint64 is exact, and `1.0`, `1e2` or `1.5e1` are integers while `1.5` or `1e-1` are not.
enum JSONNumber {
    /// The outcome of reading a JSON number literal as an integer.
    enum Integer: Equatable {
        case value(negative: Bool, magnitude: UInt64)
        /// A well-formed number with a fractional part.
        case fraction
        /// An integer whose magnitude does not fit in 64 bits.
        case tooLarge
        /// Not an RFC 8259 number (e.g. `+1`, `01`, `1.`, ` 1`, `abc`).
        case malformed
    }

    /// Reads `text` as an integer. With `plain`, only `-?digits` is accepted (map keys).
    static func integer(_ text: String, plain: Bool = false) -> Integer {
        let b = Array(text.utf8)
        guard JSONParser.numberEnd(b, from: 0) == b.count else { return .malformed }
        let negative = b.first == UInt8(ascii: "-")
        var i = negative ? 1 : 0
        var digits: [UInt8] = []
        var exponent = 0
        func isDigit(_ i: Int) -> Bool { i < b.count && (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(b[i]) }
        while isDigit(i) { digits.append(b[i] - UInt8(ascii: "0")); i += 1 }
        if i < b.count, b[i] == UInt8(ascii: ".") {
            i += 1
            while isDigit(i) { digits.append(b[i] - UInt8(ascii: "0")); exponent -= 1; i += 1 }
        }
        if i < b.count {  // "e" or "E"
            i += 1
            let negativeExponent = b[i] == UInt8(ascii: "-")
            if b[i] == UInt8(ascii: "-") || b[i] == UInt8(ascii: "+") { i += 1 }
            var e = 0
            // Saturates: any exponent this large already decides the outcome.
            while isDigit(i) { e = min(e * 10 + Int(b[i] - UInt8(ascii: "0")), 1_000_000); i += 1 }
            exponent += negativeExponent ? -e : e
        }
        if plain && (exponent != 0 || b.count != digits.count + (negative ? 1 : 0)) { return .malformed }
        guard let firstNonZero = digits.firstIndex(where: { $0 != 0 }) else {
            return .value(negative: negative, magnitude: 0)
        }
        digits.removeFirst(firstNonZero)
        while digits.last == 0 { digits.removeLast(); exponent += 1 }
        guard exponent >= 0 else { return .fraction }
        guard digits.count + exponent <= 20 else { return .tooLarge }
        var magnitude: UInt64 = 0
        for d in digits + repeatElement(0, count: exponent) {
            let (times10, o1) = magnitude.multipliedReportingOverflow(by: 10)
            let (sum, o2) = times10.addingReportingOverflow(UInt64(d))
            guard !o1, !o2 else { return .tooLarge }
            magnitude = sum
        }
        return .value(negative: negative, magnitude: magnitude)
    }

    /// `v` as a signed integer within `min...max`, `nil` if outside.
    static func signed(_ v: Integer, min: Int64, max: Int64) -> Int64? {
        guard case .value(let negative, let m) = v else { return nil }
        if negative {
            guard m <= Int64.min.magnitude else { return nil }
            let value = m == Int64.min.magnitude ? Int64.min : -Int64(m)
            return value >= min ? value : nil
        }
        guard m <= UInt64(max) else { return nil }
        return Int64(m)
    }

    /// `v` as an unsigned integer up to `max` (`-0` is zero), `nil` if outside.
    static func unsigned(_ v: Integer, max: UInt64) -> UInt64? {
        guard case .value(let negative, let m) = v, m <= max, !(negative && m != 0) else { return nil }
        return m
    }

    /// A JSON number (or, from a JSON string, also `"NaN"`, `"Infinity"`, `"-Infinity"`) as a
    /// `Float` or `Double`, rounded once from the decimal text; `nil` when malformed or beyond
    /// the type's range.
    static func floatingPoint<F: BinaryFloatingPoint & LosslessStringConvertible>(_ text: String, isString: Bool) -> F? {
        if isString {
            switch text {
            case "NaN": return .nan
            case "Infinity": return .infinity
            case "-Infinity": return -.infinity
            default: break
            }
        }
        let b = Array(text.utf8)
        guard JSONParser.numberEnd(b, from: 0) == b.count, let v = F(text), v.isFinite else { return nil }
        return v
    }

    /// Shortest text that reads back as the same value: integral values without a fraction
    /// (`3`, `-0`), others as Swift's shortest round-trip form (`1.5`, `1e-07`); non-finite
    /// values as the strings protobuf's JSON mapping uses.
    static func json<F: BinaryFloatingPoint & LosslessStringConvertible>(_ v: F) -> JSONValue {
        if v.isNaN { return .string("NaN") }
        if v.isInfinite { return .string(v < 0 ? "-Infinity" : "Infinity") }
        if v == 0 { return .number(v.sign == .minus ? "-0" : "0") }
        if v == v.rounded(.towardZero), v.magnitude < 1e17 { return .number(String(Int64(v))) }
        return .number(v.description)
    }
}

/// Exact conversions between integer centavos and decimal text ("19.90"): money never goes
/// through floating point.
public enum Decimal2 {
    /// `1990` → `"19.90"`, `-5` → `"-0.05"`.
    public static func text(_ cents: Int64) -> String {
        let negative = cents < 0
        let m = cents.magnitude
        let frac = m % 100
        return (negative ? "-" : "") + "\(m / 100)." + (frac < 10 ? "0\(frac)" : "\(frac)")
    }

    /// Parses a decimal number of reais (`"19.9"`, `"19.90"`, `"19"`, `"1e1"` is refused) into
    /// centavos. `nil` when not a plain decimal or when it has more than 2 significant decimals.
    public static func cents(_ text: String) -> Int64? {
        var s = Substring(text)
        while s.first == " " { s = s.dropFirst() }
        while s.last == " " { s = s.dropLast() }
        var negative = false
        if s.first == "-" { negative = true; s = s.dropFirst() } else if s.first == "+" { s = s.dropFirst() }
        let parts = s.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count <= 2, let whole = parts.first, !whole.isEmpty, whole.count <= 15,
              whole.allSatisfy(isDigit), let w = Int64(whole) else { return nil }
        var frac: Int64 = 0
        if parts.count == 2 {
            var f = parts[1]
            guard f.allSatisfy(isDigit), !f.isEmpty else { return nil }
            while f.count > 2, f.last == "0" { f = f.dropLast() }
            guard f.count <= 2 else { return nil }
            frac = Int64(f)! * (f.count == 1 ? 10 : 1)
        }
        let v = w * 100 + frac
        return negative ? -v : v
    }

    private static func isDigit(_ c: Character) -> Bool { c.isASCII && c.isNumber }
}

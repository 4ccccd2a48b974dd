import RPC

/// Meta's browser identifiers (DESIGN §3): `_fbp` = `fb.1.{creation ms}.{random ≤ 2^31-1}`,
/// `_fbc` = `fb.1.{creation ms}.{fbclid}`, and the fbclid itself (case-sensitive, ≤ 255 chars).
public enum FacebookCookies {
    /// The longest fbclid stored; longer ones are refused rather than cut (a cut fbclid is a
    /// wrong one).
    public static let maxFbclidLength = 255

    /// A fresh fbp created now.
    static func newFbp(nowMs: Int64) -> String {
        var rng = SecureRandom()
        return "fb.1.\(nowMs).\(Int64.random(in: 0...Int64(Int32.max), using: &rng))"
    }

    /// The fbc Meta documents building from an fbclid (opt-in: DESIGN §3).
    static func fbc(fromFbclid fbclid: String, nowMs: Int64) -> String { "fb.1.\(nowMs).\(fbclid)" }

    /// `fb.{digit}.{digits}.{digits}`, at most 64 characters.
    public static func isValidFbp(_ s: String) -> Bool {
        guard s.utf8.count >= 7 else { return false }  // most clicks have none: no split for ""
        let parts = s.split(separator: ".", omittingEmptySubsequences: false)
        return s.utf8.count <= 64 && parts.count == 4 && parts[0] == "fb" && parts[1].count == 1
            && [parts[1], parts[2], parts[3]].allSatisfy { !$0.isEmpty && $0.utf8.count <= 20 && $0.utf8.allSatisfy(isDigit) }
    }

    /// `fb.{digit}.{digits}.{fbclid}` with a valid fbclid.
    public static func isValidFbc(_ s: String) -> Bool {
        guard s.utf8.count >= 7 else { return false }
        let parts = s.split(separator: ".", maxSplits: 3, omittingEmptySubsequences: false)
        return parts.count == 4 && parts[0] == "fb" && parts[1].count == 1 && parts[1].utf8.allSatisfy(isDigit)
            && !parts[2].isEmpty && parts[2].utf8.count <= 20 && parts[2].utf8.allSatisfy(isDigit)
            && isValidFbclid(String(parts[3]))
    }

    /// 1…255 printable ASCII characters without spaces (real ones are `[A-Za-z0-9_-]`).
    public static func isValidFbclid(_ s: String) -> Bool {
        (1...maxFbclidLength).contains(s.utf8.count) && s.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F }
    }

    private static func isDigit(_ b: UInt8) -> Bool { b >= 0x30 && b <= 0x39 }
}

/// Tells crawlers (link previews, search bots) from people by user agent: case-insensitive
/// substrings from DESIGN §3. The Facebook in-app browser (`FBAN`/`FBAV`/`FB_IAB`) is a person.
public enum CrawlerDetector {
    public static let markers = [
        "facebookexternalhit", "facebookcatalog", "meta-externalagent", "meta-externalfetcher", "facebot",
        "twitterbot", "linkedinbot", "slackbot", "discordbot", "telegrambot", "whatsapp", "googlebot", "bingbot",
    ]

    public static func isCrawler(userAgent: String) -> Bool {
        guard userAgent.utf8.count >= shortest else { return false }
        // One pass over the bytes, on every click: ASCII case is folded as each byte is read, and
        // only a byte some marker starts with is compared further (no String search, which once
        // cost more than the rest of the click put together, and no lowercased copy).
        var ua = userAgent
        let (table, starts, shortest) = (startsWith, markerStart, shortest)
        return ua.withUTF8 { hay in
            markerBytes.withUnsafeBufferPointer { flat in
                let n = hay.count
                for i in 0...(n - shortest) {
                    var set = table[Int(folded(hay[i]))]
                    while set != 0 {
                        let m = set.trailingZeroBitCount
                        set &= set - 1
                        let (offset, count) = (Int(starts[m]), Int(starts[m + 1] - starts[m]))
                        guard i + count <= n else { continue }
                        var j = 1
                        while j < count && folded(hay[i + j]) == flat[offset + j] { j += 1 }
                        if j == count { return true }
                    }
                }
                return false
            }
        }
    }

    /// The markers' bytes end to end; marker `m` is `markerBytes[markerStart[m]..<markerStart[m + 1]]`.
    private static let markerBytes = markers.flatMap { Array($0.utf8) }
    private static let markerStart: [Int32] = markers.reduce(into: [0]) { $0.append($0.last! + Int32($1.utf8.count)) }
    private static let shortest = markers.map(\.utf8.count).min()!
    /// For each byte, the markers (as bits) that start with it.
    private static let startsWith: [UInt16] = {
        precondition(markers.count <= 16, "one bit per marker")
        var t = [UInt16](repeating: 0, count: 256)
        for (m, marker) in markers.enumerated() { t[Int(marker.utf8.first!)] |= 1 << m }
        return t
    }()

    /// ASCII letters lowercased (the markers are lowercase); every other byte as it is.
    @inline(__always)
    private static func folded(_ b: UInt8) -> UInt8 { b >= 0x41 && b <= 0x5A ? b | 0x20 : b }
}

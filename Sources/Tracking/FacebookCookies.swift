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
        guard !userAgent.isEmpty else { return false }
        // Bytes, ASCII case folded as they are compared: on every click, so no String search (which
        // costs more than the rest of the click's CPU put together) and no lowercased copy.
        var ua = userAgent
        return ua.withUTF8 { hay in markerBytes.contains { Self.find($0, in: hay) } }
    }

    private static let markerBytes = markers.map { Array($0.utf8) }

    /// ASCII letters lowercased (the markers are lowercase); every other byte as it is.
    @inline(__always)
    private static func folded(_ b: UInt8) -> UInt8 { b >= 0x41 && b <= 0x5A ? b | 0x20 : b }

    private static func find(_ needle: [UInt8], in hay: UnsafeBufferPointer<UInt8>) -> Bool {
        guard let first = needle.first, needle.count <= hay.count else { return false }
        var i = 0
        let last = hay.count - needle.count
        while i <= last {
            if folded(hay[i]) == first {
                var j = 1
                while j < needle.count && folded(hay[i + j]) == needle[j] { j += 1 }
                if j == needle.count { return true }
            }
            i += 1
        }
        return false
    }
}

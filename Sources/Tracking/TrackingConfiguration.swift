import Glibc

/// Settings of the tracking half (pixtrackd reads them from `PIXTRACK_*` variables).
public struct TrackingConfiguration: Sendable {
    /// TTL of the tracking keys in Redis (default 7 days).
    public var ttlSeconds = 7 * 86_400
    /// Peers whose `X-Forwarded-For` is believed.
    public var trustedProxies = TrustedProxies()
    /// Opt-in: build `fbc` = `fb.1.{ms}.{fbclid}` when the visitor has no `_fbc` cookie.
    public var buildFbcFromFbclid = false
    /// `https://example.com`: the public origin of `/go/…`, for `event_source_url` (else taken
    /// from the request: `X-Forwarded-Proto`/`Host` behind a trusted proxy, `Host` otherwise).
    public var publicBaseURL = ""
    /// Where visitors go: `https://t.me` (tests use a local stand-in).
    public var telegramBaseURL = "https://t.me"
    /// The Meta pixel script the landing page loads.
    public var pixelScriptURL = "https://connect.facebook.net/en_US/fbevents.js"
    /// Page mode: the most the page waits for the pixel before going to Telegram anyway.
    public var pageRedirectTimeoutMs = 2_500
    /// How long a resolved slug is reused without asking PostgreSQL (changes made through this
    /// instance apply at once; through another instance, after at most this long).
    public var slugCacheTTL: Duration = .seconds(2)
    /// Longer user agents are cut (UTF-8 safe) to this many bytes.
    public var maxUserAgentBytes = 2048

    public init() {}
}

enum Clock {
    /// Wall-clock Unix milliseconds.
    static func nowMs() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }
}

extension String {
    /// At most `maxBytes` of UTF-8, cut on a character boundary.
    func truncatedUTF8(_ maxBytes: Int) -> String {
        guard utf8.count > maxBytes else { return self }
        var out = ""
        var n = 0
        for ch in self {
            let len = ch.utf8.count
            if n + len > maxBytes { break }
            out.append(ch)
            n += len
        }
        return out
    }

    /// True when the text holds a C0 control, DEL or a C1 control (U+0080–U+009F, UTF-8 C2 80–C2 9F):
    /// one pass over the bytes, since most clicks' fields have none.
    var hasControlCharacters: Bool {
        var text = self
        return text.withUTF8 { b in
            var i = 0
            while i < b.count {
                let c = b[i]
                if c < 0x20 || c == 0x7F { return true }
                if c == 0xC2, i + 1 < b.count, b[i + 1] >= 0x80, b[i + 1] <= 0x9F { return true }
                i += 1
            }
            return false
        }
    }

    /// Without control characters (C0, DEL, C1): for free-text fields that end up in headers,
    /// logs and JSON.
    func withoutControlCharacters() -> String {
        guard hasControlCharacters else { return self }
        return String(String.UnicodeScalarView(unicodeScalars.filter { !($0.value < 0x20 || (0x7F...0x9F).contains($0.value)) }))
    }
}

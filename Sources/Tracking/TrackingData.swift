import JSONKit

/// Where an fbc came from (DESIGN §1): only a cookie counts by default; building one from the
/// fbclid is opt-in, and a cookie value is never replaced by a built one.
public enum FbcOrigin: String, Sendable {
    case none = ""
    case cookie
    case builtFromFbclid = "built_from_fbclid"

    var protoNumber: Int32 {
        switch self {
        case .none: 0
        case .cookie: 1
        case .builtFromFbclid: 2
        }
    }
}

/// The contents of `tracking:{token}` in Redis: everything the Meta events need about a click.
public struct TrackingData: Sendable, Equatable {
    public var token = ""
    public var pageviewEventID = ""
    public var pageviewTsMs: Int64 = 0
    public var fbp = ""
    public var fbc = ""
    public var fbcOrigin = FbcOrigin.none
    public var fbclid = ""
    public var utmSource = "", utmMedium = "", utmCampaign = "", utmContent = "", utmTerm = ""
    public var grim = ""
    public var clientIP = ""
    public var userAgent = ""
    public var eventSourceURL = ""
    public var slug = ""
    public var botID: Int64 = 0
    public var metaPixelID = ""

    public init() {}

    /// The JSON stored in Redis (keys as in `pixtrack.v1.TrackingData`).
    public var json: JSON {
        var o: [String: JSON] = [
            "token": .string(token), "pageview_event_id": .string(pageviewEventID),
            "pageview_ts_unix_ms": .int(pageviewTsMs), "bot_id": .int(botID),
        ]
        let strings: [(String, String)] = [
            ("fbp", fbp), ("fbc", fbc), ("fbc_origin", fbcOrigin.rawValue), ("fbclid", fbclid),
            ("utm_source", utmSource), ("utm_medium", utmMedium), ("utm_campaign", utmCampaign),
            ("utm_content", utmContent), ("utm_term", utmTerm), ("grim", grim), ("client_ip", clientIP),
            ("user_agent", userAgent), ("event_source_url", eventSourceURL), ("slug", slug), ("meta_pixel_id", metaPixelID),
        ]
        for (k, v) in strings where !v.isEmpty { o[k] = .string(v) }
        return .object(o)
    }

    /// `json.bytes`, written directly (the value every click stores in Redis).
    public var jsonBytes: [UInt8] {
        var w = JSONObjectWriter(capacity: 384 + userAgent.utf8.count + eventSourceURL.utf8.count)
        w.int("bot_id", botID)
        w.nonEmpty("client_ip", clientIP)
        w.nonEmpty("event_source_url", eventSourceURL)
        w.nonEmpty("fbc", fbc)
        w.nonEmpty("fbc_origin", fbcOrigin.rawValue)
        w.nonEmpty("fbclid", fbclid)
        w.nonEmpty("fbp", fbp)
        w.nonEmpty("grim", grim)
        w.nonEmpty("meta_pixel_id", metaPixelID)
        w.string("pageview_event_id", pageviewEventID)
        w.int("pageview_ts_unix_ms", pageviewTsMs)
        w.nonEmpty("slug", slug)
        w.string("token", token)
        w.nonEmpty("user_agent", userAgent)
        w.nonEmpty("utm_campaign", utmCampaign)
        w.nonEmpty("utm_content", utmContent)
        w.nonEmpty("utm_medium", utmMedium)
        w.nonEmpty("utm_source", utmSource)
        w.nonEmpty("utm_term", utmTerm)
        return w.finish()
    }

    /// Reads a stored payload defensively: missing or oddly typed keys stay empty (another
    /// writer, or an older version, may have stored less). Nil when it is not a JSON object.
    public init?(json bytes: [UInt8]) {
        guard let value = try? JSON.parse(bytes), let o = value.object else { return nil }
        func s(_ k: String) -> String {
            switch o[k] {
            case .string(let v)?: return v
            case .number(let n)?: return Int64(n).map(String.init) ?? ""
            default: return ""
            }
        }
        // An integer, also when another writer stored it as an integral decimal (`7.0`).
        func int(_ k: String) -> Int64? {
            guard let v = o[k] else { return nil }
            if let i = v.int64 { return i }
            guard case .number(let n) = v, let d = Double(n), d.rounded() == d, abs(d) < 9e15 else { return nil }
            return Int64(d)
        }
        token = s("token")
        pageviewEventID = s("pageview_event_id")
        pageviewTsMs = int("pageview_ts_unix_ms") ?? int("pageview_ts") ?? 0
        fbp = s("fbp")
        fbc = s("fbc")
        // Older payloads carry no origin: the original system only ever took fbc from the cookie.
        let origin = s("fbc_origin")
        fbcOrigin = fbc.isEmpty ? .none : origin.isEmpty ? .cookie : FbcOrigin(rawValue: origin) ?? .cookie
        fbclid = s("fbclid")
        utmSource = s("utm_source"); utmMedium = s("utm_medium"); utmCampaign = s("utm_campaign")
        utmContent = s("utm_content"); utmTerm = s("utm_term")
        grim = s("grim")
        clientIP = s("client_ip")
        userAgent = s("user_agent")
        eventSourceURL = s("event_source_url")
        slug = s("slug")
        botID = int("bot_id") ?? 0
        metaPixelID = s("meta_pixel_id")
    }

    /// The browser's cookies posted back by the landing page (DESIGN §1 merge rules): an
    /// empty or malformed value never overwrites anything; a browser `_fbp` replaces ours (the
    /// browser pixel uses the browser's); a cookie fbc replaces a built one or an older cookie.
    /// - Returns: whether anything changed.
    @discardableResult
    public mutating func mergeBrowserCookies(fbp newFbp: String, fbc newFbc: String) -> Bool {
        var changed = false
        if FacebookCookies.isValidFbp(newFbp), newFbp != fbp {
            fbp = newFbp
            changed = true
        }
        if FacebookCookies.isValidFbc(newFbc), newFbc != fbc || fbcOrigin != .cookie {
            fbc = newFbc
            fbcOrigin = .cookie
            changed = true
        }
        return changed
    }
}

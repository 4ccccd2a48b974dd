import RPC

/// Input rules for the admin RPCs. Messages name the field, never echo a secret.
enum TrackingValidation {
    static func bot(_ b: BotInput) throws {
        guard b.id > 0 else { throw invalid("id must be the Telegram bot id (a positive integer)") }
        guard isUsername(b.telegramUsername) else {
            throw invalid("telegram_username must be 3-64 letters, digits or underscores, starting with a letter")
        }
        guard b.metaPixelID.isEmpty || (b.metaPixelID.utf8.count <= 32 && b.metaPixelID.utf8.allSatisfy(isDigit)) else {
            throw invalid("meta_pixel_id must be digits (up to 32)")
        }
        if let token = b.conversionsAPIToken {
            guard token.utf8.count <= 1024, token.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
                throw invalid("conversions_api_token must be printable ASCII without spaces, up to 1024 characters")
            }
        }
        guard b.metaTestEventCode.utf8.count <= 64, b.metaTestEventCode.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            throw invalid("meta_test_event_code must be printable ASCII without spaces, up to 64 characters")
        }
        guard b.gatewayPlugin.utf8.count <= 64, b.gatewayPlugin.utf8.allSatisfy({ isLowerAlnum($0) || $0 == 0x2D || $0 == 0x5F }) else {
            throw invalid("gateway.plugin must be lowercase letters, digits, '-' or '_'")
        }
        let url = b.gatewayBaseURL
        guard url.isEmpty || ((url.hasPrefix("https://") || url.hasPrefix("http://")) && url.utf8.count <= 512
                              && url.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F })) else {
            throw invalid("gateway.base_url must be an http(s) URL without spaces")
        }
        guard b.notifyURL.isEmpty || isNotifyURL(b.notifyURL) else {
            throw invalid("notify_url must be an https URL (http only to a loopback address), without spaces, up to 2048 characters")
        }
        if let secret = b.notifySecret, !secret.isEmpty {
            guard (32...256).contains(secret.utf8.count), secret.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
                throw invalid("notify_secret must be 32-256 printable ASCII characters without spaces")
            }
        }
        if let creds = b.gatewayCredentials {
            guard creds.count <= 32, creds.allSatisfy({ !$0.key.isEmpty && $0.key.utf8.count <= 64 && $0.value.utf8.count <= 4096 }) else {
                throw invalid("gateway.credentials: at most 32 entries, keys 1-64 and values up to 4096 bytes")
            }
        }
    }

    /// https anywhere; http only to 127.0.0.0/8, [::1] or localhost (a receiver on the same machine).
    static func isNotifyURL(_ url: String) -> Bool {
        guard url.utf8.count <= 2048, url.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else { return false }
        let lower = url.lowercased()
        if lower.hasPrefix("https://") { return lower.count > "https://".count }
        guard lower.hasPrefix("http://") else { return false }
        let authority = lower.dropFirst("http://".count).prefix { $0 != "/" && $0 != "?" && $0 != "#" }
        guard !authority.contains("@") else { return false }
        let host: Substring
        if authority.hasPrefix("[") {
            host = authority.prefix { $0 != "]" }.dropFirst()
        } else {
            host = authority.prefix { $0 != ":" }
        }
        if host == "localhost" || host == "::1" { return true }
        let octets = host.split(separator: ".", omittingEmptySubsequences: false)
        return octets.count == 4 && octets[0] == "127" && octets.allSatisfy { UInt8($0) != nil }
    }

    static func slug(_ s: Slug) throws {
        guard Slug.isValidName(s.slug) else {
            throw invalid("slug must be 1-64 lowercase letters, digits, '-' or '_', starting with a letter or digit")
        }
        guard s.bots.count <= 100 else { throw invalid("a slug has at most 100 bots") }
        var seen = Set<Int64>()
        for b in s.bots {
            guard b.botID > 0 else { throw invalid("slug bots need a positive bot_id") }
            guard seen.insert(b.botID).inserted else { throw invalid("bot \(b.botID) appears twice in the slug") }
            guard (0...1_000_000).contains(b.weight) else { throw invalid("weight must be 0-1000000 (0 means 1)") }
        }
    }

    static func isUsername(_ s: String) -> Bool {
        let u = Array(s.utf8)
        return (3...64).contains(u.count) && isLetter(u[0]) && u.allSatisfy { isLetter($0) || isDigit($0) || $0 == 0x5F }
    }

    static func invalid(_ message: String) -> RPCError { RPCError(.invalidArgument, message) }
    static func isDigit(_ b: UInt8) -> Bool { b >= 0x30 && b <= 0x39 }
    static func isLetter(_ b: UInt8) -> Bool { (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) }
    static func isLowerAlnum(_ b: UInt8) -> Bool { (b >= 0x61 && b <= 0x7A) || isDigit(b) }
}

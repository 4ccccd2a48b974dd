import JSONKit
import MetaCAPI
import Redis

/// The tracking keys in Redis (DESIGN §1). Redis is an accelerator: callers decide what a
/// failure means (a click still redirects, recovery falls back to PostgreSQL).
public struct TrackingStore: Sendable {
    public let redis: RedisClient
    /// TTL of every key written here (default 7 days).
    public let ttlSeconds: Int

    public init(redis: RedisClient, ttlSeconds: Int = 7 * 86_400) {
        self.redis = redis
        self.ttlSeconds = max(1, ttlSeconds)
    }

    public static func dataKey(_ token: String) -> String { "tracking:\(token)" }
    public static func fbclidKey(_ fbclid: String) -> String { "tracking:fbclid:\(fbclid)" }
    public static func lastTokenKey(bot: Int64, user: Int64) -> String { "tracking:last_token:user:\(bot):\(user)" }
    public static func chatKey(bot: Int64, user: Int64) -> String { "tracking:chat:\(bot):\(user)" }

    /// Writes `tracking:{token}` and, when there is an fbclid, `tracking:fbclid:{fbclid}`, in one
    /// pipelined round trip.
    public func storePageView(_ data: TrackingData) async throws {
        try await startStorePageView(data).done()
    }

    /// `storePageView`, sent at once and awaited later with `done()`: a click writes Redis
    /// while it waits for its PostgreSQL commit, in the same task.
    public func startStorePageView(_ data: TrackingData) -> RedisPendingSet {
        // Keys written straight into the command bytes from their two pieces (no key `String` or
        // array), the same keys as `dataKey` and `fbclidKey`.
        redis.startSet(ttlSeconds: ttlSeconds) { batch in
            batch.set(key: "tracking:", data.token, value: data.jsonBytes)
            if !data.fbclid.isEmpty { batch.set(key: "tracking:fbclid:", data.fbclid, value: data.token) }
        }
    }

    /// The payload of `token`, nil when absent (expired or never recorded) or unreadable.
    public func data(for token: String) async throws -> TrackingData? {
        guard let bytes = try await redis.get(Self.dataKey(token)) else { return nil }
        return TrackingData(json: bytes)
    }

    /// Whether `tracking:{token}` exists.
    public func exists(_ token: String) async throws -> Bool {
        try await redis.command(["EXISTS", Self.dataKey(token)]).integer == 1
    }

    /// Applies the browser-cookie merge rules to `tracking:{token}`, keeping its TTL.
    /// - Returns: the merged data, nil when the token has no data.
    public func mergeBrowserCookies(token: String, fbp: String, fbc: String) async throws -> TrackingData? {
        guard var data = try await data(for: token) else { return nil }
        if data.mergeBrowserCookies(fbp: fbp, fbc: fbc) {
            let reply = try await redis.command([Array("SET".utf8), Array(Self.dataKey(token).utf8), data.jsonBytes,
                                                 Array("KEEPTTL".utf8), Array("XX".utf8)])
            if reply.isNull { return nil }  // expired between the GET and the SET
        }
        return data
    }

    /// Writes the last-token and chat keys of a binding in one round trip.
    public func storeBinding(bot: Int64, user: Int64, token: String, chatID: Int64, pixelID: String, nowMs: Int64) async throws {
        var chat: [String: JSON] = [
            "token": .string(token), "bot_id": .int(bot), "telegram_user_id": .int(user), "bound_at_unix_ms": .int(nowMs),
        ]
        if chatID != 0 { chat["chat_id"] = .int(chatID) }
        if !pixelID.isEmpty { chat["pixel_id"] = .string(pixelID) }
        try await redis.set([(Self.lastTokenKey(bot: bot, user: user), Array(token.utf8)),
                             (Self.chatKey(bot: bot, user: user), JSON.object(chat).bytes)], ttlSeconds: ttlSeconds)
    }

    /// `tracking:last_token:…` and `tracking:chat:…` in one round trip, each reduced to a valid
    /// token or nil (values are parsed defensively: plain token, or JSON with the token inside).
    public func bindingKeys(bot: Int64, user: Int64) async throws -> (lastToken: String?, chat: String?) {
        let replies = try await redis.pipeline([["GET", Self.lastTokenKey(bot: bot, user: user)],
                                                ["GET", Self.chatKey(bot: bot, user: user)]])
        for r in replies { if let m = r.errorMessage { throw RedisError.server(m) } }
        return (Self.token(in: replies.first?.bytes), Self.token(in: replies.count > 1 ? replies[1].bytes : nil))
    }

    /// The token `tracking:fbclid:{fbclid}` points at, if valid.
    public func token(forFbclid fbclid: String) async throws -> String? {
        guard FacebookCookies.isValidFbclid(fbclid) else { return nil }
        return Self.token(in: try await redis.get(Self.fbclidKey(fbclid)))
    }

    static func token(in bytes: [UInt8]?) -> String? {
        guard let bytes, !bytes.isEmpty else { return nil }
        let text = String(decoding: bytes, as: UTF8.self)
        if TrackingToken.isValid(text) { return text }
        if let o = (try? JSON.parse(bytes))?.object {
            for key in ["token", "tracking_token", "tracking_session_id", "session_id"] {
                if let t = o[key]?.string, TrackingToken.isValid(t) { return t }
            }
        }
        if case .string(let t)? = try? JSON.parse(bytes), TrackingToken.isValid(t) { return t }
        return nil
    }
}

import Postgres
import RPC

/// Which recovery step found a token (`pixtrack.v1.TokenSource`).
public enum TokenSource: Int32, Sendable {
    case botUser = 1, fbclidIndex = 2, lastToken = 3, chat = 4, none = 5
}

public struct ResolvedToken: Sendable, Equatable {
    public var token: String
    public var source: TokenSource
    /// Nil when the data expired or Redis is unavailable.
    public var data: TrackingData?
}

/// ResolveToken (DESIGN §1): recovers, never creates, the token of a Telegram user of a bot:
/// `bot_users.tracking_session_id` → a legacy `tracking_…` value resolved through
/// `tracking:fbclid:{bot user's fbclid}` → `tracking:last_token:user:…` → `tracking:chat:…` →
/// none. Redis down: what PostgreSQL has still answers. PostgreSQL down: the Redis steps
/// still answer, and UNAVAILABLE only when they find nothing. Payments call it in-process.
public struct TokenResolver: Sendable {
    let pool: PGPool
    let store: TrackingStore
    let metrics: Metrics
    let logger: Logger

    public init(pool: PGPool, store: TrackingStore, metrics: Metrics, logger: Logger) {
        self.pool = pool
        self.store = store
        self.metrics = metrics
        self.logger = logger
    }

    /// - Throws: `.invalidArgument` for non-positive ids, `.notFound` for an unknown bot,
    ///   `.unavailable` when PostgreSQL is down and Redis has nothing either.
    public func resolve(botID: Int64, telegramUserID: Int64) async throws -> ResolvedToken {
        guard botID > 0 else { throw RPCError(.invalidArgument, "bot_id must be positive") }
        guard telegramUserID > 0 else { throw RPCError(.invalidArgument, "telegram_user_id must be positive") }
        var databaseError: RPCError?
        do {
            let rows = try await pool.withConnection { c in
                try c.query("""
                    SELECT b.id, u.tracking_session_id, u.fbclid
                    FROM bots b LEFT JOIN bot_users u ON u.bot_id = b.id AND u.telegram_user_id = $2
                    WHERE b.id = $1
                    """, [.int(botID), .int(telegramUserID)])
            }
            guard let row = rows.first else { throw RPCError(.notFound, "unknown bot_id \(botID)") }
            let session = try row.string("tracking_session_id") ?? ""
            if TrackingToken.isValid(session) {
                return ResolvedToken(token: session, source: .botUser, data: await data(session))
            }
            if session.hasPrefix(TrackingToken.legacyPrefix), let fbclid = try row.string("fbclid"), !fbclid.isEmpty {
                if let token = await redis("resolve_token", { try await store.token(forFbclid: fbclid) }) ?? nil {
                    return ResolvedToken(token: token, source: .fbclidIndex, data: await data(token))
                }
            }
        } catch let e as PGError {
            databaseError = e.rpcError
            logger.warning("resolve_token_postgres_failed", ("error", e.description))
        }
        if let keys = await redis("resolve_token", { try await store.bindingKeys(bot: botID, user: telegramUserID) }) {
            if let token = keys.lastToken { return ResolvedToken(token: token, source: .lastToken, data: await data(token)) }
            if let token = keys.chat { return ResolvedToken(token: token, source: .chat, data: await data(token)) }
        }
        if let databaseError { throw databaseError }
        return ResolvedToken(token: "", source: .none, data: nil)
    }

    private func data(_ token: String) async -> TrackingData? {
        await redis("resolve_token", { try await store.data(for: token) }) ?? nil
    }

    private func redis<T: Sendable>(_ operation: String, _ body: () async throws -> T) async -> T? {
        do { return try await body() } catch {
            metrics.increment("pixtrack_tracking_redis_failures_total", help: "Redis operations of the tracking half that failed (the request went on).",
                              labels: [("operation", operation)])
            logger.warning("tracking_redis_failed", ("operation", operation), ("error", String(describing: error)))
            return nil
        }
    }
}

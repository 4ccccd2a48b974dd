import Postgres
import RPC

/// The bot's `/start` as `BindStart` receives it.
public struct StartInput: Sendable {
    public var botID: Int64
    public var telegramUserID: Int64
    public var startParam: String
    public var chatID: Int64 = 0
    public var chatType = ""
    public var telegramUsername = "", firstName = "", lastName = "", languageCode = ""

    public init(botID: Int64, telegramUserID: Int64, startParam: String) {
        self.botID = botID
        self.telegramUserID = telegramUserID
        self.startParam = startParam
    }
}

public enum BindOutcome: Int32, Sendable {
    case bound = 1, notAToken = 2, boundWithoutData = 3, keptPrevious = 4
}

public struct BindResult: Sendable, Equatable {
    public var outcome: BindOutcome
    public var token = ""
    public var pixelID = ""
    public var previousToken = ""
}

/// BindStart (DESIGN §1): binds a `/start` token to the bot user. The last click wins; a
/// parameter that is not a token is recorded and binds nothing; a well-formed token without
/// tracking data does not replace a binding whose data is still alive (an old link shared
/// again must not erase a live attribution). PostgreSQL is the record; the Redis last-token and
/// chat keys follow and may fail without failing the call.
public struct StartBinder: Sendable {
    let pool: PGPool
    let store: TrackingStore
    let metrics: Metrics
    let logger: Logger

    public func bind(_ input: StartInput) async throws -> BindResult {
        guard input.botID > 0 else { throw RPCError(.invalidArgument, "bot_id must be positive") }
        guard input.telegramUserID > 0 else { throw RPCError(.invalidArgument, "telegram_user_id must be positive") }
        let recorded = input.startParam.withoutControlCharacters().truncatedUTF8(256)
        var result: BindResult
        var fbclid: String?
        var bind = false
        switch StartParameter(input.startParam) {
        case .other:
            result = BindResult(outcome: .notAToken)
        case .token(let token, let pixel):
            result = BindResult(outcome: .bound, token: token, pixelID: pixel ?? "")
            bind = true
            switch await redisLookup({ try await store.data(for: token) }) {
            case .some(.some(let data)):
                fbclid = data.fbclid.isEmpty ? nil : data.fbclid
            case .some(.none):
                result.outcome = .boundWithoutData
                if let previous = try await currentBinding(input), previous != token, TrackingToken.isValid(previous),
                   await redisLookup({ try await store.exists(previous) }) == true {
                    result = BindResult(outcome: .keptPrevious, token: previous, pixelID: "", previousToken: previous)
                    bind = false
                }
            case .none:
                break  // Redis unavailable: we cannot tell, so the click wins (logged by redisLookup)
            }
        }
        let previous = try await upsert(input, bind: bind, token: result.token, fbclid: fbclid, recorded: recorded)
        if result.outcome != .keptPrevious { result.previousToken = previous ?? "" }
        if bind {
            do {
                try await store.storeBinding(bot: input.botID, user: input.telegramUserID, token: result.token,
                                             chatID: input.chatID, pixelID: result.pixelID, nowMs: Clock.nowMs())
            } catch {
                redisFailed("bind_start", error)
            }
        }
        return result
    }

    /// The user's current `tracking_session_id`, if any.
    private func currentBinding(_ input: StartInput) async throws -> String? {
        return try await pool.withConnection { c in
            try c.query("SELECT tracking_session_id FROM bot_users WHERE bot_id = $1 AND telegram_user_id = $2",
                        [.int(input.botID), .int(input.telegramUserID)]).first?.string("tracking_session_id")
        }
    }

    /// One statement: create or update the bot user, returning the binding it had before.
    private func upsert(_ input: StartInput, bind: Bool, token: String, fbclid: String?, recorded: String) async throws -> String? {
        func opt(_ s: String, _ n: Int) -> PGValue? {
            let t = s.withoutControlCharacters().truncatedUTF8(n)
            return t.isEmpty ? nil : .text(t)
        }
        let params: [PGValue?] = [
            .int(input.botID), .int(input.telegramUserID), .bool(bind), bind ? .text(token) : nil, fbclid.map { .text($0) },
            .text(recorded), input.chatID == 0 ? nil : .int(input.chatID), opt(input.telegramUsername, 64),
            opt(input.firstName, 256), opt(input.lastName, 256), opt(input.languageCode, 16),
        ]
        do {
            return try await pool.withConnection { c in
                try c.query("""
                    WITH prev AS (SELECT tracking_session_id FROM bot_users WHERE bot_id = $1 AND telegram_user_id = $2)
                    INSERT INTO bot_users AS u (bot_id, telegram_user_id, tracking_session_id, fbclid, last_start_param, chat_id,
                                                telegram_username, first_name, last_name, language_code, bound_at)
                    VALUES ($1, $2, $4, $5, $6, $7, $8, $9, $10, $11, CASE WHEN $3 THEN now() END)
                    ON CONFLICT (bot_id, telegram_user_id) DO UPDATE SET
                        tracking_session_id = CASE WHEN $3 THEN EXCLUDED.tracking_session_id ELSE u.tracking_session_id END,
                        fbclid = CASE WHEN $3 THEN EXCLUDED.fbclid ELSE u.fbclid END,
                        bound_at = CASE WHEN $3 THEN now() ELSE u.bound_at END,
                        last_start_param = EXCLUDED.last_start_param,
                        chat_id = COALESCE(EXCLUDED.chat_id, u.chat_id),
                        telegram_username = COALESCE(EXCLUDED.telegram_username, u.telegram_username),
                        first_name = COALESCE(EXCLUDED.first_name, u.first_name),
                        last_name = COALESCE(EXCLUDED.last_name, u.last_name),
                        language_code = COALESCE(EXCLUDED.language_code, u.language_code),
                        last_seen = now()
                    RETURNING (SELECT tracking_session_id FROM prev) AS previous
                    """, params).first?.string("previous")
            }
        } catch let e as PGError where e.sqlState == "23503" {
            throw RPCError(.notFound, "unknown bot_id \(input.botID)", cause: e)
        } catch let e as PGError {
            throw e.rpcError
        }
    }

    /// A Redis read: nil when Redis failed (logged and counted), else the answer.
    private func redisLookup<T: Sendable>(_ body: () async throws -> T) async -> T? {
        do { return try await body() } catch {
            redisFailed("bind_start", error)
            return nil
        }
    }

    private func redisFailed(_ operation: String, _ error: any Error) {
        metrics.increment("pixtrack_tracking_redis_failures_total", help: "Redis operations of the tracking half that failed (the request went on).",
                          labels: [("operation", operation)])
        logger.warning("tracking_redis_failed", ("operation", operation), ("error", String(describing: error)))
    }
}

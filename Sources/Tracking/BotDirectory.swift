import JSONKit
import MetaCAPI
import Postgres
import RPC
import Secrets

/// Bots and slugs in PostgreSQL (parameterized SQL only). Secrets are written here, sealed
/// (`SecretKeyring`, docs/secrets.md), and read back only as "is set" flags (and the Conversions
/// API token by `BotAccessTokens`).
public struct BotDirectory: Sendable {
    let pool: PGPool
    /// nil: no key is configured, and secrets are refused (never stored in plaintext).
    let secrets: SecretKeyring?

    public init(pool: PGPool, secrets: SecretKeyring?) {
        self.pool = pool
        self.secrets = secrets
    }

    /// The envelope for a new secret value, nil for none (an empty value clears the column).
    func seal(_ value: String?, _ column: SecretColumn, botID: Int64) throws -> String? {
        guard let value, !value.isEmpty else { return nil }
        guard let secrets else {
            throw RPCError(.failedPrecondition, "this server has no secrets key (PIXTRACK_SECRETS_KEY_FILE): it stores no \(column.rawValue)")
        }
        do { return try secrets.seal(value, context: column.context(botID: botID)) } catch {
            throw RPCError(.internal, "internal error", cause: error)
        }
    }

    static let botColumns = """
        id, telegram_username, meta_pixel_id, capi_token IS NOT NULL AS has_token, meta_test_event_code,
        gateway_plugin, gateway_base_url, gateway_credentials IS NOT NULL AS has_credentials, enabled,
        notify_url, notify_secret IS NOT NULL AS has_notify_secret,
        (extract(epoch FROM created_at) * 1000)::bigint AS created_ms,
        (extract(epoch FROM updated_at) * 1000)::bigint AS updated_ms
        """

    /// Creates or replaces a bot (secrets: see `BotInput`).
    /// - Throws: `RPCError` `.invalidArgument` for bad fields, `.alreadyExists` when another bot
    ///   has the username; database failures mapped by `PGError.rpcError`.
    public func upsertBot(_ input: BotInput) async throws -> Bot {
        try TrackingValidation.bot(input)
        let credentials = try seal(input.gatewayCredentials.map { JSON.object($0.mapValues { JSON.string($0) }).serialized },
                                   .gatewayCredentials, botID: input.id)
        let capiToken = try seal(input.conversionsAPIToken, .capiToken, botID: input.id)
        let notifySecret = try seal(input.notifySecret, .notifySecret, botID: input.id)
        do {
            let rows = try await pool.transaction { c in
                let rows = try c.query("""
                    INSERT INTO bots AS b (id, telegram_username, meta_pixel_id, capi_token, meta_test_event_code,
                                           gateway_plugin, gateway_base_url, gateway_credentials, enabled, notify_url, notify_secret)
                    VALUES ($1, $2, $3, NULLIF($5, ''), $6, $7, $8, $10, $11, $12, NULLIF($14, ''))
                    ON CONFLICT (id) DO UPDATE SET
                        telegram_username = EXCLUDED.telegram_username, meta_pixel_id = EXCLUDED.meta_pixel_id,
                        capi_token = CASE WHEN $4 THEN NULLIF($5, '') ELSE b.capi_token END,
                        meta_test_event_code = EXCLUDED.meta_test_event_code, gateway_plugin = EXCLUDED.gateway_plugin,
                        gateway_base_url = EXCLUDED.gateway_base_url,
                        gateway_credentials = CASE WHEN $9 THEN $10 ELSE b.gateway_credentials END,
                        enabled = EXCLUDED.enabled, notify_url = EXCLUDED.notify_url,
                        notify_secret = CASE WHEN $13 THEN NULLIF($14, '') ELSE b.notify_secret END, updated_at = now()
                    RETURNING \(Self.botColumns)
                    """, [.int(input.id), .text(input.telegramUsername), .text(input.metaPixelID),
                          .bool(input.conversionsAPIToken != nil), .text(capiToken ?? ""),
                          .text(input.metaTestEventCode), .text(input.gatewayPlugin), .text(input.gatewayBaseURL),
                          .bool(input.gatewayCredentials != nil), credentials.map { .text($0) }, .bool(input.enabled),
                          .text(input.notifyURL), .bool(input.notifySecret != nil), .text(notifySecret ?? "")])
                // A URL without a key would send unsigned notifications: refuse (rolls back).
                if let r = rows.first, try !(r.string("notify_url") ?? "").isEmpty, try !(r.bool("has_notify_secret") ?? false) {
                    throw RPCError(.invalidArgument, "notify_url needs a notify_secret (none is stored for this bot)")
                }
                return rows
            }
            guard let row = rows.first else { throw RPCError(.internal, "internal error") }
            return try Self.bot(row)
        } catch let e as PGError where e.sqlState == "23505" {
            throw RPCError(.alreadyExists, "another bot already has the username '\(input.telegramUsername)'", cause: e)
        } catch let e as PGError {
            throw e.rpcError
        }
    }

    public func bot(id: Int64) async throws -> Bot? {
        try await oneBot("SELECT \(Self.botColumns) FROM bots WHERE id = $1", [.int(id)])
    }

    public func bot(username: String) async throws -> Bot? {
        try await oneBot("SELECT \(Self.botColumns) FROM bots WHERE lower(telegram_username) = lower($1)", [.text(username)])
    }

    private func oneBot(_ sql: String, _ params: [PGValue?]) async throws -> Bot? {
        let rows = try await pool.withConnection { try $0.query(sql, params) }
        return try rows.first.map(Self.bot)
    }

    /// Bots by id, `pageSize` at a time after id `after`; the second value is the last id
    /// returned when more may follow.
    public func listBots(includeDisabled: Bool, pageSize: Int, after: Int64) async throws -> ([Bot], Int64?) {
        let size = min(max(pageSize, 1), 1000)
        let rows = try await pool.withConnection { c in
            try c.query("SELECT \(Self.botColumns) FROM bots WHERE id > $1 AND (enabled OR $2) ORDER BY id LIMIT $3",
                        [.int(after), .bool(includeDisabled), .int(size + 1)])
        }
        let bots = try rows.prefix(size).map(Self.bot)
        return (bots, rows.count > size ? bots.last?.id : nil)
    }

    static func bot(_ r: PGRow) throws -> Bot {
        Bot(id: try r.int64("id") ?? 0, telegramUsername: try r.string("telegram_username") ?? "",
            metaPixelID: try r.string("meta_pixel_id") ?? "", hasConversionsAPIToken: try r.bool("has_token") ?? false,
            metaTestEventCode: try r.string("meta_test_event_code") ?? "", gatewayPlugin: try r.string("gateway_plugin") ?? "",
            gatewayBaseURL: try r.string("gateway_base_url") ?? "", hasGatewayCredentials: try r.bool("has_credentials") ?? false,
            enabled: try r.bool("enabled") ?? false, createdAtMs: try r.int64("created_ms") ?? 0, updatedAtMs: try r.int64("updated_ms") ?? 0,
            notifyURL: try r.string("notify_url") ?? "", hasNotifySecret: try r.bool("has_notify_secret") ?? false)
    }

    // MARK: - Slugs

    /// Creates or replaces a slug and its bot list, in one transaction.
    /// - Throws: `.invalidArgument` for a bad name or entry, `.failedPrecondition` for an
    ///   unknown bot id.
    public func upsertSlug(_ slug: Slug) async throws -> Slug {
        try TrackingValidation.slug(slug)
        do {
            try await pool.transaction { c in
                try c.execute("""
                    INSERT INTO slugs AS s (slug, mode, strategy, enabled) VALUES ($1, $2, $3, $4)
                    ON CONFLICT (slug) DO UPDATE SET mode = EXCLUDED.mode, strategy = EXCLUDED.strategy,
                        enabled = EXCLUDED.enabled, updated_at = now()
                    """, [.text(slug.slug), .text(slug.mode.rawValue), .text(slug.strategy.rawValue), .bool(slug.enabled)])
                try c.execute("DELETE FROM slug_bots WHERE slug = $1", [.text(slug.slug)])
                for (i, b) in slug.bots.enumerated() {
                    try c.execute("""
                        INSERT INTO slug_bots (slug, bot_id, position, weight, priority, enabled) VALUES ($1, $2, $3, $4, $5, $6)
                        """, [.text(slug.slug), .int(b.botID), .int(i), .int(max(1, b.weight)), .int(b.priority), .bool(b.enabled)])
                }
            }
        } catch let e as PGError where e.sqlState == "23503" {
            throw RPCError(.failedPrecondition, "slug '\(slug.slug)' names a bot id that does not exist", cause: e)
        } catch let e as PGError {
            throw e.rpcError
        }
        guard let stored = try await self.slug(slug.slug) else { throw RPCError(.internal, "internal error") }
        return stored
    }

    public func slug(_ name: String) async throws -> Slug? {
        let (head, entries) = try await pool.withConnection { c in
            (try c.query("""
                SELECT slug, mode, strategy, enabled, (extract(epoch FROM created_at) * 1000)::bigint AS created_ms,
                       (extract(epoch FROM updated_at) * 1000)::bigint AS updated_ms
                FROM slugs WHERE slug = $1
                """, [.text(name)]),
             try c.query("SELECT bot_id, weight, priority, enabled FROM slug_bots WHERE slug = $1 ORDER BY position", [.text(name)]))
        }
        guard let h = head.first else { return nil }
        var s = Slug(slug: try h.string("slug") ?? name, mode: SlugMode(rawValue: try h.string("mode") ?? "") ?? .redirect,
                     strategy: SlugStrategy(rawValue: try h.string("strategy") ?? "") ?? .roundRobin,
                     bots: try entries.map { r in
                         SlugBot(botID: try r.int64("bot_id") ?? 0, weight: try r.int("weight") ?? 1,
                                 priority: try r.int("priority") ?? 0, enabled: try r.bool("enabled") ?? false)
                     }, enabled: try h.bool("enabled") ?? false)
        s.createdAtMs = try h.int64("created_ms") ?? 0
        s.updatedAtMs = try h.int64("updated_ms") ?? 0
        return s
    }

    /// What a click on `name` may use: nil when the slug is unknown or disabled; the
    /// candidates are the enabled entries whose bot is enabled, in list order.
    /// - Throws: `PGError` (callers decide between a 503 page and UNAVAILABLE).
    public func route(_ name: String) async throws -> SlugRoute? {
        let rows = try await pool.withConnection { c in
            try c.query("""
                SELECT s.mode, s.strategy, b.id AS bot_id, b.telegram_username, b.meta_pixel_id,
                       b.capi_token IS NOT NULL AS has_token, b.meta_test_event_code, sb.weight, sb.priority
                FROM slugs s
                LEFT JOIN slug_bots sb ON sb.slug = s.slug AND sb.enabled
                LEFT JOIN bots b ON b.id = sb.bot_id AND b.enabled
                WHERE s.slug = $1 AND s.enabled
                ORDER BY sb.position
                """, [.text(name)])
        }
        guard let first = rows.first else { return nil }
        var route = SlugRoute(slug: name, mode: SlugMode(rawValue: try first.string("mode") ?? "") ?? .redirect,
                              strategy: SlugStrategy(rawValue: try first.string("strategy") ?? "") ?? .roundRobin, candidates: [])
        for r in rows {
            guard let id = try r.int64("bot_id") else { continue }
            route.candidates.append(RouteBot(
                botID: id, telegramUsername: try r.string("telegram_username") ?? "", metaPixelID: try r.string("meta_pixel_id") ?? "",
                hasConversionsAPIToken: try r.bool("has_token") ?? false, metaTestEventCode: try r.string("meta_test_event_code") ?? "",
                weight: max(1, try r.int("weight") ?? 1), priority: try r.int("priority") ?? 0))
        }
        return route
    }
}

/// The sender's token lookup: any enabled bot with this pixel and a token (bots may share a pixel).
/// The token is opened here; one that does not open is `MetaAccessTokenUnusable` (never sent).
public struct BotAccessTokens: MetaAccessTokenSource {
    let secrets: SecretKeyring?
    let logger: Logger

    public init(secrets: SecretKeyring?, logger: Logger) {
        self.secrets = secrets
        self.logger = logger
    }

    public func accessToken(pixelID: String, connection: PGConnection) throws -> String? {
        guard let row = try connection.query("""
            SELECT id, capi_token FROM bots WHERE meta_pixel_id = $1 AND capi_token IS NOT NULL
            ORDER BY enabled DESC, updated_at DESC LIMIT 1
            """, [.text(pixelID)]).first, let stored = try row.string("capi_token") else { return nil }
        let botID = try row.int64("id") ?? 0
        do {
            return try SecretOpening.open(stored, .capiToken, botID: botID, secrets: secrets)
        } catch {
            logger.error("secret_unusable", ("bot", String(botID)), ("column", "capi_token"), ("error", error.description))
            throw MetaAccessTokenUnusable("the Conversions API token of bot \(botID) cannot be used: \(error.description); nothing was sent")
        }
    }
}

/// Reading a secret column back: an envelope opens under the ring; anything else is refused
/// (values left in plaintext are sealed at startup, so a plaintext one here is never trusted).
public enum SecretOpening {
    public static func open(_ stored: String, _ column: SecretColumn, botID: Int64, secrets: SecretKeyring?) throws(SecretsError) -> String {
        guard let secrets else { throw .noKey }
        return try secrets.openString(stored, context: column.context(botID: botID))
    }
}

import MetaCAPI
import Postgres
import ProtoCodec
import Redis
import RPC
import Secrets

/// `pixtrack.v1.TrackingService` and the `/go` routes: the tracking half, wired to one
/// PostgreSQL pool and one Redis client.
public final class TrackingService: Sendable {
    public static let serviceName = "pixtrack.v1.TrackingService"

    public let configuration: TrackingConfiguration
    public let directory: BotDirectory
    public let store: TrackingStore
    public let recorder: PageViewRecorder
    public let binder: StartBinder
    public let resolver: TokenResolver
    let cache: SlugCache
    let metrics: Metrics
    let logger: Logger
    let pool: PGPool
    let onQueued: @Sendable () -> Void

    /// - Parameter onQueued: called after a Meta event was queued (wake the sender).
    public init(pool: PGPool, redis: RedisClient, configuration: TrackingConfiguration = TrackingConfiguration(),
                metrics: Metrics, logger: Logger, secrets: SecretKeyring?, onQueued: @escaping @Sendable () -> Void = {}) {
        self.configuration = configuration
        self.metrics = metrics
        self.logger = logger
        self.pool = pool
        self.onQueued = onQueued
        directory = BotDirectory(pool: pool, secrets: secrets)
        store = TrackingStore(redis: redis, ttlSeconds: configuration.ttlSeconds)
        cache = SlugCache(ttl: configuration.slugCacheTTL)
        recorder = PageViewRecorder(directory: directory, store: store, cache: cache, distributor: SlugDistributor(),
                                    configuration: configuration, metrics: metrics, logger: logger,
                                    outbox: MetaOutboxBatcher(pool: pool), onQueued: onQueued)
        binder = StartBinder(pool: pool, store: store, metrics: metrics, logger: logger)
        resolver = TokenResolver(pool: pool, store: store, metrics: metrics, logger: logger)
    }

    /// Every method of the service, for the server's router.
    public var methods: [RPCMethod] {
        let table: [(String, String, @Sendable (ProtoMessage) async throws -> ProtoMessage)] = [
            ("RecordPageView", "pixtrack.v1.RecordPageViewRequest", { [self] in try await recordPageView($0) }),
            ("MergeBrowserCookies", "pixtrack.v1.MergeBrowserCookiesRequest", { [self] in try await mergeBrowserCookies($0) }),
            ("BindStart", "pixtrack.v1.BindStartRequest", { [self] in try await bindStart($0) }),
            ("ResolveToken", "pixtrack.v1.ResolveTokenRequest", { [self] in try await resolveToken($0) }),
            ("GetTrackingData", "pixtrack.v1.GetTrackingDataRequest", { [self] in try await getTrackingData($0) }),
            ("UpsertBot", "pixtrack.v1.UpsertBotRequest", { [self] in try await upsertBot($0) }),
            ("GetBot", "pixtrack.v1.GetBotRequest", { [self] in try await getBot($0) }),
            ("ListBots", "pixtrack.v1.ListBotsRequest", { [self] in try await listBots($0) }),
            ("UpsertSlug", "pixtrack.v1.UpsertSlugRequest", { [self] in try await upsertSlug($0) }),
            ("GetSlug", "pixtrack.v1.GetSlugRequest", { [self] in try await getSlug($0) }),
            ("RequeueMetaEvents", "pixtrack.v1.RequeueMetaEventsRequest", { [self] in try await requeueMetaEvents($0) }),
        ]
        return table.map { name, input, body in
            RPCMethod(service: Self.serviceName, method: name, kind: .unary { bytes, _ in
                let request: ProtoMessage
                do {
                    request = try ProtoCodec.decode(bytes, as: input)
                } catch {
                    throw RPCError(.invalidArgument, "request is not a valid \(input)")
                }
                let response = try await body(request)
                do {
                    return try ProtoCodec.encode(response)
                } catch {
                    throw RPCError(.internal, "internal error", cause: error)
                }
            })
        }
    }

    // MARK: - Tracking methods

    func recordPageView(_ r: ProtoMessage) async throws -> ProtoMessage {
        var input = PageViewInput()
        input.slug = r.string("slug"); input.clientIP = r.string("client_ip"); input.userAgent = r.string("user_agent")
        input.eventSourceURL = r.string("event_source_url"); input.fbclid = r.string("fbclid")
        input.utmSource = r.string("utm_source"); input.utmMedium = r.string("utm_medium")
        input.utmCampaign = r.string("utm_campaign"); input.utmContent = r.string("utm_content")
        input.utmTerm = r.string("utm_term"); input.grim = r.string("grim")
        input.fbpCookie = r.string("fbp_cookie"); input.fbcCookie = r.string("fbc_cookie")
        return TrackingProto.recordResponse(try await recorder.record(input))
    }

    func mergeBrowserCookies(_ r: ProtoMessage) async throws -> ProtoMessage {
        let token = try Self.token(r.string("token"))
        let merged: TrackingData?
        do {
            merged = try await store.mergeBrowserCookies(token: token, fbp: r.string("fbp"), fbc: r.string("fbc"))
        } catch let e as RedisError {
            throw e.rpcError
        }
        guard let merged else { throw RPCError(.notFound, "no tracking data for this token (unknown or expired)") }
        return TrackingProto.trackingData(merged)
    }

    func bindStart(_ r: ProtoMessage) async throws -> ProtoMessage {
        var input = StartInput(botID: r.int64("bot_id"), telegramUserID: r.int64("telegram_user_id"), startParam: r.string("start_param"))
        input.chatID = r.int64("chat_id"); input.chatType = r.string("chat_type")
        input.telegramUsername = r.string("telegram_username"); input.firstName = r.string("first_name")
        input.lastName = r.string("last_name"); input.languageCode = r.string("language_code")
        let result = try await binder.bind(input)
        return ProtoMessage("pixtrack.v1.BindStartResponse", TrackingProto.nonEmpty([
            "outcome": .enumValue(result.outcome.rawValue), "token": .string(result.token),
            "pixel_id": .string(result.pixelID), "previous_token": .string(result.previousToken),
        ]))
    }

    func resolveToken(_ r: ProtoMessage) async throws -> ProtoMessage {
        let resolved = try await resolver.resolve(botID: r.int64("bot_id"), telegramUserID: r.int64("telegram_user_id"))
        var m = ProtoMessage("pixtrack.v1.ResolveTokenResponse", ["source": .enumValue(resolved.source.rawValue)])
        if !resolved.token.isEmpty { m["token"] = .string(resolved.token) }
        if let data = resolved.data { m["tracking"] = .message(TrackingProto.trackingData(data)) }
        return m
    }

    func getTrackingData(_ r: ProtoMessage) async throws -> ProtoMessage {
        let token = try Self.token(r.string("token"))
        let data: TrackingData?
        do {
            data = try await store.data(for: token)
        } catch let e as RedisError {
            throw e.rpcError
        }
        guard let data else { throw RPCError(.notFound, "no tracking data for this token (unknown or expired)") }
        return TrackingProto.trackingData(data)
    }

    static func token(_ s: String) throws -> String {
        guard TrackingToken.isValid(s) else { throw RPCError(.invalidArgument, "token must be 32 lowercase hex digits") }
        return s
    }
}

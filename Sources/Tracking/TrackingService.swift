import MessageRPC
import MetaCAPI
import PixTrackMessages
import Postgres
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
    /// `pixtrack_go_requests_total` by result.
    let goResults: CounterFamily
    let logger: Logger
    let pool: PGPool
    let onQueued: @Sendable () -> Void

    /// - Parameters:
    ///   - outboxPipeline: the connection the click PageViews' group-committed INSERTs go out on
    ///     (`pixtrackd` hosts it on an event loop); nil: a pooled connection.
    ///   - onQueued: called after a Meta event was queued (wake the sender).
    public init(pool: PGPool, redis: RedisClient, outboxPipeline: PGPipelineLoop? = nil, configuration: TrackingConfiguration = TrackingConfiguration(),
                metrics: Metrics, logger: Logger, secrets: SecretKeyring?, onQueued: @escaping @Sendable () -> Void = {}) {
        self.configuration = configuration
        self.metrics = metrics
        goResults = CounterFamily(metrics, "pixtrack_go_requests_total", help: "GET /go/{slug} answers by result.", label: "result",
                                  values: ["redirect", "page", "crawler", "degraded", "not_found", "no_bot", "unavailable"])
        self.logger = logger
        self.pool = pool
        self.onQueued = onQueued
        directory = BotDirectory(pool: pool, secrets: secrets)
        store = TrackingStore(redis: redis, ttlSeconds: configuration.ttlSeconds)
        cache = SlugCache(ttl: configuration.slugCacheTTL)
        let outbox = MetaOutboxBatcher(pool: pool, pipeline: outboxPipeline)
        recorder = PageViewRecorder(directory: directory, store: store, cache: cache, distributor: SlugDistributor(),
                                    configuration: configuration, metrics: metrics, logger: logger,
                                    outbox: outbox, onQueued: onQueued,
                                    results: CounterFamily(metrics, PageViewRecorder.resultsName, help: PageViewRecorder.resultsHelp,
                                                           label: "result", values: ["recorded", "crawler", "degraded"]))
        // Group commit at work: events per INSERT is events ÷ batches.
        metrics.gauge("pixtrack_pageview_outbox_batches_total", help: "Multi-row INSERTs that queued click PageViews (committed or failed).") {
            [([], Double(outbox.statistics.batches))]
        }
        metrics.gauge("pixtrack_pageview_outbox_events_total", help: "Click PageViews those INSERTs carried.") {
            [([], Double(outbox.statistics.events))]
        }
        metrics.gauge("pixtrack_pageview_outbox_conflict_retries_total",
                      help: "Batches written again keeping a PageView already queued (a repeated event id).") {
            [([], Double(outbox.statistics.conflictRetries))]
        }
        binder = StartBinder(pool: pool, store: store, metrics: metrics, logger: logger)
        resolver = TokenResolver(pool: pool, store: store, metrics: metrics, logger: logger)
    }

    /// Every method of the service, for the server's router.
    public var methods: [RPCMethod] {
        [
            // The click path never blocks (Redis and the outbox are awaited): on the event loop.
            Self.unary("RecordPageView", onEventLoop: true) { [self] in try await recordPageView($0) },
            Self.unary("MergeBrowserCookies") { [self] in try await mergeBrowserCookies($0) },
            Self.unary("BindStart") { [self] in try await bindStart($0) },
            Self.unary("ResolveToken") { [self] in try await resolveToken($0) },
            Self.unary("GetTrackingData") { [self] in try await getTrackingData($0) },
            Self.unary("UpsertBot") { [self] in try await upsertBot($0) },
            Self.unary("GetBot") { [self] in try await getBot($0) },
            Self.unary("ListBots") { [self] in try await listBots($0) },
            Self.unary("UpsertSlug") { [self] in try await upsertSlug($0) },
            Self.unary("GetSlug") { [self] in try await getSlug($0) },
            Self.unary("RequeueMetaEvents") { [self] in try await requeueMetaEvents($0) },
        ]
    }

    static func unary<Request: GeneratedMessage, Response: GeneratedMessage>(
        _ name: String, onEventLoop: Bool = false, _ body: @escaping @Sendable (Request) async throws -> Response
    ) -> RPCMethod {
        RPCMethod.unary(service: serviceName, method: name, onEventLoop: onEventLoop, body)
    }

    // MARK: - Tracking methods

    func recordPageView(_ r: Pixtrack_V1_RecordPageViewRequest) async throws -> Pixtrack_V1_RecordPageViewResponse {
        var input = PageViewInput()
        input.slug = r.slug; input.clientIP = r.clientIp; input.userAgent = r.userAgent
        input.eventSourceURL = r.eventSourceUrl; input.fbclid = r.fbclid
        input.utmSource = r.utmSource; input.utmMedium = r.utmMedium
        input.utmCampaign = r.utmCampaign; input.utmContent = r.utmContent
        input.utmTerm = r.utmTerm; input.grim = r.grim
        input.fbpCookie = r.fbpCookie; input.fbcCookie = r.fbcCookie
        return TrackingProto.recordResponse(try await recorder.record(input))
    }

    func mergeBrowserCookies(_ r: Pixtrack_V1_MergeBrowserCookiesRequest) async throws -> Pixtrack_V1_TrackingData {
        let token = try Self.token(r.token)
        let merged: TrackingData?
        do {
            merged = try await store.mergeBrowserCookies(token: token, fbp: r.fbp, fbc: r.fbc)
        } catch let e as RedisError {
            throw e.rpcError
        }
        guard let merged else { throw RPCError(.notFound, "no tracking data for this token (unknown or expired)") }
        return TrackingProto.trackingData(merged)
    }

    func bindStart(_ r: Pixtrack_V1_BindStartRequest) async throws -> Pixtrack_V1_BindStartResponse {
        var input = StartInput(botID: r.botId, telegramUserID: r.telegramUserId, startParam: r.startParam)
        input.chatID = r.chatId; input.chatType = r.chatType
        input.telegramUsername = r.telegramUsername; input.firstName = r.firstName
        input.lastName = r.lastName; input.languageCode = r.languageCode
        let result = try await binder.bind(input)
        var m = Pixtrack_V1_BindStartResponse()
        m.outcome = Pixtrack_V1_BindOutcome(rawValue: result.outcome.rawValue); m.token = result.token
        m.pixelId = result.pixelID; m.previousToken = result.previousToken
        return m
    }

    func resolveToken(_ r: Pixtrack_V1_ResolveTokenRequest) async throws -> Pixtrack_V1_ResolveTokenResponse {
        let resolved = try await resolver.resolve(botID: r.botId, telegramUserID: r.telegramUserId)
        var m = Pixtrack_V1_ResolveTokenResponse()
        m.source = Pixtrack_V1_TokenSource(rawValue: resolved.source.rawValue)
        m.token = resolved.token
        m.tracking = resolved.data.map(TrackingProto.trackingData)
        return m
    }

    func getTrackingData(_ r: Pixtrack_V1_GetTrackingDataRequest) async throws -> Pixtrack_V1_TrackingData {
        let token = try Self.token(r.token)
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

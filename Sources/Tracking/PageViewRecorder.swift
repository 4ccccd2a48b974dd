import MetaCAPI
import Postgres
import RPC
import Redis

/// One ad click as the web side saw it (already decoded; validated by `record`).
public struct PageViewInput: Sendable {
    public var slug = ""
    public var clientIP = ""
    public var userAgent = ""
    public var eventSourceURL = ""
    public var fbclid = ""
    public var utmSource = "", utmMedium = "", utmCampaign = "", utmContent = "", utmTerm = ""
    public var grim = ""
    /// The visitor's `_fbp` / `_fbc` (cookie, or the `_fbp_cookie` / `_fbc_cookie` parameter).
    public var fbpCookie = ""
    public var fbcCookie = ""

    public init() {}
}

/// What a click produced.
public struct PageViewResult: Sendable {
    public var route: SlugRoute
    public var bot: RouteBot
    /// Nil for crawlers, and on the degraded path (outbox unavailable, `/go` only).
    public var data: TrackingData?
    /// `https://t.me/{bot}?start={token}`, or without `start` when there is no token.
    public var redirectURL: String
    /// The fbp we generated (send it in `Set-Cookie`), empty when the visitor had one.
    public var setFbpCookie = ""
    public var crawler = false
    /// False when Redis did not store `tracking:{token}` (logged and counted).
    public var trackingStored = false
    /// True when the PostgreSQL outbox could not take the PageView and the click went on
    /// without a token (`/go` only).
    public var degraded = false
}

/// RecordPageView: the only place a tracking token is born (DESIGN §1).
///
/// Resolves the slug, picks a bot, mints the token and `pageview_event_id`, settles fbp/fbc,
/// then — concurrently — stores `tracking:{token}` (+ the fbclid index) in Redis with one
/// pipelined round trip and queues the Meta PageView in the PostgreSQL outbox (group-committed
/// with concurrent clicks by `MetaOutboxBatcher`). The PageView is durable before the caller gets
/// an answer; a Redis failure is logged and counted, never fatal.
public struct PageViewRecorder: Sendable {
    let directory: BotDirectory
    let store: TrackingStore
    let cache: SlugCache
    let distributor: SlugDistributor
    let configuration: TrackingConfiguration
    let metrics: Metrics
    let logger: Logger
    /// Group commit for the PageView inserts (one commit for many concurrent clicks).
    let outbox: MetaOutboxBatcher
    let onQueued: @Sendable () -> Void
    /// `pixtrack_tracking_pageviews_total` by result (handles made once, not looked up per click).
    let results: CounterFamily

    static let resultsName = "pixtrack_tracking_pageviews_total"
    static let resultsHelp = "Clicks handled by RecordPageView and /go, by result."

    /// - Parameter degradeOnQueueFailure: `/go` passes true: when the outbox is unavailable
    ///   the visitor still reaches the bot (without a token). RPC callers get UNAVAILABLE.
    public func record(_ raw: PageViewInput, degradeOnQueueFailure: Bool = false) async throws -> PageViewResult {
        let input = try Self.validated(raw, configuration)
        let route: SlugRoute?
        do {
            route = try await cache.route(input.slug) { try await directory.route(input.slug) }
        } catch let e as PGError {
            throw e.rpcError
        }
        guard let route else { throw RPCError(.notFound, "unknown slug '\(input.slug)'") }
        guard let bot = distributor.pick(route) else {
            throw RPCError(.failedPrecondition, "slug '\(input.slug)' has no enabled bot")
        }
        if CrawlerDetector.isCrawler(userAgent: input.userAgent) {
            count("crawler")
            return PageViewResult(route: route, bot: bot, redirectURL: botURL(bot), crawler: true)
        }

        let now = Clock.nowMs()
        var data = TrackingData()
        data.token = TrackingToken.generate()
        data.pageviewEventID = TrackingToken.newPageViewEventID()
        data.pageviewTsMs = now
        var setFbp = ""
        if FacebookCookies.isValidFbp(input.fbpCookie) {
            data.fbp = input.fbpCookie
        } else {
            data.fbp = FacebookCookies.newFbp(nowMs: now)
            setFbp = data.fbp
        }
        if FacebookCookies.isValidFbc(input.fbcCookie) {
            data.fbc = input.fbcCookie
            data.fbcOrigin = .cookie
        } else if configuration.buildFbcFromFbclid, !input.fbclid.isEmpty {
            data.fbc = FacebookCookies.fbc(fromFbclid: input.fbclid, nowMs: now)
            data.fbcOrigin = .builtFromFbclid
        }
        data.fbclid = input.fbclid
        data.utmSource = input.utmSource; data.utmMedium = input.utmMedium; data.utmCampaign = input.utmCampaign
        data.utmContent = input.utmContent; data.utmTerm = input.utmTerm
        data.grim = input.grim
        data.clientIP = input.clientIP
        data.userAgent = input.userAgent
        data.eventSourceURL = input.eventSourceURL
        data.slug = route.slug
        data.botID = bot.botID
        data.metaPixelID = bot.metaPixelID

        let snapshot = data
        // Redis and the outbox at once, in this one task: the Redis write is sent first and its
        // replies, usually back before the outbox's commit, are read after it.
        let stored = store.startStorePageView(snapshot)
        let queueError = await queuePageView(snapshot, bot: bot)
        let wasStored = await storeTracking(stored, token: snapshot.token)
        if let queueError {
            guard degradeOnQueueFailure else { throw queueError }
            count("degraded")
            logger.error("pageview_queue_failed", ("slug", route.slug), ("bot_id", String(bot.botID)),
                         ("error", String(describing: queueError.cause.map { String(describing: $0) } ?? queueError.message)))
            return PageViewResult(route: route, bot: bot, data: nil, redirectURL: botURL(bot), degraded: true)
        }
        count("recorded")
        return PageViewResult(route: route, bot: bot, data: data, redirectURL: botURL(bot, start: data.token),
                              setFbpCookie: setFbp, trackingStored: wasStored)
    }

    /// `https://t.me/{bot}`, with `?start={token}` when there is one: built in one string.
    private func botURL(_ bot: RouteBot, start token: String = "") -> String {
        let base = configuration.telegramBaseURL
        var url = ""
        url.reserveCapacity(base.utf8.count + 1 + bot.telegramUsername.utf8.count + (token.isEmpty ? 0 : 7 + token.utf8.count))
        url += base
        url += "/"
        url += bot.telegramUsername
        if !token.isEmpty {
            url += "?start="
            url += token
        }
        return url
    }

    private func storeTracking(_ pending: RedisPendingSet, token: String) async -> Bool {
        do {
            try await pending.done()
            return true
        } catch {
            metrics.increment("pixtrack_tracking_redis_failures_total", help: "Redis operations of the tracking half that failed (the request went on).",
                              labels: [("operation", "record_pageview")])
            logger.warning("pageview_redis_failed", ("token_prefix", String(token.prefix(8))), ("error", String(describing: error)))
            return false
        }
    }

    /// Queues the server PageView when the bot has a pixel and a Conversions API token.
    private func queuePageView(_ d: TrackingData, bot: RouteBot) async -> RPCError? {
        guard !bot.metaPixelID.isEmpty, bot.hasConversionsAPIToken else { return nil }
        let event = MetaEvent.pageView(pixelID: bot.metaPixelID, eventID: d.pageviewEventID, eventTime: d.pageviewTsMs / 1000,
                                       eventSourceURL: d.eventSourceURL, clientIP: d.clientIP, userAgent: d.userAgent,
                                       fbp: d.fbp, fbc: d.fbc, fbclid: d.fbclid, testEventCode: bot.metaTestEventCode)
        do {
            try await outbox.enqueue(event)
            onQueued()
            return nil
        } catch let e as PGError {
            return e.rpcError
        } catch {
            return RPCError(mapping: error)
        }
    }

    private func count(_ result: String) {
        results.increment(result)
    }

    /// Normalizes a click: bad slug or fbclid → INVALID_ARGUMENT (the `/go` route drops a bad
    /// fbclid before calling); free text loses control characters and is bounded.
    static func validated(_ raw: PageViewInput, _ configuration: TrackingConfiguration) throws -> PageViewInput {
        var p = raw
        p.slug = raw.slug.lowercased()
        guard Slug.isValidName(p.slug) else { throw RPCError(.invalidArgument, "slug must be 1-64 letters, digits, '-' or '_'") }
        guard raw.fbclid.isEmpty || FacebookCookies.isValidFbclid(raw.fbclid) else {
            throw RPCError(.invalidArgument, "fbclid must be 1-\(FacebookCookies.maxFbclidLength) printable ASCII characters (it is never cut)")
        }
        p.userAgent = raw.userAgent.withoutControlCharacters().truncatedUTF8(configuration.maxUserAgentBytes)
        p.clientIP = IPAddress.parse(IPAddress.normalize(raw.clientIP)) != nil ? IPAddress.normalize(raw.clientIP) : ""
        p.eventSourceURL = raw.eventSourceURL.withoutControlCharacters().truncatedUTF8(2048)
        if p.eventSourceURL.isEmpty, !configuration.publicBaseURL.isEmpty {
            p.eventSourceURL = configuration.publicBaseURL + "/go/" + p.slug  // Meta requires one for website events
        }
        func text(_ s: String) -> String { s.withoutControlCharacters().truncatedUTF8(500) }
        p.utmSource = text(raw.utmSource); p.utmMedium = text(raw.utmMedium); p.utmCampaign = text(raw.utmCampaign)
        p.utmContent = text(raw.utmContent); p.utmTerm = text(raw.utmTerm); p.grim = text(raw.grim)
        p.fbpCookie = raw.fbpCookie.trimmingSpaces()
        p.fbcCookie = raw.fbcCookie.trimmingSpaces()
        return p
    }
}

extension String {
    func trimmingSpaces() -> String {
        guard utf8.first == UInt8(ascii: " ") || utf8.last == UInt8(ascii: " ") else { return self }  // the usual case: no copy
        return String(drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
    }
}

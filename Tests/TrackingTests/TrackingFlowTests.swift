import Foundation
import JSONKit
import Testing
@testable import Tracking
import MetaCAPI
import Postgres
import Redis
import RPC
import Secrets

struct MissingEnvironment: Error, CustomStringConvertible {
    let name: String
    var description: String {
        "\(name) is not set. Run through `make test`, or: scripts/services temp swift test --filter TrackingTests"
    }
}

/// A TrackingService on the real PostgreSQL and Redis, in a schema of its own.
struct Harness {
    let pool: PGPool
    let redis: RedisClient
    let service: TrackingService
    let metrics = Metrics()

    static func make(redisURL: String? = nil, configure: (inout TrackingConfiguration) -> Void = { _ in }) async throws -> Harness {
        let env = ProcessInfo.processInfo.environment
        guard let db = env["DATABASE_URL"], !db.isEmpty else { throw MissingEnvironment(name: "DATABASE_URL") }
        guard let rurl = redisURL ?? env["REDIS_URL"], !rurl.isEmpty else { throw MissingEnvironment(name: "REDIS_URL") }
        let schema = "tr_\(UInt64.random(in: 0...UInt64.max) & 0xFFFF_FFFF_FFFF)"
        let admin = try PGPool(PGPoolConfiguration(url: db), logger: Logger(minimum: .error))
        try await admin.withConnection { try $0.execute("CREATE SCHEMA \(schema)") }
        await admin.close()
        let pool = try PGPool(PGPoolConfiguration(url: db + (db.contains("?") ? "&" : "?") + "options=-csearch_path%3D\(schema)"),
                              logger: Logger(minimum: .error))
        _ = try await PGMigrator(pool: pool, migrations: TrackingMigrations.all, logger: Logger(minimum: .error)).migrate()
        var rc = try RedisConfiguration(url: rurl)
        rc.connectTimeout = .seconds(2)
        let redis = RedisClient(rc, logger: Logger(minimum: .error))
        var config = TrackingConfiguration()
        config.slugCacheTTL = .zero
        configure(&config)
        let metrics = Metrics()
        return Harness(pool: pool, redis: redis,
                       service: TrackingService(pool: pool, redis: redis, configuration: config, metrics: metrics, logger: Logger(minimum: .error),
                                                secrets: SecretKeyring(current: try SecretKey.generate())))
    }

    func bot(pixel: String = "", token: String? = nil) async throws -> Bot {
        let id = Int64.random(in: 1_000_000...9_000_000_000)
        var input = BotInput(id: id, telegramUsername: "bot\(id)")
        input.metaPixelID = pixel
        input.conversionsAPIToken = token
        return try await service.directory.upsertBot(input)
    }

    func slug(_ bots: [Bot], mode: SlugMode = .redirect) async throws -> String {
        let name = "s\(UInt32.random(in: 0...UInt32.max))"
        _ = try await service.directory.upsertSlug(Slug(slug: name, mode: mode, bots: bots.map { SlugBot(botID: $0.id) }))
        return name
    }

    func click(_ slug: String, fbclid: String = "") async throws -> PageViewResult {
        var input = PageViewInput()
        input.slug = slug
        input.userAgent = "Mozilla/5.0 Test"
        input.clientIP = "203.0.113.4"
        input.fbclid = fbclid
        input.eventSourceURL = "https://go.test/go/\(slug)"
        return try await service.recorder.record(input)
    }

    func close() async {
        await pool.close()
        await redis.close()
    }
}

@Suite struct TrackingFlowTests {
    @Test func clickStartResolveAndThePageViewIsQueuedBeforeTheAnswer() async throws {
        let h = try await Harness.make()
        let bot = try await h.bot(pixel: "777", token: "secret-token")
        let slug = try await h.slug([bot])
        let click = try await h.click(slug, fbclid: "IwAR_flow")
        let data = try #require(click.data)
        #expect(click.redirectURL == "https://t.me/\(bot.telegramUsername)?start=\(data.token)" && click.trackingStored)
        #expect(!click.setFbpCookie.isEmpty && click.setFbpCookie == data.fbp)
        let stored = try await h.service.store.data(for: data.token)
        #expect(stored == data)
        #expect(try await h.service.store.token(forFbclid: "IwAR_flow") == data.token)
        let queued = try await h.pool.withConnection { c in
            try c.query("SELECT payload::text AS p FROM meta_events WHERE event_id = $1", [.text(data.pageviewEventID)]).first?.string("p")
        }
        let payload = try JSON.parse(try #require(queued))
        #expect(payload["user_data"]?["fbp"]?.string == data.fbp && payload["user_data"]?["client_ip_address"] == "203.0.113.4")

        let user = Int64.random(in: 1...1_000_000_000)
        let bound = try await h.service.binder.bind(StartInput(botID: bot.id, telegramUserID: user, startParam: data.token))
        #expect(bound.outcome == .bound)
        let resolved = try await h.service.resolver.resolve(botID: bot.id, telegramUserID: user)
        #expect(resolved.source == .botUser && resolved.token == data.token && resolved.data?.fbclid == "IwAR_flow")
        // No bot, no token: ResolveToken never creates one.
        let none = try await h.service.resolver.resolve(botID: bot.id, telegramUserID: user + 1)
        #expect(none.source == .none && none.token.isEmpty)
        await h.close()
    }

    @Test func crawlersAndBotsWithoutPixelQueueNothing() async throws {
        let h = try await Harness.make()
        let bot = try await h.bot()
        let slug = try await h.slug([bot])
        var input = PageViewInput()
        input.slug = slug
        input.userAgent = "facebookexternalhit/1.1"
        let crawler = try await h.service.recorder.record(input)
        #expect(crawler.crawler && crawler.data == nil && crawler.redirectURL == "https://t.me/\(bot.telegramUsername)")
        _ = try await h.click(slug)
        let n = try await h.pool.withConnection { try $0.query("SELECT count(*) AS n FROM meta_events").first?.int("n") }
        #expect(n == 0)
        await h.close()
    }

    @Test func redisDownStillRecordsTheClickAndResolveFallsBackToPostgres() async throws {
        let up = try await Harness.make()
        let bot = try await up.bot()
        let slug = try await up.slug([bot])
        let token = try #require(try await up.click(slug).data?.token)
        let user = Int64.random(in: 1...1_000_000_000)
        _ = try await up.service.binder.bind(StartInput(botID: bot.id, telegramUserID: user, startParam: token))
        // Same database, Redis on a port nothing listens on.
        let down = TrackingService(pool: up.pool, redis: RedisClient(try RedisConfiguration(url: "redis://127.0.0.1:1/0"), logger: Logger(minimum: .error)),
                                   configuration: { var c = TrackingConfiguration(); c.slugCacheTTL = .zero; return c }(),
                                   metrics: up.metrics, logger: Logger(minimum: .error), secrets: nil)
        let resolved = try await down.resolver.resolve(botID: bot.id, telegramUserID: user)
        #expect(resolved.source == .botUser && resolved.token == token && resolved.data == nil)
        var input = PageViewInput()
        input.slug = slug
        input.userAgent = "Mozilla/5.0"
        let click = try await down.recorder.record(input)
        #expect(click.data != nil && !click.trackingStored && click.redirectURL.contains("?start="))
        await expectCode(.unavailable) { _ = try await down.service(\.getTrackingData, token) }
        await up.close()
    }

    @Test func unknownSlugAndSlugWithoutEnabledBots() async throws {
        let h = try await Harness.make()
        var disabled = BotInput(id: Int64.random(in: 1_000_000...9_000_000_000), telegramUsername: "off\(UInt32.random(in: 0...UInt32.max))")
        disabled.enabled = false
        let off = try await h.service.directory.upsertBot(disabled)
        let slug = try await h.slug([off])
        await expectCode(.failedPrecondition) { _ = try await h.click(slug) }
        await expectCode(.notFound) { _ = try await h.click("nope\(UInt32.random(in: 0...UInt32.max))") }
        await expectCode(.invalidArgument) { _ = try await h.click("bad slug!") }
        await h.close()
    }
}

extension TrackingService {
    /// Calls a store lookup the way the RPC does (Redis errors mapped to RPC statuses).
    func service(_ path: KeyPath<TrackingService, TrackingStore>, _ token: String) async throws -> TrackingData? {
        do { return try await self[keyPath: path].data(for: token) } catch let e as RedisError { throw e.rpcError }
    }

    var getTrackingData: TrackingStore { store }
}

func expectCode(_ code: RPCCode, _ body: () async throws -> Void) async {
    do {
        try await body()
        Issue.record("expected \(code)")
    } catch let e as RPCError {
        #expect(e.code == code, "\(e)")
    } catch {
        Issue.record("unexpected \(error)")
    }
}

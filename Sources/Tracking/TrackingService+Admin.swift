import MetaCAPI
import PixTrackMessages
import Postgres
import RPC

/// Bots and slugs (admin methods). Secrets are write-only: requests may carry them, responses
/// only say whether they are set, and nothing here logs a request.
extension TrackingService {
    func upsertBot(_ r: Pixtrack_V1_UpsertBotRequest) async throws -> Pixtrack_V1_Bot {
        var input = BotInput(id: r.id, telegramUsername: r.telegramUsername)
        input.metaPixelID = r.metaPixelId
        input.conversionsAPIToken = r.conversionsApiToken?.value
        input.metaTestEventCode = r.metaTestEventCode
        if let g = r.gateway {
            input.gatewayPlugin = g.plugin
            input.gatewayBaseURL = g.baseUrl
            input.gatewayCredentials = g.credentials?.values
        }
        input.enabled = r.enabled
        input.notifyURL = r.notifyUrl
        input.notifySecret = r.notifySecret?.value
        let bot = try await directory.upsertBot(input)
        cache.invalidate()
        return TrackingProto.bot(bot)
    }

    func getBot(_ r: Pixtrack_V1_GetBotRequest) async throws -> Pixtrack_V1_Bot {
        let bot: Bot?
        switch r.key {
        case .id(let id)?: bot = try await directory.bot(id: id)
        case .telegramUsername(let name)?: bot = try await directory.bot(username: name)
        case nil: throw RPCError(.invalidArgument, "set id or telegram_username")
        }
        guard let bot else { throw RPCError(.notFound, "no such bot") }
        return TrackingProto.bot(bot)
    }

    func listBots(_ r: Pixtrack_V1_ListBotsRequest) async throws -> Pixtrack_V1_ListBotsResponse {
        let token = r.pageToken
        var after: Int64 = 0
        if !token.isEmpty {
            guard token.hasPrefix("b"), let v = Int64(token.dropFirst()), v >= 0 else {
                throw RPCError(.invalidArgument, "page_token is not one this server issued")
            }
            after = v
        }
        let size = r.pageSize == 0 ? 100 : Int(r.pageSize)
        guard size > 0 else { throw RPCError(.invalidArgument, "page_size must be positive") }
        let (bots, next) = try await directory.listBots(includeDisabled: r.includeDisabled, pageSize: size, after: after)
        var m = Pixtrack_V1_ListBotsResponse()
        m.bots = bots.map(TrackingProto.bot)
        m.nextPageToken = next.map { "b\($0)" } ?? ""
        return m
    }

    func upsertSlug(_ r: Pixtrack_V1_UpsertSlugRequest) async throws -> Pixtrack_V1_Slug {
        guard let s = r.slug else { throw RPCError(.invalidArgument, "slug is required") }
        let mode: SlugMode
        switch s.mode {
        case .unspecified, .redirect: mode = .redirect
        case .page: mode = .page
        case .unrecognized: throw RPCError(.invalidArgument, "unknown slug mode")
        }
        let strategy: SlugStrategy
        switch s.strategy {
        case .unspecified, .roundRobin: strategy = .roundRobin
        case .weighted: strategy = .weighted
        case .priority: strategy = .priority
        case .unrecognized: throw RPCError(.invalidArgument, "unknown slug strategy")
        }
        let bots = s.bots.map { b in
            SlugBot(botID: b.botId, weight: Int(min(b.weight, 1_000_001)), priority: Int(b.priority), enabled: b.enabled)
        }
        let slug = Slug(slug: s.slug.lowercased(), mode: mode, strategy: strategy, bots: bots, enabled: s.enabled)
        let stored = try await directory.upsertSlug(slug)
        cache.invalidate()
        return TrackingProto.slug(stored)
    }

    func getSlug(_ r: Pixtrack_V1_GetSlugRequest) async throws -> Pixtrack_V1_Slug {
        let name = r.slug.lowercased()
        guard Slug.isValidName(name) else { throw RPCError(.invalidArgument, "slug must be 1-64 letters, digits, '-' or '_'") }
        guard let slug = try await directory.slug(name) else { throw RPCError(.notFound, "no such slug") }
        return TrackingProto.slug(slug)
    }

    func requeueMetaEvents(_ r: Pixtrack_V1_RequeueMetaEventsRequest) async throws -> Pixtrack_V1_RequeueMetaEventsResponse {
        let pixel = r.pixelId
        guard !pixel.isEmpty else { throw RPCError(.invalidArgument, "pixel_id is required") }
        let name = r.eventName
        let dryRun = r.dryRun
        let ids = r.eventIds
        guard ids.count <= 1000, ids.allSatisfy({ !$0.isEmpty && $0.utf8.count <= 200 }) else {
            throw RPCError(.invalidArgument, "event_ids: at most 1000 ids, each 1 to 200 bytes")
        }
        let result: MetaOutbox.Requeued
        do {
            result = try await MetaOutbox.requeueParked(pixelID: pixel, eventName: name, eventIDs: ids, dryRun: dryRun, pool: pool)
        } catch let e as PGError {
            throw e.rpcError
        }
        if !dryRun && result.requeued > 0 {
            logger.info("meta_events_requeued", ("pixel_id", pixel), ("event_name", name.isEmpty ? "*" : name),
                        ("events", String(result.requeued)), ("too_old", String(result.tooOld)))
            onQueued()
        }
        var m = Pixtrack_V1_RequeueMetaEventsResponse()
        m.requeued = Int64(result.requeued); m.tooOld = Int64(result.tooOld)
        return m
    }
}

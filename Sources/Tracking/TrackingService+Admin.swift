import MetaCAPI
import Postgres
import ProtoCodec
import RPC

/// Bots and slugs (admin methods). Secrets are write-only: requests may carry them, responses
/// only say whether they are set, and nothing here logs a request.
extension TrackingService {
    func upsertBot(_ r: ProtoMessage) async throws -> ProtoMessage {
        var input = BotInput(id: r.int64("id"), telegramUsername: r.string("telegram_username"))
        input.metaPixelID = r.string("meta_pixel_id")
        input.conversionsAPIToken = r.message("conversions_api_token")?.string("value")
        input.metaTestEventCode = r.string("meta_test_event_code")
        if let g = r.message("gateway") {
            input.gatewayPlugin = g.string("plugin")
            input.gatewayBaseURL = g.string("base_url")
            input.gatewayCredentials = g.message("credentials")?.stringMap("values")
        }
        input.enabled = r.bool("enabled")
        input.notifyURL = r.string("notify_url")
        input.notifySecret = r.message("notify_secret")?.string("value")
        let bot = try await directory.upsertBot(input)
        cache.invalidate()
        return TrackingProto.bot(bot)
    }

    func getBot(_ r: ProtoMessage) async throws -> ProtoMessage {
        let bot: Bot?
        if case .int64(let id)? = r["id"] {
            bot = try await directory.bot(id: id)
        } else if case .string(let name)? = r["telegram_username"] {
            bot = try await directory.bot(username: name)
        } else {
            throw RPCError(.invalidArgument, "set id or telegram_username")
        }
        guard let bot else { throw RPCError(.notFound, "no such bot") }
        return TrackingProto.bot(bot)
    }

    func listBots(_ r: ProtoMessage) async throws -> ProtoMessage {
        let token = r.string("page_token")
        var after: Int64 = 0
        if !token.isEmpty {
            guard token.hasPrefix("b"), let v = Int64(token.dropFirst()), v >= 0 else {
                throw RPCError(.invalidArgument, "page_token is not one this server issued")
            }
            after = v
        }
        let size = r.int32("page_size") == 0 ? 100 : Int(r.int32("page_size"))
        guard size > 0 else { throw RPCError(.invalidArgument, "page_size must be positive") }
        let (bots, next) = try await directory.listBots(includeDisabled: r.bool("include_disabled"), pageSize: size, after: after)
        return ProtoMessage("pixtrack.v1.ListBotsResponse", TrackingProto.nonEmpty([
            "bots": .list(bots.map { .message(TrackingProto.bot($0)) }),
            "next_page_token": .string(next.map { "b\($0)" } ?? ""),
        ]))
    }

    func upsertSlug(_ r: ProtoMessage) async throws -> ProtoMessage {
        guard let s = r.message("slug") else { throw RPCError(.invalidArgument, "slug is required") }
        let mode: SlugMode
        switch s.enumValue("mode") {
        case 0, 1: mode = .redirect
        case 2: mode = .page
        default: throw RPCError(.invalidArgument, "unknown slug mode")
        }
        let strategy: SlugStrategy
        switch s.enumValue("strategy") {
        case 0, 1: strategy = .roundRobin
        case 2: strategy = .weighted
        case 3: strategy = .priority
        default: throw RPCError(.invalidArgument, "unknown slug strategy")
        }
        var bots: [SlugBot] = []
        for case .message(let b) in s.list("bots") {
            bots.append(SlugBot(botID: b.int64("bot_id"), weight: Int(min(b.uint32("weight"), 1_000_001)),
                                priority: Int(b.int32("priority")), enabled: b.bool("enabled")))
        }
        let slug = Slug(slug: s.string("slug").lowercased(), mode: mode, strategy: strategy, bots: bots, enabled: s.bool("enabled"))
        let stored = try await directory.upsertSlug(slug)
        cache.invalidate()
        return TrackingProto.slug(stored)
    }

    func getSlug(_ r: ProtoMessage) async throws -> ProtoMessage {
        let name = r.string("slug").lowercased()
        guard Slug.isValidName(name) else { throw RPCError(.invalidArgument, "slug must be 1-64 letters, digits, '-' or '_'") }
        guard let slug = try await directory.slug(name) else { throw RPCError(.notFound, "no such slug") }
        return TrackingProto.slug(slug)
    }

    func requeueMetaEvents(_ r: ProtoMessage) async throws -> ProtoMessage {
        let pixel = r.string("pixel_id")
        guard !pixel.isEmpty else { throw RPCError(.invalidArgument, "pixel_id is required") }
        let name = r.string("event_name")
        let dryRun = r.bool("dry_run")
        let ids = r.list("event_ids").compactMap { if case .string(let s) = $0 { s } else { nil } }
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
        return ProtoMessage("pixtrack.v1.RequeueMetaEventsResponse", TrackingProto.nonEmpty([
            "requeued": .int64(Int64(result.requeued)), "too_old": .int64(Int64(result.tooOld)),
        ]))
    }
}
